"""OpenSSF model signing interop on a synthetic bundle: our model.sig against the `model_signing`
library (its Python API and its CLI), both directions, and the certificate's `model signature` check."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ledger import model_signature as ms
from ledger.certificate import (
    ComponentClaim, ManifestRef, ModelSignatureRef, Predicate, cite, log_certificate, sign_certificate,
    verify_certificate,
)
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import build_trust, init_keys, load_signer
from ledger.log import open_ledger
from ledger.manifest import Manifest
from ledger.workspace import Workspace


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    ws = workspace.ensure()
    init_keys(ws.key_dir)
    assert ms.init_model_signing_key(ws.key_dir)
    return ws


def _files(bundle: Path) -> None:
    """A bundle's servable files and an attestation/ directory (written after model.sig)."""
    adapter = bundle / "components" / "shard0-slice0"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (bundle / "model.json").write_text('{"method": "sisa"}')


@pytest.fixture
def signed(ws: Workspace, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    _files(bundle)
    ms.sign_model(bundle, ms.load_private(ws.key_dir), "m-v1")
    (bundle / "attestation").mkdir()
    (bundle / "attestation" / "certificate.dsse.json").write_text("{}")
    return bundle


def _library_verify(bundle: Path, public_key: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(bundle,
                                                                                            bundle / ms.SIGNATURE_FILE)


def _cli_verify(bundle: Path, public_key: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(bundle), "--signature",
                           str(bundle / ms.SIGNATURE_FILE), "--public_key", str(public_key)],
                          capture_output=True, text=True, timeout=120)


def test_the_key_is_p256_private_0600_and_kept(ws: Workspace) -> None:
    assert stat.S_IMODE(ms.private_path(ws.key_dir).stat().st_mode) == 0o600
    key = ms.load_private(ws.key_dir)
    assert isinstance(key.curve, ec.SECP256R1)
    assert not ms.init_model_signing_key(ws.key_dir)
    assert ms.public_pem(ms.load_public(ws.key_dir)) == ms.public_pem(key.public_key())
    assert ms.public_path(ws.key_dir).read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_an_ed25519_key_in_its_place_is_refused(ws: Workspace) -> None:
    ms.public_path(ws.key_dir).write_bytes((ws.key_dir / "certifier.pub.pem").read_bytes())
    with pytest.raises(BadInput, match="not an ECDSA P-256 public key"):
        ms.load_public(ws.key_dir)


def test_model_signing_verifies_our_signature_and_refuses_a_changed_file(ws: Workspace, signed: Path) -> None:
    public_key = ms.public_path(ws.key_dir)
    _library_verify(signed, public_key)
    cli = _cli_verify(signed, public_key)
    assert cli.returncode == 0 and "Verification succeeded" in cli.stdout, cli.stderr

    adapter = signed / "components" / "shard0-slice0" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[100] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Signature mismatch") as refused:
        _library_verify(signed, public_key)
    assert "Hash mismatch for" in str(refused.value) and "shard0-slice0/adapter_model.safetensors" in str(refused.value)
    cli = _cli_verify(signed, public_key)
    assert cli.returncode == 1 and "Verification failed" in cli.stderr


def test_model_signing_refuses_an_added_file_and_another_key(ws: Workspace, signed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pub.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match="Key mismatch"):
        _library_verify(signed, other)
    (signed / "components" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="Extra files"):
        _library_verify(signed, ms.public_path(ws.key_dir))


def test_what_it_covers(signed: Path) -> None:
    payload = json.loads(base64.b64decode(json.loads((signed / ms.SIGNATURE_FILE).read_bytes())["dsseEnvelope"]["payload"]))
    assert payload["predicateType"] == "https://model_signing/signature/v1.0"
    assert [r["name"] for r in payload["predicate"]["resources"]] == [
        "components/shard0-slice0/adapter_config.json", "components/shard0-slice0/adapter_model.safetensors",
        "model.json"]
    assert payload["predicate"]["serialization"]["ignore_paths"][:2] == ["attestation", "model.sig"]


def test_our_verifier_agrees(ws: Workspace, signed: Path) -> None:
    key = ms.load_public(ws.key_dir)
    assert ms.verify_model_signature((signed / ms.SIGNATURE_FILE).read_bytes(), key) == ms.signed_files(signed)
    with pytest.raises(VerificationFailed, match="signed by key"):
        ms.verify_model_signature((signed / ms.SIGNATURE_FILE).read_bytes(),
                                  ec.generate_private_key(ec.SECP256R1()).public_key())
    document = json.loads((signed / ms.SIGNATURE_FILE).read_bytes())
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(VerificationFailed, match="does not verify"):
        ms.verify_model_signature(json.dumps(document).encode(), key)
    for bad in (b"", b"[]", b'{"mediaType": 1}', b"[" * 100_000):
        with pytest.raises(VerificationFailed):
            ms.verify_model_signature(bad, key)
    for pem in ("not a key", (ws.key_dir / "certifier.pub.pem").read_text()):  # garbage, an Ed25519 key
        with pytest.raises(VerificationFailed, match="model-signing public key is not"):
            ms.parse_public_pem(pem)


def test_our_verifier_reads_what_model_signing_signs(ws: Workspace, tmp_path: Path) -> None:
    """The other direction: a signature made by `model_signing sign key` verifies with ours."""
    bundle = tmp_path / "bundle"
    _files(bundle)
    result = subprocess.run([sys.executable, "-m", "model_signing", "sign", "key", str(bundle), "--signature",
                             str(bundle / ms.SIGNATURE_FILE), "--private_key", str(ms.private_path(ws.key_dir))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    key = ms.load_public(ws.key_dir)
    assert ms.verify_model_signature((bundle / ms.SIGNATURE_FILE).read_bytes(), key) == ms.signed_files(bundle)


def _certify(ws: Workspace, bundle: Path, ref_key: ec.EllipticCurvePublicKey | None = None) -> None:
    """A certificate naming the bundle's model.sig (and `ref_key` as its key, default the real one)."""
    leaves = Manifest.from_commitments([hashlib.sha256(b"record").digest()])
    leaves.write(bundle / "components" / "shard0-slice0" / "manifest.leaves")
    data = ms.sign_model(bundle, ms.load_private(ws.key_dir), "m-v1")
    ref = ModelSignatureRef(sha256=hashlib.sha256(data).hexdigest(),
                            publicKey=ms.public_pem(ref_key or ms.load_public(ws.key_dir)))
    with open_ledger(ws, sign=True) as ledger:
        index = ledger.append("component_trained", {"model": "m", "component": "shard0-slice0",
                                                    "manifest_root": leaves.root.hex(), "manifest_size": leaves.size})
        claim = ComponentClaim(id="shard0-slice0", shard=0, slice=0, action="trained", ledgerIndex=index,
                               manifest=ManifestRef(root=leaves.root.hex(), size=leaves.size,
                                                    file="components/shard0-slice0/manifest.leaves"))
        predicate = Predicate(claim="EXACT", method="sisa", model="m", modelVersion=1, components=[claim],
                              build={"seed": 1}, ledger=cite(ledger, [index], ledger.checkpoint()), modelSignature=ref)
        log_certificate(bundle, predicate, sign_certificate(bundle, predicate, load_signer(ws, "certifier")), ledger)


def test_the_certificate_names_model_sig_and_verify_checks_it(ws: Workspace, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _files(bundle)
    _certify(ws, bundle)
    result = verify_certificate(bundle, build_trust(ws))
    assert result.verified, result.to_json()
    checks = [c.check for c in result.checks]
    assert checks[:4] == ["signature", "statement", "subjects", "model signature"]
    assert "covers the 4 bundle files besides itself" in result.checks[3].detail
    _library_verify(bundle, ms.public_path(ws.key_dir))  # model_signing ignores attestation/, as it was told

    (bundle / ms.SIGNATURE_FILE).unlink()  # our verify refuses a bundle without it
    result = verify_certificate(bundle, build_trust(ws))
    assert not result.verified and "bundle file model.sig is missing" in result.checks[-1].detail


def test_a_model_sig_by_another_key_than_the_certified_one_fails(ws: Workspace, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _files(bundle)
    _certify(ws, bundle, ref_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    result = verify_certificate(bundle, build_trust(ws))
    failed = next(c for c in result.checks if not c.ok)
    assert failed.check == "model signature" and "not the certified" in failed.detail
