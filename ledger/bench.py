"""Ledger benchmark: batched append throughput, proof generation and verification, full audit.

One log grows through the requested sizes; each size reports the appends that grew it there,
then times proofs against the tree of exactly that size. Entries look like deletion requests
with a natural key, so the uniqueness index is part of the cost, as in production.
"""

from __future__ import annotations

import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit import audit_log
from ledger.log import Ledger
from ledger.merkle import verify_consistency, verify_inclusion
from ledger.note import Signer

ORIGIN = "bench.erasure.local/ledger/v1"


def _entries(start: int, count: int) -> list[tuple[str, dict, str]]:
    return [
        ("deletion_requested", {"request_id": f"req-{i:09d}", "commitments": [f"{i:064x}"]}, f"req-{i:09d}")
        for i in range(start, start + count)
    ]


def _mean_ms(samples: Sequence[float]) -> float:
    return statistics.fmean(samples) * 1000


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _measure(ledger: Ledger, size: int, proofs: int, rng: random.Random) -> dict:
    root = ledger.root(size)
    indices = [rng.randrange(size) for _ in range(proofs)]
    leaves = {i: ledger.leaf_hash(i) for i in indices}
    prove, check = [], []
    for i in indices:
        elapsed, proof = _timed(lambda: ledger.inclusion_proof(i, size))
        prove.append(elapsed)
        check.append(_timed(lambda: verify_inclusion(i, size, leaves[i], proof, root))[0])
    old_sizes = [rng.randrange(1, size + 1) for _ in range(proofs)]
    old_roots = {m: ledger.root(m) for m in old_sizes}
    cprove, ccheck = [], []
    for m in old_sizes:
        elapsed, proof = _timed(lambda: ledger.consistency_proof(m, size))
        cprove.append(elapsed)
        ccheck.append(_timed(lambda: verify_consistency(m, size, proof, old_roots[m], root))[0])
    return {
        "inclusion_prove_ms": _mean_ms(prove),
        "inclusion_prove_p99_ms": sorted(prove)[int(0.99 * (len(prove) - 1))] * 1000,
        "inclusion_verify_ms": _mean_ms(check),
        "consistency_prove_ms": _mean_ms(cprove),
        "consistency_verify_ms": _mean_ms(ccheck),
    }


def run_ledger_benchmark(
    sizes: Sequence[int], batch: int = 1000, proofs: int = 1000, workdir: Path | None = None
) -> dict:
    rng = random.Random(6962)
    signer = Signer(ORIGIN, Ed25519PrivateKey.generate())
    results = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="erasure-bench-") as tmp:
        ledger = Ledger.open(Path(tmp) / "ledger.db", ORIGIN, signer)
        try:
            for size in sorted(set(sizes)):
                start, append_s = ledger.size, 0.0
                while ledger.size < size:
                    items = _entries(ledger.size, min(batch, size - ledger.size))
                    append_s += _timed(lambda: ledger.append_many(items))[0]
                checkpoint_s = _timed(ledger.checkpoint)[0]
                row = {
                    "entries": size,
                    "appended": size - start,
                    "append_s": append_s,
                    "appends_per_s": (size - start) / append_s if append_s else None,
                    "checkpoint_ms": checkpoint_s * 1000,
                    **_measure(ledger, size, proofs, rng),
                    "audit_s": _timed(lambda: audit_log(ledger.store, [signer.verifier], ORIGIN))[0],
                }
                results.append(row)
        finally:
            ledger.close()
    return {
        "benchmark": "ledger",
        "batch": batch,
        "proofs_per_size": proofs,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "results": results,
    }
