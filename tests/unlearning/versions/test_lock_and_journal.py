"""The model lock (one writer per model, exclusions first) and the restore journal (`unlearning.operations.restore`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ledger.errors import BadInput
from ledger.workspace import Workspace
from unlearning.operations.forget import forget
from unlearning.operations.restore import Journal
from unlearning.versions.lock import model_lock


def _holder(ws: Workspace, urgent: bool, log: list[str], name: str, hold_s: float) -> threading.Thread:
    def run() -> None:
        with model_lock(ws, "m", urgent=urgent):
            log.append(f"{name} in")
            time.sleep(hold_s)
            log.append(f"{name} out")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for(log: list[str], entry: str) -> None:
    deadline = time.monotonic() + 20
    while entry not in log:
        assert time.monotonic() < deadline, log
        time.sleep(0.01)


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    log: list[str] = []
    threads = [_holder(ws, urgent, log, f"t{i}", 0.05) for i, urgent in enumerate([False, True, False, True])]
    for t in threads:
        t.join(10)
    assert len(log) == 8
    assert all(log[i].endswith(" in") and log[i + 1] == log[i].replace(" in", " out") for i in range(0, 8, 2))


def test_a_waiting_exclusion_goes_before_a_later_retrain(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    log: list[str] = []
    first = _holder(ws, False, log, "retrain-1", 0.3)
    _wait_for(log, "retrain-1 in")
    exclusion = _holder(ws, True, log, "exclusion", 0.05)
    time.sleep(0.1)  # the exclusion now waits for retrain-1
    second = _holder(ws, False, log, "retrain-2", 0.05)
    for t in (first, exclusion, second):
        t.join(10)
    assert log.index("exclusion in") < log.index("retrain-2 in")


def test_journal_roundtrip(tmp_path: Path) -> None:
    journal = Journal(Workspace(tmp_path), "m")
    assert journal.read() is None
    intent = journal.write(3, [1, 2], ["r1", "r2"], ["j1"])
    assert journal.read() == intent == {"base": 3, "shards": [1, 2], "requests": ["r1", "r2"], "jobs": ["j1"]}
    journal.clear()
    assert journal.read() is None
    # a restore announced by an earlier release (one shard) is finished by this one
    journal.path.write_text('{"base": 2, "shard": 1, "requests": ["r1"], "jobs": []}')
    assert journal.read() == {"base": 2, "shards": [1], "requests": ["r1"], "jobs": []}


def test_cli_forget_waits_for_the_pipelines_lock(tmp_path: Path) -> None:
    """`erasure forget` makes versions too: it takes the same lock, so it never interleaves with
    a pipeline retrain of the model (here it only gets as far as finding no model, after the lock)."""
    ws = Workspace(tmp_path)
    log: list[str] = []
    holder = _holder(ws, False, log, "pipeline", 0.5)
    _wait_for(log, "pipeline in")
    outcome: list[str] = []

    def run() -> None:
        with pytest.raises(BadInput, match="no model"):
            forget(ws, "m", "subject-1")
        outcome.append("forget done" if "pipeline out" in log else "forget ran inside the pipeline's lock")

    cli = threading.Thread(target=run)
    cli.start()
    holder.join(10)
    cli.join(10)
    assert outcome == ["forget done"]
