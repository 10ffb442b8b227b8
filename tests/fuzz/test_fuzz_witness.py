"""Fuzzing the witness's untrusted inputs (issue 18): add-checkpoint bodies, the cosignatures a log
gets back, and 409 answers. As in test_fuzz_untrusted_inputs: a clear refusal, or a result that
says no more than the original signed content said; anything else is a crash."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger.log import Ledger
from ledger.note import CosignatureSigner, Signer, add_signatures, parse_note, verified_cosignatures
from ledger.witness.protocol import format_add_checkpoint, parse_size
from ledger.witness.service import Refused, Witness
from ledger.witness.state import WitnessState
from tests.fuzz.test_fuzz_untrusted_inputs import REJECTED, assert_clear, attempt, examples, mutated

ORIGIN = "fuzz.example/log"
SIGNER = Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
COSIGNER = CosignatureSigner("fuzz.example/w1", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))


def _log(path: Path) -> Ledger:
    log = Ledger.open(path, ORIGIN, SIGNER)
    log.append_many([("key_event", {"n": i}) for i in range(3)])
    log.checkpoint()
    return log


def _setup(tmp: Path) -> tuple[Witness, bytes, str]:
    """A witness that cosigned size 3, and a valid request from 3 to 7 (its body, its note)."""
    log = _log(tmp / "log.db")
    state = WitnessState.open(tmp / "witness")
    state.add_log(ORIGIN, SIGNER.verifier.vkey)
    witness = Witness(state, COSIGNER, clock=lambda: 1_700_000_000)
    witness.add_checkpoint(format_add_checkpoint(0, [], log.latest_checkpoint()))
    log.append_many([("key_event", {"n": i}) for i in range(3, 7)])
    note = log.checkpoint()
    body = format_add_checkpoint(3, log.consistency_proof(3), note)
    log.close()
    return witness, body, note


def test_add_checkpoint_refuses_or_cosigns_only_the_signed_checkpoint(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    witness, body, note = _setup(tmp_path_factory.mktemp("witness"))
    text = parse_note(note).text

    @examples(300)
    @given(mutated(body))
    def prop(data: bytes) -> None:
        try:
            cosigned = witness.add_checkpoint(data)
        except Refused as refused:
            assert refused.status in (400, 403, 404, 409, 422)
            assert_clear(refused.reason)
            return
        assert cosigned.checkpoint.text() == text  # what the log signed, nothing else
        assert verified_cosignatures(text + "\n" + cosigned.lines, [COSIGNER.verifier])

    prop()


def test_cosignatures_verify_only_over_the_text_they_signed(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.db")
    note = log.latest_checkpoint()
    log.close()
    text = parse_note(note).text
    cosigned = add_signatures(note, [COSIGNER.cosign(text, 1_700_000_000)])

    @examples(300)
    @given(mutated(cosigned.encode()))
    def prop(data: bytes) -> None:
        found = attempt(verified_cosignatures, data, [COSIGNER.verifier])
        if found is not REJECTED and found:
            assert parse_note(data).text == text

    prop()


@examples(200)
@given(mutated(b"20852014\n") | st.binary(max_size=24))
def test_409_size_bodies(data: bytes) -> None:
    size = attempt(parse_size, data)
    assert size is REJECTED or (isinstance(size, int) and data == f"{size}\n".encode())
