"""The witness (C2SP tlog-witness) and cosignatures (C2SP tlog-cosignature/v1): known answers,
the add-checkpoint checks and their HTTP statuses, atomic state, and a split view caught."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import BadInput, VerificationFailed
from ledger.log import Ledger
from ledger.merkle import EMPTY_ROOT
from ledger.note import (
    Checkpoint,
    CosignatureSigner,
    Signer,
    add_signatures,
    cosigned_message,
    open_note,
    parse_cosigner_vkey,
    parse_note,
    sign_checkpoint,
    verified_cosignatures,
)
from ledger.witness.client import WitnessClient, WitnessConflict
from ledger.witness.protocol import format_add_checkpoint, parse_add_checkpoint
from ledger.witness.service import Refused, Witness
from tests.ledger.witness_kit import NOW, new_witness, serving

# A native cosignature/v1 vkey published in transparency-dev/formats (note/note_cosigv1_test.go)
# and a cosignature whose timestamp it decodes to 1727964367.
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
TIMESTAMPED = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="


def test_cosigner_vkey_known_answer() -> None:
    verifier = parse_cosigner_vkey(REMORA_VKEY)
    assert (verifier.name, verifier.key_id.hex(), verifier.vkey) == ("remora.n621.de", "da77ade7", REMORA_VKEY)
    raw = base64.b64decode(TIMESTAMPED)
    assert len(raw) == 4 + 8 + 64 and int.from_bytes(raw[4:12], "big") == 1727964367
    with pytest.raises(BadInput, match="not an Ed25519 cosigner key"):
        parse_cosigner_vkey("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_cosignature_signs_the_spec_message(signer: Signer, origin: str) -> None:
    cosigner = CosignatureSigner("witness.example/w1", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint(origin, 5, bytes(32)), signer)
    text = parse_note(note).text
    sig = cosigner.cosign(text, NOW)
    assert sig.signature[:8] == NOW.to_bytes(8, "big") and len(sig.key_id + sig.signature) == 76
    cosigner.private_key.public_key().verify(sig.signature[8:], f"cosignature/v1\ntime {NOW}\n{text}".encode())
    assert cosigned_message(text, NOW) == f"cosignature/v1\ntime {NOW}\n{text}".encode()
    cosigned = add_signatures(note, [sig])
    # the log's key still opens it (the cosignature is an unknown key to it), and the witness's too
    assert open_note(cosigned, [signer.verifier]).verified_by == (origin,)
    [found] = verified_cosignatures(cosigned, [cosigner.verifier])
    assert (found.witness, found.timestamp) == (cosigner.verifier.vkey, NOW)
    assert verified_cosignatures(note, [cosigner.verifier]) == []
    assert add_signatures(cosigned, [sig]) == cosigned  # one line per key
    # a cosignature moved to another checkpoint, or its timestamp changed, is invalid
    other = sign_checkpoint(Checkpoint(origin, 6, bytes(32)), signer)
    with pytest.raises(VerificationFailed, match="invalid cosignature by witness"):
        verified_cosignatures(add_signatures(other, [sig]), [cosigner.verifier])
    forged = type(sig)(sig.name, sig.key_id, (NOW + 1).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(VerificationFailed, match="invalid cosignature"):
        verified_cosignatures(add_signatures(note, [forged]), [cosigner.verifier])


def test_request_format_round_trip_and_malformed() -> None:
    note = "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 o AAAAAAA=\n"
    body = format_add_checkpoint(3, [bytes(32), bytes([1]) * 32], note)
    assert body.startswith(b"old 3\n" + base64.b64encode(bytes(32)) + b"\n")
    parsed = parse_add_checkpoint(body)
    assert (parsed.old_size, parsed.proof, parsed.note) == (3, (bytes(32), bytes([1]) * 32), note)
    for bad, reason in [(b"old 03\n\n" + note.encode(), "old <size>"),
                        (b"new 3\n\n" + note.encode(), "old <size>"),
                        (b"old 3\nAAAA\n\n" + note.encode(), "not 32"),
                        (b"old 3\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\n" + note.encode(),
                         "more than 63"),
                        (b"old 3\n", "no empty line"),
                        (b"old 3\n\n", "no checkpoint"),
                        (b"old 3\n\n\xff", "not UTF-8")]:
        with pytest.raises(BadInput, match=reason):
            parse_add_checkpoint(bad)


class Log:
    """A ledger of `size` entries whose entries start with `tag` (two tags: a split view)."""

    def __init__(self, path: Path, signer: Signer, tag: str = "a") -> None:
        self.ledger = Ledger.open(path, signer.name, signer)
        self.tag = tag
        self.sizes = [0]

    def grow(self, count: int) -> str:
        start = self.ledger.size
        self.ledger.append_many([("key_event", {"n": f"{self.tag}{start + i}"}) for i in range(count)])
        note = self.ledger.checkpoint()
        self.sizes.append(self.ledger.size)
        return note

    def request(self, old: int, note: str | None = None) -> bytes:
        note = note or self.ledger.latest_checkpoint()
        assert note is not None
        return format_add_checkpoint(old, self.ledger.consistency_proof(old), note)


@pytest.fixture
def witness(tmp_path: Path, signer: Signer, origin: str) -> Iterator[Witness]:
    witness = new_witness(tmp_path / "witness", {origin: signer.verifier.vkey})
    yield witness
    witness.state.close()


def refusal(witness: Witness, body: bytes) -> Refused:
    with pytest.raises(Refused) as caught:
        witness.add_checkpoint(body)
    return caught.value


def test_witness_cosigns_a_growing_log(witness: Witness, tmp_path: Path, signer: Signer, origin: str) -> None:
    log = Log(tmp_path / "a.db", signer)
    first = log.grow(3)
    answer = witness.add_checkpoint(log.request(0))
    assert answer.lines.startswith("\u2014 witness.example/w1 ") and answer.lines.endswith("\n")
    [cosignature] = verified_cosignatures(parse_note(first).text + "\n" + answer.lines, [witness.signer.verifier])
    assert cosignature.timestamp == NOW
    log.grow(5)
    assert witness.add_checkpoint(log.request(3)).checkpoint.size == 8
    assert witness.add_checkpoint(log.request(8)).checkpoint.size == 8  # the same checkpoint again: cosigned again
    assert witness.state.latest(origin).size == 8 and witness.state.refusals() == []


def test_witness_refuses_stale_inconsistent_unknown_and_forged(witness: Witness, tmp_path: Path,
                                                               signer: Signer, origin: str) -> None:
    log = Log(tmp_path / "a.db", signer)
    log.grow(3)
    witness.add_checkpoint(log.request(0))
    log.grow(4)
    stale = refusal(witness, log.request(0))  # an old size that is not the witness's: 409 with its size
    assert (stale.status, stale.size, stale.body, stale.content_type) == (409, 3, b"3\n", "text/x.tlog.size")
    bad_proof = format_add_checkpoint(3, [bytes(32)] * len(log.ledger.consistency_proof(3)),
                                      log.ledger.latest_checkpoint())
    inconsistent = refusal(witness, bad_proof)
    assert inconsistent.status == 422 and "not consistent" in inconsistent.reason
    above = format_add_checkpoint(8, [], log.ledger.latest_checkpoint())
    assert refusal(witness, above).status == 400  # an old size above the checkpoint's
    stranger = Signer("other.example/log", Ed25519PrivateKey.generate())
    unknown = sign_checkpoint(Checkpoint(stranger.name, 0, EMPTY_ROOT), stranger)
    assert refusal(witness, format_add_checkpoint(0, [], unknown)).status == 404
    impostor = Signer(origin, Ed25519PrivateKey.generate())  # the origin, not its key
    forged = sign_checkpoint(Checkpoint(origin, 7, log.ledger.root()), impostor)
    assert refusal(witness, format_add_checkpoint(3, log.ledger.consistency_proof(3), forged)).status == 403
    assert refusal(witness, b"old 1\n").status == 400
    assert witness.state.latest(origin).size == 3  # nothing refused changed the state
    assert [r.status for r in witness.state.refusals(origin)] == [422]  # validly signed: kept as evidence
    witness.add_checkpoint(log.request(3))
    assert witness.state.latest(origin).size == 7


def test_split_view_is_refused(witness: Witness, tmp_path: Path, signer: Signer, origin: str) -> None:
    """Two logs with the same origin and key, shown to two auditors: the witness cosigns one."""
    seen_by_a, seen_by_b = Log(tmp_path / "a.db", signer, "a"), Log(tmp_path / "b.db", signer, "b")
    seen_by_a.grow(4)
    seen_by_b.grow(4)
    witness.add_checkpoint(seen_by_a.request(0))
    same_size = refusal(witness, seen_by_b.request(4))  # the same size with another root
    assert same_size.status == 409 and "another root" in same_size.reason
    seen_by_b.grow(2)
    later = refusal(witness, seen_by_b.request(4))  # B's own proof from size 4 leads to B's root, not A's
    assert later.status == 422
    assert [r.status for r in witness.state.refusals(origin)] == [409, 422]
    assert witness.state.latest(origin).root == seen_by_a.ledger.root(4)


def test_concurrent_requests_never_roll_the_witness_back(witness: Witness, tmp_path: Path, signer: Signer,
                                                         origin: str) -> None:
    log = Log(tmp_path / "a.db", signer)
    requests = []
    for _ in range(8):
        log.grow(1)
        requests.append(log.request(log.sizes[-2]))
    results: list[int] = []

    def send(body: bytes) -> None:
        try:
            results.append(witness.add_checkpoint(body).checkpoint.size)
        except Refused as refused:
            results.append(-refused.status)

    for body in requests:  # in order, from threads racing each other
        thread = threading.Thread(target=send, args=(body,))
        thread.start()
        thread.join()
    assert results == list(range(1, 9)) and witness.state.latest(origin).size == 8
    threads = [threading.Thread(target=send, args=(log.request(8),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert witness.state.latest(origin).size == 8


@pytest.fixture
def served(witness: Witness) -> Iterator[str]:
    with serving(witness) as running:
        yield running.url


def test_over_http(witness: Witness, served: str, tmp_path: Path, signer: Signer, origin: str) -> None:
    log = Log(tmp_path / "a.db", signer)
    note = log.grow(2)
    client = WitnessClient(served, witness.signer.verifier)
    signature = client.add_checkpoint(0, [], note)
    assert verified_cosignatures(add_signatures(note, [signature]), [witness.signer.verifier])
    log.grow(1)
    with pytest.raises(WitnessConflict) as conflict:
        client.add_checkpoint(0, [], log.ledger.latest_checkpoint())
    assert conflict.value.size == 2
    client.add_checkpoint(2, log.ledger.consistency_proof(2), log.ledger.latest_checkpoint())
    with pytest.raises(VerificationFailed, match="HTTP 422"):
        client.add_checkpoint(3, [bytes(32)], sign_checkpoint(Checkpoint(origin, 4, bytes(32)), signer))
    other = WitnessClient(served, CosignatureSigner("witness.example/w1", Ed25519PrivateKey.generate()).verifier)
    with pytest.raises(VerificationFailed, match="carries no cosignature"):  # not the key we pinned
        other.add_checkpoint(3, [], log.ledger.latest_checkpoint())
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(served + "/add-checkpoint", timeout=5)
    assert error.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(urllib.request.Request(served + "/add-checkpoint", data=b"x" * 70_000), timeout=5)
    assert error.value.code == 413


def test_unreachable_witness_is_a_service_error(signer: Signer, origin: str) -> None:
    from ledger.errors import ServiceError

    client = WitnessClient("http://127.0.0.1:9", CosignatureSigner("w", Ed25519PrivateKey.generate()).verifier, 2)
    with pytest.raises(ServiceError, match="cannot reach witness"):
        client.add_checkpoint(0, [], sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signer))
