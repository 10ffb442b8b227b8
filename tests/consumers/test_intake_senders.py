"""The intake's senders file: tokens kept as digests only, 0600, changes seen without a restart."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumers.intake.replay import PENDING_S, Accepted
from consumers.intake.senders import Senders, token_digest
from ledger.errors import BadInput
from ledger.workspace import Workspace
from tests.producers.ddrf_kit import Party


def test_tokens_are_kept_as_digests_and_changes_are_seen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = Workspace(tmp_path)
    reader, writer = Senders(ws), Senders(ws)
    token = writer.add("platform")
    assert token.startswith("ers_") and reader.by_token(token).name == "platform"  # type: ignore[union-attr]
    text = writer.path.read_text()
    assert token not in text and token_digest(token) in text and writer.path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(BadInput, match="--replace"):
        writer.add("platform")
    new = writer.add("platform", replace=True)
    assert reader.by_token(token) is None and reader.by_token(new).name == "platform"  # type: ignore[union-attr]
    assert reader.by_token("") is None and reader.by_token("ers_guess") is None
    writer.remove("platform")
    assert reader.by_token(new) is None and reader.all() == {}
    with pytest.raises(BadInput, match="no sender"):
        writer.remove("platform")
    with pytest.raises(BadInput, match="must match"):
        writer.add("../etc")


def test_a_ddrf_issuer_belongs_to_one_sender(tmp_path) -> None:  # type: ignore[no-untyped-def]
    senders = Senders(Workspace(tmp_path))
    publisher = Party("publisher.example")
    senders.add("publisher.example", [publisher.jwk])
    assert senders.keys_of("publisher.example") == [publisher.jwk] and senders.keys_of("other.example") is None
    with pytest.raises(BadInput, match="belongs to sender 'publisher.example'"):
        senders.add("pub2", [publisher.jwk], ddrf_issuer="publisher.example")
    senders.add("plain")
    assert senders.all()["plain"].ddrf_issuer is None


def test_a_request_id_is_taken_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    accepted = Accepted(Workspace(tmp_path))
    assert accepted.claim("r1", "a") is None
    assert "taken" in (accepted.claim("r1", "a") or "")  # in flight
    accepted.release("r1")
    assert accepted.claim("r1", "a") is None and not accepted.holds("r2")
    accepted.confirm("r1")
    assert "accepted at" in (accepted.claim("r1", "b") or "")
    assert accepted.claim("r3", "a") is None  # left pending by a crash: taken over once PENDING_S passed
    import consumers.intake.replay as replay

    monkeypatch.setattr(replay, "time", SimpleNamespace(time=lambda: 1e12 + PENDING_S))
    assert accepted.claim("r3", "a") is None and "accepted at" in (accepted.claim("r1", "a") or "")
