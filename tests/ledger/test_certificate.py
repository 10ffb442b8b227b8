"""Certificates end to end on a synthetic bundle: issue, verify, and every way to break one."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from ledger.certificate import (
    ENVELOPE_FILE, TLOG_PROOF_FILE, ComponentClaim, Erasure, ManifestRef, Predicate, cite, log_certificate,
    non_membership_proofs, sign_certificate, verify_certificate,
)
from ledger.errors import BadInput
from ledger.keys import build_trust, init_keys, load_signer
from ledger.log import open_ledger
from ledger.manifest import Manifest
from ledger.workspace import Workspace


def _c(i: int) -> bytes:
    return hashlib.sha256(b"record %d" % i).digest()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ERASURE_KEY_DIR", raising=False)
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE", raising=False)
    ws = Workspace.from_env().ensure()
    init_keys(ws.key_dir)
    return ws


def _issue(ws: Workspace, bundle: Path, erased: list[bytes], held: dict[str, list[bytes]]) -> Predicate:
    """Log a request and the components, build the bundle, certify and log the certificate."""
    ledger = open_ledger(ws, sign=True)
    request_index = ledger.append("request_received", {"request_id": "req-1", "commitments": [c.hex() for c in erased]},
                                  natural_key="request/req-1")
    manifests = {cid: Manifest.from_commitments(cs) for cid, cs in held.items()}
    (bundle / "manifests").mkdir(parents=True, exist_ok=True)
    claims = []
    for cid, m in manifests.items():
        m.write(bundle / "manifests" / f"{cid}.leaves")
        (bundle / "components" / cid).mkdir(parents=True)
        (bundle / "components" / cid / "adapter_model.safetensors").write_bytes(cid.encode() * 10)
        index = ledger.append("component_trained", {"model": "m", "component": cid, "manifest_root": m.root.hex(),
                                                    "manifest_size": m.size})
        claims.append(ComponentClaim(id=cid, shard=0, slice=None, action="retrained", ledgerIndex=index,
                                     manifest=ManifestRef(root=m.root.hex(), size=m.size, file=f"manifests/{cid}.leaves")))
    (bundle / "aggregation.json").write_text(json.dumps({"rule": "mean_p_yes", "components": list(held)}))
    checkpoint = ledger.checkpoint()
    predicate = Predicate(
        claim="EXACT", method="sisa", model="m", modelVersion=2, parentVersion=1,
        erasures=[Erasure(requestId="req-1", commitments=[c.hex() for c in erased], ledgerIndex=request_index)],
        components=claims, nonMembership=non_membership_proofs(manifests, erased), build={"seed": 7},
        ledger=cite(ledger, [request_index] + [c.ledgerIndex for c in claims], checkpoint),
    )
    envelope = sign_certificate(bundle, predicate, load_signer(ws, "certifier"))
    log_certificate(bundle, predicate, envelope, ledger)
    ledger.close()
    return predicate


def _verify(ws: Workspace, bundle: Path):
    with open_ledger(ws, create=False) as log:
        return verify_certificate(bundle, build_trust(ws), log)


@pytest.fixture
def bundle(ws: Workspace, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    _issue(ws, bundle, erased=[_c(5)], held={"s0": [_c(i) for i in range(5)], "s1": [_c(i) for i in range(6, 9)]})
    return bundle


def test_a_fresh_certificate_verifies(ws: Workspace, bundle: Path) -> None:
    result = _verify(ws, bundle)
    assert result.verified, result.to_json()
    assert result.claim == "EXACT"
    assert [c.check for c in result.checks] == ["signature", "statement", "subjects", "manifests", "non-membership",
                                                "ledger inclusion", "certificate logged", "ledger consistency"]


def test_cannot_certify_a_component_holding_an_erased_record() -> None:
    with pytest.raises(BadInput, match="still holds erased commitment"):
        non_membership_proofs({"s0": Manifest.from_commitments([_c(1), _c(2)])}, [_c(2)])


def _failed(ws: Workspace, bundle: Path) -> tuple[str, str]:
    result = _verify(ws, bundle)
    assert not result.verified
    bad = next(c for c in result.checks if not c.ok)
    return bad.check, bad.detail


def test_tampered_bundle_file_fails_subjects(ws: Workspace, bundle: Path) -> None:
    (bundle / "components" / "s0" / "adapter_model.safetensors").write_bytes(b"other weights")
    check, detail = _failed(ws, bundle)
    assert check == "subjects" and "adapter_model.safetensors" in detail


def test_unknown_certifier_key_fails_signature(ws: Workspace, bundle: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    other_keys = tmp_path / "other-keys"
    init_keys(other_keys)
    monkeypatch.setenv("ERASURE_KEY_DIR", str(other_keys))
    result = verify_certificate(bundle, build_trust(Workspace.from_env()))
    assert not result.verified and result.checks[0].check == "signature"
    assert "not signed by any trusted" in result.checks[0].detail


def test_payload_edits_break_the_signature(ws: Workspace, bundle: Path) -> None:
    import base64

    env = json.loads((bundle / ENVELOPE_FILE).read_bytes())
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["erasures"] = []
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (bundle / ENVELOPE_FILE).write_text(json.dumps(env))
    check, _ = _failed(ws, bundle)
    assert check == "signature"


def test_forged_non_membership_proof_fails_even_when_signed(ws: Workspace, tmp_path: Path) -> None:
    """A certifier bug or a stolen key cannot make a bad proof pass: proofs are checked, not trusted."""
    bundle = tmp_path / "forged"
    predicate = _issue(ws, bundle, erased=[_c(5)], held={"s0": [_c(i) for i in range(5)] + [_c(6)]})
    def forge(proof: dict) -> dict:
        side = "left" if proof.get("left") else "right"
        return {**proof, side: {**proof[side], "index": proof[side]["index"] ^ 1}}

    proofs = [n.model_copy(update={"proof": forge(n.proof)}) for n in predicate.nonMembership]
    assert proofs != predicate.nonMembership
    sign_certificate(bundle, predicate.model_copy(update={"nonMembership": proofs}), load_signer(ws, "certifier"))
    check, detail = _failed(ws, bundle)
    assert check == "non-membership" and "neighbour" in detail


def test_manifest_swapped_for_one_with_the_record_fails(ws: Workspace, bundle: Path) -> None:
    Manifest.from_commitments([_c(i) for i in range(6)]).write(bundle / "manifests" / "s0.leaves")
    check, _ = _failed(ws, bundle)
    assert check == "subjects"  # the leaves file is a subject too


def test_certifier_lying_about_membership_is_caught(ws: Workspace, tmp_path: Path) -> None:
    """Even a validly signed certificate fails if a component's manifest holds an erased commitment."""
    bundle = tmp_path / "lying"
    held = [_c(i) for i in range(5)]
    predicate = _issue(ws, bundle, erased=[_c(99)], held={"s0": held})
    # re-issue claiming commitment 3 was erased, with the proof of another commitment
    lying = predicate.model_copy(update={"erasures": [predicate.erasures[0].model_copy(update={
        "commitments": [_c(3).hex()]})]})
    from ledger.keys import load_signer as signer_of

    sign_certificate(bundle, lying, signer_of(ws, "certifier"))
    check, detail = _failed(ws, bundle)
    assert check == "non-membership" and "trained on erased commitment" in detail


def test_rolled_back_ledger_fails_consistency(ws: Workspace, bundle: Path) -> None:
    import sqlite3

    db = sqlite3.connect(ws.ledger_db)
    size = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    db.execute("DELETE FROM entries WHERE idx >= ?", (size - 2,))
    db.commit()
    db.close()
    result = _verify(ws, bundle)
    assert not result.verified
    assert not [c for c in result.checks if c.check == "ledger consistency"][0].ok


def test_missing_tlog_proof_fails(ws: Workspace, bundle: Path) -> None:
    os.remove(bundle / TLOG_PROOF_FILE)
    check, detail = _failed(ws, bundle)
    assert check == "certificate logged" and "cannot read" in detail
