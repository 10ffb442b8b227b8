"""Ledger benchmark: batched append throughput, proof generation and verification, full audit.

One log grows through the requested sizes; each size reports the appends that grew it there,
then times proofs against the tree of exactly that size. Entries look like deletion requests
with a natural key, so the uniqueness index is part of the cost, as in production.

At each size the log is also published as C2SP tiles (incrementally, as a service's checkpoints
publish it) and served over HTTP on 127.0.0.1; each tile check is what `erasure verify --log`
does for a certificate, by a fresh client with nothing cached: fetch and verify the checkpoint
and the edge tiles, check consistency with a random older signed checkpoint (the auditor's
state) and fetch three random entries with their bundles, each checked against its tile. It
reports the time and the requests and bytes fetched.

The shared mode (`database_url`) also grows a log on PostgreSQL, as a shared deployment keeps it
(in a schema of its own, dropped afterwards), through the same sizes in the same batches, and
reports its appends/s beside SQLite's with the ratio; then single-entry appends on both, one
transaction each, as a planner logs one request.

With `object_store_url`, each size is also published to that object store (under a scratch
prefix of its own, deleted afterwards), as a shared deployment publishes, and the same tile
checks run against it served by `erasure ledger serve --from`: publish time and verify time
beside the directory's, with the ratios.
"""

from __future__ import annotations

import platform
import random
import secrets
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit import audit_log
from ledger.log import Ledger
from ledger.merkle import verify_consistency, verify_inclusion
from ledger.note import Checkpoint, Signer, sign_checkpoint, verify_checkpoint
from ledger.objects import ObjectStore, open_object_store
from ledger.tiles import TileLog, open_tree
from ledger.tiles.publish import publish
from ledger.tiles.serve import make_server, server_url

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


def _tile_checks(ledger: Ledger, signer: Signer, url: str, size: int, checks: int, rng: random.Random) -> dict:
    times, requests, fetched = [], [], []
    for _ in range(checks):
        older_size = rng.randrange(1, size + 1)
        older = verify_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, older_size, ledger.root(older_size)), signer),
                                  [signer.verifier])
        indices = [rng.randrange(size) for _ in range(3)]
        t0 = time.perf_counter()
        tree = open_tree(TileLog(url), [signer.verifier], ORIGIN)
        tree.check_extends(older)
        for i in indices:
            tree.entry(i)
        times.append(time.perf_counter() - t0)
        requests.append(tree.log.stats.requests)
        fetched.append(tree.log.stats.bytes)
    return {
        "tiles_verify_ms": _mean_ms(times),
        "tiles_verify_p99_ms": sorted(times)[int(0.99 * (len(times) - 1))] * 1000,
        "tiles_requests": statistics.fmean(requests),
        "tiles_fetched_bytes": statistics.fmean(fetched),
    }


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _grow(ledger: Ledger, size: int, batch: int) -> tuple[int, float]:
    """Append up to `size` entries in batches: (entries appended, seconds spent appending)."""
    start, append_s = ledger.size, 0.0
    while ledger.size < size:
        items = _entries(ledger.size, min(batch, size - ledger.size))
        append_s += _timed(lambda: ledger.append_many(items))[0]
    return size - start, append_s


def _single_appends(ledger: Ledger, count: int) -> float:
    """Appends/s of `count` single-entry appends (one transaction each)."""
    start = ledger.size
    elapsed = sum(_timed(lambda: ledger.append_many(_entries(start + i, 1)))[0] for i in range(count))
    return count / elapsed


def _ratio(shared: float | None, embedded: float | None) -> float | None:
    return shared / embedded if shared and embedded else None


def _shared_run(url: str, sizes: Sequence[int], batch: int, proofs: int, single: int, signer: Signer,
                embedded: list[dict], embedded_single: float) -> dict:
    """The same growth on PostgreSQL, in a fresh schema dropped afterwards; rows beside SQLite's."""
    import psycopg

    from ledger.postgres_store import PostgresStore

    rng = random.Random(6962)
    schema = f"erasure_bench_{secrets.token_hex(4)}"
    store = PostgresStore.open(url, ORIGIN, schema=schema)
    ledger = Ledger(store, signer)
    try:
        version = store.server_version()
        results = []
        for size, sqlite_row in zip(sorted(set(sizes)), embedded):
            appended, append_s = _grow(ledger, size, batch)
            rate = appended / append_s if append_s else None
            results.append({
                "entries": size,
                "appended": appended,
                "append_s": append_s,
                "appends_per_s": rate,
                "sqlite_appends_per_s": sqlite_row["appends_per_s"],
                "ratio": _ratio(rate, sqlite_row["appends_per_s"]),
                "checkpoint_ms": _timed(ledger.checkpoint)[0] * 1000,
                **_measure(ledger, size, proofs, rng),
                "audit_s": _timed(lambda: audit_log(ledger.store, [signer.verifier], ORIGIN))[0],
            })
        single_rate = _single_appends(ledger, single)
    finally:
        ledger.close()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {
        "database": store.where,
        "postgresql": version,
        "batch": batch,
        "results": results,
        "single": {"appends": single, "appends_per_s": single_rate, "sqlite_appends_per_s": embedded_single,
                   "ratio": _ratio(single_rate, embedded_single)},
    }


