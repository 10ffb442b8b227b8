"""DSSE envelopes and in-toto statements over bundle directories."""

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.dsse import pae, sign_envelope, verify_envelope
from ledger.errors import VerificationFailed
from ledger.note import Signer
from ledger.statement import build_statement, check_subjects, parse_statement

PTYPE = "https://example.test/predicate/v1"


def _signer(name: str = "test.example/certifier") -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def test_pae_matches_the_spec_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_envelope_round_trip_and_failures() -> None:
    signer = _signer()
    env = sign_envelope(b'{"x":1}', signer)
    assert verify_envelope(json.dumps(env).encode(), [signer.verifier]) == b'{"x":1}'

    forged = dict(env, payload=base64.b64encode(b'{"x":2}').decode())
    with pytest.raises(VerificationFailed, match="does not verify"):
        verify_envelope(forged, [signer.verifier])
    with pytest.raises(VerificationFailed, match="not signed by any trusted"):
        verify_envelope(env, [_signer().verifier])
    same_name_other_key = _signer(signer.name)
    with pytest.raises(VerificationFailed, match="not signed by any trusted"):
        verify_envelope(env, [same_name_other_key.verifier])
    with pytest.raises(VerificationFailed, match="payloadType"):
        verify_envelope(dict(env, payloadType="text/plain"), [signer.verifier])
    with pytest.raises(VerificationFailed, match="no signatures"):
        verify_envelope(dict(env, signatures=[]), [signer.verifier])
    with pytest.raises(VerificationFailed, match="not JSON"):
        verify_envelope(b"{", [signer.verifier])
    with pytest.raises(VerificationFailed, match="base64"):
        verify_envelope(dict(env, payload="***"), [signer.verifier])
    # the signature covers the type too: re-labelling the payload breaks it
    relabelled = sign_envelope(b'{"x":1}', signer, payload_type="text/plain")
    with pytest.raises(VerificationFailed):
        verify_envelope(dict(relabelled, payloadType="application/vnd.in-toto+json"), [signer.verifier])


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "components" / "s0").mkdir(parents=True)
    (bundle / "components" / "s0" / "adapter_model.safetensors").write_bytes(b"weights")
    (bundle / "aggregation.json").write_text("{}")
    (bundle / "attestation").mkdir()
    (bundle / "attestation" / "certificate.dsse.json").write_text("ignored")
    return bundle


def test_statement_subjects_cover_exactly_the_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    statement = parse_statement(build_statement(bundle, PTYPE, {"claim": "EXACT"}), PTYPE)
    assert [s["name"] for s in statement["subject"]] == ["aggregation.json", "components/s0/adapter_model.safetensors"]
    check_subjects(statement, bundle)

    (bundle / "components" / "s0" / "adapter_model.safetensors").write_bytes(b"weightz")
    with pytest.raises(VerificationFailed, match="adapter_model.safetensors has sha256"):
        check_subjects(statement, bundle)


def test_missing_and_extra_files_fail(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    statement = parse_statement(build_statement(bundle, PTYPE, {}), PTYPE)
    (bundle / "extra.bin").write_bytes(b"")
    with pytest.raises(VerificationFailed, match="extra.bin is not covered"):
        check_subjects(statement, bundle)
    (bundle / "extra.bin").unlink()
    (bundle / "aggregation.json").unlink()
    with pytest.raises(VerificationFailed, match="aggregation.json is missing"):
        check_subjects(statement, bundle)


def test_statement_type_checks(tmp_path: Path) -> None:
    payload = build_statement(_bundle(tmp_path), PTYPE, {})
    with pytest.raises(VerificationFailed, match="predicateType"):
        parse_statement(payload, "https://other/v1")
    with pytest.raises(VerificationFailed, match="_type"):
        parse_statement(b'{"_type": "x"}', PTYPE)
