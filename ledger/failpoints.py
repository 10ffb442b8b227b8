"""Fault injection for the reliability tests: `ERASURE_FAILPOINT=NAME` kills this process with
SIGKILL (as a power cut or the OOM killer would) the first time it reaches the point NAME, so a
test can stop a service at an exact stage boundary and prove that a restart loses nothing and
duplicates nothing. Unset, a point costs one environment lookup.

Points:
- `planner.before_commit`, `excluder.before_commit`, `executor.before_commit`: the handler's
  ledger appends and registry writes are done, its Kafka transaction (outputs and offsets) is not;
- `publish.before_alias`: a new version is certified and registered, the `certified` alias not moved;
- `purge.before_local`: the registered copies of the versions holding erased records are deleted,
  the local versions not yet.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"planner.before_commit", "excluder.before_commit", "executor.before_commit",
                    "publish.before_alias", "purge.before_local"})
ENV = "ERASURE_FAILPOINT"


def reach(point: str) -> None:
    """Die here if `ERASURE_FAILPOINT` names this point (tests name only `POINTS`)."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