def _scratch(url: str) -> ObjectStore:
    """A fresh prefix under the object store `url`, for the bench's tiles alone."""
    tag = f"erasure-bench-{secrets.token_hex(4)}"
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return open_object_store(urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + tag)))
    return open_object_store(str(Path(parts.path if parts.scheme == "file" else url) / tag))


def _object_store_row(ledger: Ledger, signer: Signer, url: str, row: dict, publish_s: float, checks: int,
                      rng: random.Random) -> dict:
    """The size's tiles as published to the object store (in `publish_s`) and checked as served from
    it (at `url`), beside the directory's."""
    served = _tile_checks(ledger, signer, url, row["entries"], checks, rng)
    return {"entries": row["entries"], "publish_s": publish_s, "dir_publish_s": row["tiles_publish_s"],
            "publish_ratio": _ratio(publish_s, row["tiles_publish_s"]),
            "verify_ms": served["tiles_verify_ms"], "dir_verify_ms": row["tiles_verify_ms"],
            "verify_ratio": _ratio(served["tiles_verify_ms"], row["tiles_verify_ms"]),
            "requests": served["tiles_requests"], "fetched_bytes": served["tiles_fetched_bytes"]}


def run_ledger_benchmark(
    sizes: Sequence[int], batch: int = 1000, proofs: int = 1000, workdir: Path | None = None, tile_checks: int = 20,
    database_url: str | None = None, single: int = 200, object_store_url: str | None = None,
) -> dict:
    """With `database_url`, also the shared mode (PostgreSQL beside SQLite, `shared` in the result);
    with `object_store_url`, the tiles published there too (`object_store` in the result)."""
    rng = random.Random(6962)
    signer = Signer(ORIGIN, Ed25519PrivateKey.generate())
    results, in_store = [], []
    objects = None if object_store_url is None else _scratch(object_store_url)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="erasure-bench-") as tmp:
        ledger = Ledger.open(Path(tmp) / "ledger.db", ORIGIN, signer)
        tiles = Path(tmp) / "tiles"
        server = store_server = None
        try:
            for size in sorted(set(sizes)):
                appended, append_s = _grow(ledger, size, batch)
                checkpoint_s = _timed(ledger.checkpoint)[0]
                row = {
                    "entries": size,
                    "appended": appended,
                    "append_s": append_s,
                    "appends_per_s": appended / append_s if append_s else None,
                    "checkpoint_ms": checkpoint_s * 1000,
                    **_measure(ledger, size, proofs, rng),
                    "audit_s": _timed(lambda: audit_log(ledger.store, [signer.verifier], ORIGIN))[0],
                    "tiles_publish_s": _timed(lambda: publish(ledger.store, tiles))[0],
                    "tiles_dir_bytes": _dir_bytes(tiles),
                }
                if server is None:
                    server = make_server(tiles)
                    threading.Thread(target=server.serve_forever, daemon=True).start()
                row.update(_tile_checks(ledger, signer, server_url(server), size, tile_checks, rng))
                results.append(row)
                if objects is not None:
                    publish_s = _timed(lambda: publish(ledger.store, objects))[0]
                    if store_server is None:  # now that there is a checkpoint to serve
                        store_server = make_server(objects)
                        threading.Thread(target=store_server.serve_forever, daemon=True).start()
                    in_store.append(_object_store_row(ledger, signer, server_url(store_server), row, publish_s,
                                                      tile_checks, rng))
            if database_url is not None:
                embedded_single = _single_appends(ledger, single)
                shared = _shared_run(database_url, sizes, batch, proofs, single, signer, results, embedded_single)
        finally:
            for running in (server, store_server):
                if running is not None:
                    running.shutdown()
                    running.server_close()
            ledger.close()
            if objects is not None:
                for key in objects.list():
                    objects.delete(key)
    report = {
        "benchmark": "ledger",
        "batch": batch,
        "proofs_per_size": proofs,
        "tile_checks_per_size": tile_checks,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "results": results,
    }
    if database_url is not None:
        report["shared"] = shared
    if objects is not None:
        report["object_store"] = {"url": objects.url, "results": in_store}
    return report
