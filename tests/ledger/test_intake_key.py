"""The intake's ES256 acknowledgement key: made once, 0600, checked when loaded."""

from __future__ import annotations

import pytest

from ledger.errors import BadInput
from ledger.intake_key import init_intake_key, key_id, load_private, load_public, private_path, public_path


def test_made_once_owner_only_and_matching(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE", raising=False)
    with pytest.raises(BadInput, match="erasure keys intake"):
        load_private(tmp_path)
    assert init_intake_key(tmp_path) and not init_intake_key(tmp_path)
    assert private_path(tmp_path).stat().st_mode & 0o777 == 0o600
    key = load_private(tmp_path)
    assert key_id(key.public_key()) == key_id(load_public(tmp_path)) and len(key_id(load_public(tmp_path))) == 16
    private_path(tmp_path).chmod(0o644)
    with pytest.raises(BadInput, match="chmod 600"):
        load_private(tmp_path)
    private_path(tmp_path).chmod(0o600)
    other = tmp_path / "other"
    init_intake_key(other)
    public_path(tmp_path).write_bytes(public_path(other).read_bytes())
    with pytest.raises(BadInput, match="does not match"):
        load_private(tmp_path)


def test_encrypted_under_the_passphrase(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ERASURE_KEY_PASSPHRASE", "correct horse")
    init_intake_key(tmp_path)
    assert b"ENCRYPTED" in private_path(tmp_path).read_bytes()
    load_private(tmp_path)
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE")
    with pytest.raises(BadInput, match="is encrypted"):
        load_private(tmp_path)
