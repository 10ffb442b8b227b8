"""`erasure bench forget`: time to exact compliance and to restored utility, per method, in one run.

Every method gets its own workspace with the same records, the same partition key and the same
seed, trains a version, certifies and registers it, then forgets the same subject through the
synchronous path (`unlearning.operations.forget.forget`): request → certified exclusion with the alias moved
(time to exact compliance) → certified retrained version (time to restored utility) → purge.
`retrain` is the reference: it has no exclusion, and its restore is a full retrain.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ledger.keys import init_keys
from ledger.workspace import Workspace
from unlearning.data.records import Record, RecordStore
from unlearning.training.config import TrainConfig

PARTITION_KEY = b"erasure benchmark partition key."  # fixed: every method sees the same split


@contextmanager
def _mlflow(ws: Workspace):  # type: ignore[no-untyped-def]
    """The configured MLflow server, or a private one for the benchmark's duration."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    from services import local as local_services

    started = local_services.up(ws, which=("mlflow",))
    try:
        yield started["mlflow"].endpoint
    finally:
        local_services.down(ws)


def bench_workspace(root: Path, method: str, records: Sequence[Record] | Mapping[str, Sequence[Record]],
                    mlflow_uri: str | None = None) -> Workspace:
    """A fresh workspace with its own keys, the fixed partition key and these records (split by
    subject, or given per split: split -> records)."""
    ws = Workspace(root / method).ensure()
    init_keys(ws.key_dir)
    (ws.key_dir / "partition.key").write_bytes(PARTITION_KEY)
    (ws.key_dir / "partition.key").chmod(0o600)
    if mlflow_uri is not None:
        ws.config_file.write_text(f'[mlflow]\ntracking_uri = "{mlflow_uri}"\n')
    with RecordStore.open(ws) as store:
        for split, part in (records.items() if isinstance(records, Mapping) else [(None, records)]):
            store.ingest(part, split)
    return ws


def _victim(ws: Workspace) -> str:
    with RecordStore.open(ws) as store:
        return store.subjects("train")[0]


def run_forget_benchmark(methods: Sequence[str], configs: dict[str, TrainConfig], records: Sequence[Record],
                         workdir: Path | None = None) -> dict:
    from unlearning.operations.build import train_model
    from unlearning.operations.forget import forget
    from unlearning.operations.publish import register_trained
    from unlearning.versions.store import ModelStore

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="erasure-forget-bench-") as tmp:
        root = Path(tmp)
        with _mlflow(Workspace(root / "services").ensure()) as uri:
            for method in methods:
                ws = bench_workspace(root, method, records, uri)
                t0 = time.perf_counter()
                version = train_model(ws, f"bench-{method}", configs[method])
                train_s = time.perf_counter() - t0
                register_trained(ws, version)
                subject = _victim(ws)
                result = forget(ws, version.name, subject)
                rows.append({
                    "method": method, "train_s": train_s, "subject_records": result.commitments,
                    "components": len(version.components),
                    "retrained_components": _retrained(ModelStore(ws), version.name),
                    "exact_compliance_s": result.timings.get("excluded_s"),
                    "restored_utility_s": result.timings.get("restored_s"),
                    "total_s": result.timings["total_s"],
                    "excluded_version": result.excluded_version, "restored_version": result.restored_version,
                })
    full = next((r["restored_utility_s"] for r in rows if r["method"] == "retrain"), None)
    for row in rows:
        row["restore_vs_full_retrain"] = (row["restored_utility_s"] / full
                                          if full and row["restored_utility_s"] else None)
    return {"benchmark": "forget", "python": platform.python_version(), "records": len(records), "results": rows}


def _retrained(models, name: str) -> int:  # type: ignore[no-untyped-def]
    """Components of the newest version whose weights differ from the version before it."""
    numbers = models.versions(name)
    if len(numbers) < 2:
        return 0
    new, old = models.get(name, numbers[-1]), models.get(name, numbers[-2])
    before = {c.id: c.weights_sha256 for c in old.components}
    return sum(before.get(c.id) != c.weights_sha256 for c in new.components)
