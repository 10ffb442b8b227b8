"""Certify a model version: write its bundle, prove what it was (not) trained on, sign, log.

A version's certificate covers every erasure that applies to its model so far (carried forward
from the parent version's certificate), so each certified version proves on its own that none
of its components ever saw an erased record.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from ledger import entries, model_signature
from ledger.certificate import (
    ENVELOPE_FILE, ComponentClaim, ManifestRef, ModelSignatureRef, Predicate, cite, log_certificate,
    non_membership_proofs, sign_certificate,
)
from ledger.dsse import verify_envelope
from ledger.keys import load_signer
from ledger.log import Ledger, open_ledger
from ledger.statement import parse_statement
from ledger.workspace import Workspace
from unlearning.operations.receive import Receipt
from unlearning.versions.bundle import bundle_version, manifest_file, write_bundle
from unlearning.versions.layout import BUNDLES_DIR
from unlearning.versions.store import ModelStore, ModelVersion


def bundle_dir(ws: Workspace, name: str, version: int) -> Path:
    return ws.artifacts / BUNDLES_DIR / name / f"v{version}"


def certified_bundle(ws: Workspace, name: str, version: int) -> Path | None:
    """The version's certified bundle (its certificate written), or None when there is none yet.
    With an object store, one certified on another host is fetched (verified) into artifacts/."""
    bundle = bundle_dir(ws, name, version)
    if (bundle / ENVELOPE_FILE).exists():
        return bundle
    remote = ModelStore(ws).remote
    if remote is not None and remote.has_bundle(name, version):
        bundle.parent.mkdir(parents=True, exist_ok=True)
        return remote.download_bundle(name, version, bundle)
    return None


def certified_predicate(bundle: Path, ws: Workspace) -> Predicate:
    """The predicate of a certificate this workspace issued (signature checked with its own key)."""
    signer = load_signer(ws, "certifier")
    payload = verify_envelope((bundle / ENVELOPE_FILE).read_bytes(), [signer.verifier])
    from ledger.certificate import PREDICATE_TYPE

    return Predicate.model_validate(parse_statement(payload, PREDICATE_TYPE)["predicate"])


def trained_entry(ledger: Ledger, version: ModelVersion, component_id: str) -> int:
    """Index of the `component_trained` entry of the latest version (up to this one) that trained
    the component; versions are linear, so that is where this version's copy came from."""
    for number in range(version.version, 0, -1):
        index = ledger.find(entries.component_trained_key(version.name, number, component_id))
        if index is not None:
            return index
    raise LookupError(f"{version.name} v{version.version}: no component_trained entry for {component_id}")


def _build_facts(version: ModelVersion) -> dict:
    meta = version.meta
    libraries = {}
    for dist in ("erasure", "torch", "transformers", "peft", "safetensors"):
        try:
            libraries[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "configSha256": meta.config_sha256,
        "seed": meta.config["seed"],
        "baseModel": meta.base,
        "codeVersion": libraries.get("erasure", "unknown"),
        "libraries": libraries,
        "environment": json.loads(json.dumps(meta.environment, default=str), parse_float=str),
        "python": platform.python_version(),
    }


def sign_openssf(ws: Workspace, bundle: Path, version: ModelVersion) -> ModelSignatureRef:
    """Write the bundle's `model.sig` (OpenSSF model signing, `ledger.model_signature`) and the
    reference the certificate carries. A workspace whose keys predate the model-signing key gets
    one here (`erasure keys init` makes it too): it is no trust root of its own, the certificate
    that names it is signed by the certifier key."""
    model_signature.init_model_signing_key(ws.key_dir)
    key = model_signature.load_private(ws.key_dir)
    data = model_signature.sign_model(bundle, key, f"{version.name}-v{version.version}")
    return ModelSignatureRef(sha256=hashlib.sha256(data).hexdigest(),
                             publicKey=model_signature.public_pem(key.public_key()))


def certify(ws: Workspace, version: ModelVersion, receipts: list[Receipt], actions: dict[str, str] | None = None,
            resumed_from: dict[str, str | None] | None = None, removed: list[str] | None = None,
            claim: str = "EXACT", approximation: dict | None = None) -> Path:
    """Write, certify and log the bundle of `version`; idempotent (an existing certificate is kept).

    `receipts` are the erasures handled by this version; earlier ones come from the parent's
    certificate, less an `approximation`'s own requests (its parent may be their exclusion, and
    its updated adapters still hold their records). `actions` maps component id ->
    trained|kept|retrained|deactivated (default: trained for a first version, kept otherwise).
    """
    certified = certified_bundle(ws, version.name, version.version)
    if certified is not None:
        return certified
    bundle = bundle_dir(ws, version.name, version.version)
    parent = version.meta.parent_version
    parent_bundle = certified_bundle(ws, version.name, parent) if parent else None
    erasures = list(certified_predicate(parent_bundle, ws).erasures) if parent_bundle else []
    if approximation is not None:  # its own requests: excluded in the parent, their records in updated adapters
        approximated = {r["requestId"] for r in approximation["requests"]}
        erasures = [e for e in erasures if e.requestId not in approximated]
    known = {e.requestId for e in erasures}
    erasures += [r.to_erasure() for r in receipts if r.request_id not in known]

    if not bundle.exists():
        write_bundle(version, bundle)
    served = bundle_version(bundle)
    manifests = {c.id: c.manifest() for c in served.components}
    erased = [bytes.fromhex(c) for e in erasures for c in e.commitments]
    default_action = "kept" if parent else "trained"
    signed = sign_openssf(ws, bundle, version)  # before the certificate, which names it
    with open_ledger(ws, sign=True) as ledger:
        claims = [
            ComponentClaim(
                id=c.id, shard=c.meta.shard, slice=c.meta.slice,
                action=(actions or {}).get(c.id, default_action), resumedFrom=(resumed_from or {}).get(c.id),
                manifest=ManifestRef(root=c.manifest_root.hex(), size=c.manifest_size, file=manifest_file(c.id)),
                ledgerIndex=trained_entry(ledger, version, c.id),
            )
            for c in served.components
        ]
        cited = [e.ledgerIndex for e in erasures] + [i for e in erasures for i in e.partIndices] + \
            [c.ledgerIndex for c in claims]
        checkpoint = ledger.checkpoint()
        predicate = Predicate(
            claim=claim, method=version.meta.method, model=version.name, modelVersion=version.version,
            parentVersion=parent, erasures=erasures, components=claims, removed=removed or [],
            nonMembership=non_membership_proofs(manifests, erased), build=_build_facts(version),
            approximation=approximation, ledger=cite(ledger, cited, checkpoint), modelSignature=signed,
        )
        envelope = sign_certificate(bundle, predicate, load_signer(ws, "certifier"))
        log_certificate(bundle, predicate, envelope, ledger)
    remote = ModelStore(ws).remote
    if remote is not None:  # the other hosts' executors carry the certificate forward from here
        remote.upload_bundle(version.name, version.version, bundle)
    return bundle
