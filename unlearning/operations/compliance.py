"""When a request was complied with, from its stage entries: one rule for `status` and the report.

Exact compliance is the moment no served model holds the records any more: per planned model,
its certified exclusion (`request_excluded`), or, where no exclusion could be built
(`exclusion_deferred`: nothing left to serve), the last of its shards restored; the request's
is the latest over its models. A request no model trained on complied when it was planned.
Restoration (every planned shard retrained and certified) is utility coming back, not
compliance, and is reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelStages:
    """One planned model's stage entries (as `ledger.entries.read` returns them: with `at`, `index`)."""

    excluded: dict | None  # request_excluded or exclusion_deferred
    restored: list[dict | None]  # per planned shard


def _restored(stages: ModelStages) -> dict | None:
    """The entry that completed the model's restore (None: a shard is still pending)."""
    if any(e is None for e in stages.restored):
        return None
    return max(stages.restored, key=lambda e: e["index"], default=None)  # type: ignore[arg-type, return-value]


def complied(planned: dict | None, models: dict[str, ModelStages]) -> dict | None:
    """The entry that completed exact compliance (its `at` is the moment), or None: not yet."""
    if planned is None:
        return None
    if not models:
        return planned
    done = []
    for stages in models.values():
        exclusion = stages.excluded if stages.excluded and stages.excluded["type"] == "request_excluded" else None
        done.append(exclusion or _restored(stages))
    if any(e is None for e in done):
        return None
    return max(done, key=lambda e: e["index"])  # type: ignore[arg-type, return-value]


def restored(models: dict[str, ModelStages]) -> dict | None:
    """The entry that completed the restore of every planned shard (None: pending, or nothing to restore)."""
    done = [_restored(stages) for stages in models.values()]
    if not done or any(e is None for e in done):
        return None
    return max(done, key=lambda e: e["index"])  # type: ignore[arg-type, return-value]
