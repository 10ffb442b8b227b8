"""One writer of new versions per model: a cross-process lock and the pipeline's state directory."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger.workspace import Workspace


def pipeline_dir(ws: Workspace) -> Path:
    """Per-model lock and journal files of whoever makes versions (pipeline and CLI)."""
    path = ws.home / "pipeline"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def model_lock(ws: Workspace, name: str, urgent: bool = False) -> Iterator[None]:
    """Exclusive, cross-process (and cross-thread: one open file each) lock on a model's versions,
    taken by every writer of new versions (the pipeline's excluder, executors and planner, and
    `erasure forget` / `rectify`), so versions stay linear.

    `urgent` (exclusions) goes first: while an exclusion waits for the lock or holds it, a
    retrain does not start, so an exclusion waits at most for the one retrain already running.
    """
    directory = pipeline_dir(ws)
    with open(directory / f"{name}.urgent", "a+") as gate, open(directory / f"{name}.lock", "a+") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if urgent else fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not urgent:
            fcntl.flock(gate, fcntl.LOCK_UN)  # an exclusion may queue up behind this retrain
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)
