"""Certificate cost at scale: issue and verify a certificate whose component manifest holds n
commitments, with ephemeral keys, and report times and sizes (envelope, leaves file)."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import entries
from ledger.certificate import (
    ENVELOPE_FILE, ComponentClaim, Erasure, ManifestRef, Predicate, cite, log_certificate, non_membership_proofs,
    sign_certificate, verify_certificate,
)
from ledger.keys import RoleTrust, Trust
from ledger.log import Ledger
from ledger.manifest import Manifest
from ledger.note import Signer

ORIGIN = "bench.erasure.local/ledger/v1"
CERTIFIER = "bench.erasure.local/certifier/v1"


def _commitment(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def _one(size: int, erased: int, workdir: Path) -> dict:
    ledger_key, certifier = Signer(ORIGIN, Ed25519PrivateKey.generate()), Signer(CERTIFIER, Ed25519PrivateKey.generate())
    trust = Trust({"ledger": RoleTrust(ORIGIN, (ledger_key.verifier.vkey,)),
                   "certifier": RoleTrust(CERTIFIER, (certifier.verifier.vkey,))})
    bundle = workdir / f"bundle-{size}"
    leaves = bundle / "components" / "c0" / "manifest.leaves"
    leaves.parent.mkdir(parents=True)
    gone = [_commitment(size + i) for i in range(erased)]  # erased, so not in the manifest
    t0 = time.perf_counter()
    manifest = Manifest.from_commitments(_commitment(i) for i in range(size))
    manifest.write(leaves)
    (bundle / "components" / "c0" / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
    with Ledger.open(workdir / f"ledger-{size}.db", ORIGIN, ledger_key) as ledger:
        request, trained = ledger.append_many([
            entries.request_received("r", "erase_records", "bench-subject", "bench", [c.hex() for c in gone],
                                     {"via": "bench"}),
            entries.component_trained("bench", 2, "c0", 0, 0, None, manifest.root.hex(), size, "0" * 64, "0" * 64),
        ])
        predicate = Predicate(
            claim="EXACT", method="sisa", model="bench", modelVersion=2, parentVersion=1,
            erasures=[Erasure(requestId="r", commitments=[c.hex() for c in gone], ledgerIndex=request)],
            components=[ComponentClaim(id="c0", shard=0, slice=0, action="retrained", ledgerIndex=trained,
                                       manifest=ManifestRef(root=manifest.root.hex(), size=size,
                                                            file="components/c0/manifest.leaves"))],
            nonMembership=non_membership_proofs({"c0": manifest}, gone), build={},
            ledger=cite(ledger, [request, trained], ledger.checkpoint()),
        )
        envelope = sign_certificate(bundle, predicate, certifier)
        log_certificate(bundle, predicate, envelope, ledger)
        issue_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = verify_certificate(bundle, trust, ledger)
        verify_s = time.perf_counter() - t0
    if not result.verified:
        raise AssertionError(f"benchmark certificate did not verify: {result.to_json()}")
    return {"records": size, "erased": erased, "issue_s": issue_s, "verify_s": verify_s,
            "envelope_bytes": (bundle / ENVELOPE_FILE).stat().st_size, "leaves_bytes": leaves.stat().st_size}


def run_certificate_benchmark(sizes: Sequence[int], erased: int = 1, workdir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="erasure-cert-bench-") as tmp:
        return {"benchmark": "certificate", "results": [_one(n, erased, Path(tmp)) for n in sorted(set(sizes))]}
