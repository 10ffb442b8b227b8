"""One writer of new versions per model: a cross-process lock and the pipeline's state directory.

Embedded (no database URL): an `flock` on files in ERASURE_HOME/pipeline. Shared
(`Workspace.database_url()`): a lease in PostgreSQL (`unlearning.versions.lease`), which
executors on other hosts see, which expires when its holder dies, and whose epoch is checked
before every publish.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import BadInput
from ledger.workspace import Workspace

if TYPE_CHECKING:
    from unlearning.versions.lease import Lease


def pipeline_dir(ws: Workspace) -> Path:
    """Per-model lock and journal files of whoever makes versions (pipeline and CLI)."""
    path = ws.home / "pipeline"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_leases(ws: Workspace) -> None:
    """BadInput when versions go to an object store but the lock would be a local flock: writers on
    other hosts would not see it (and a purge's sweep could drop a blob another writer relies on)."""
    if ws.object_store_url() and not ws.database_url():
        raise BadInput("an object store is configured without the shared database: versions written from several "
                       "hosts need the model leases in PostgreSQL (set ERASURE_DATABASE_URL or [database] url); a "
                       "local flock does not reach the other hosts")


@contextmanager
def model_lock(ws: Workspace, name: str, urgent: bool = False) -> Iterator["Lease | HeldFlock"]:
    """Exclusive, cross-process (and cross-thread: one open file each) lock on a model's versions,
    taken by every writer of new versions (the pipeline's excluder, executors and planner, and
    `erasure forget` / `rectify`), so versions stay linear.

    `urgent` (exclusions) goes first: while an exclusion waits for the lock or holds it, a
    retrain does not start, so an exclusion waits at most for the one retrain already running.

    Yields the lease when shared (also reachable as `lease.current_lease(name)`, which
    `check_lease` reads before a publish), a `HeldFlock` when embedded: both have `check()`.
    """
    require_leases(ws)
    url = ws.database_url()
    if url:
        from unlearning.versions.lease import held

        with held(ws, url, name, urgent=urgent) as lease:
            yield lease
        return
    with _flock(ws, name, urgent):
        yield HeldFlock(name)


class HeldFlock:
    """The embedded lock, held: an flock lasts as long as its process, so `check` finds nothing."""

    def __init__(self, model: str) -> None:
        self.model = model

    def check(self) -> None:
        return None


@contextmanager
def _flock(ws: Workspace, name: str, urgent: bool) -> Iterator[None]:
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
