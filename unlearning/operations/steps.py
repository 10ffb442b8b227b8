"""The stages of a received request, one function each: plan, approximate, exclude, restore.

This is the one path: `erasure forget` / `rectify` call these in sequence, and the pipeline's
planner, excluder and executor call the same functions from their consumer loops. Each step
logs its own stage entries (`ledger.entries`), so `erasure status` reads the same stages for a
request whichever way it came, and each is idempotent by request id: a repeated call finds the
stage done and changes nothing.

Steps that make versions take the model's lock (exclusions ahead of retrains) and first finish
whatever a crash left (`settle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger import entries
from ledger.errors import BadInput, ServiceError
from ledger.log import open_ledger
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.approximate import influence_version
from unlearning.operations.context import Context
from unlearning.operations.exclude import exclude, finish_exclusion
from unlearning.operations.publish import publish, registration
from unlearning.operations.purge import purge
from unlearning.operations.receive import Receipt, receipts_of
from unlearning.operations.restore import Journal, finish_restore, log_restored, restore, served_clean
from unlearning.operations.settle import settle
from unlearning.registry.mlflow import RegisteredVersion
from unlearning.versions.lock import model_lock
from unlearning.versions.store import ModelVersion


class ExclusionPending(ServiceError):
    """Transient: a retrain waits until its requests' exclusion is logged (retried shortly)."""

    retry_after_s = 1.0


@dataclass
class ExclusionOutcome:
    outcome: str  # one line for logs
    registered: RegisteredVersion | None = None  # the certified exclusion version, if one was made now
    purged: list[int] = field(default_factory=list)  # local versions purged


@dataclass
class RestoreOutcome:
    outcome: str
    registered: RegisteredVersion | None = None  # the certified retrained version, if one was made now
    purged: list[int] = field(default_factory=list)


@dataclass
class ApproximationOutcome:
    reason: str  # logged in `request_approximated`
    registered: RegisteredVersion | None = None
    report: dict = field(default_factory=dict)  # per updated component: the solver's report
    error: str | None = None  # why nothing was published, when a solve was refused


def settle_model(ctx: Context, name: str) -> ModelVersion:
    """The model's newest exact version, after finishing what a crash left (under the lock)."""
    with model_lock(ctx.ws, name, urgent=True):
        return settle(ctx, name)


def plan(ctx: Context, requests: Sequence[tuple[str, Sequence[str], Receipt]]) -> dict[str, dict[str, list[int]]]:
    """Per (request id, models in scope, receipt): model -> the shards that trained on its records;
    logged as `request_planned`. Shard -1 (`NO_SHARD`) stands for the components without a shard
    (APA's aggregator, whose validation pool may hold the records): they are excluded like a
    shard, and restored by that exclusion.

    From the record store's provenance, not the newest version's manifests: a record's shard
    never changes, and a restore running meanwhile may already have dropped the shard from the
    newest version.
    """
    plans = {}
    with RecordStore.open(ctx.ws) as store:
        for request_id, scope, receipt in requests:
            rows = store.provenance(bytes.fromhex(c) for c in receipt.commitments)
            shards = {m: sorted({p.shard for p in rows if p.model == m}) for m in scope}
            plans[request_id] = {m: s for m, s in shards.items() if s}
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([entries.request_planned(rid, plan) for rid, plan in plans.items()])
    return plans


def approximate(ctx: Context, model: str, receipt: Receipt, old: list[StoredRecord], new: list[Record],
                settings: SolverSettings) -> ApproximationOutcome:
    """Publish the APPROXIMATE influence update of `model` for one received request (`old`: its
    records as trained, held in memory before the store shredded or replaced them; `new`: their
    corrections), and log `request_approximated`. Nothing is published when no served adapter
    saw the records or the solve is refused; the exact path runs either way."""
    with model_lock(ctx.ws, model):
        result = _approximate(ctx, settle(ctx, model), receipt, old, new, settings)
    registered = result.registered
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([entries.request_approximated(
            receipt.request_id, model, result.reason, registered and registered.local_version,
            registered and registered.version, registered and registered.certificate_sha256)])
    return result


def _approximate(ctx: Context, current: ModelVersion, receipt: Receipt, old: list[StoredRecord],
                 new: list[Record], settings: SolverSettings) -> ApproximationOutcome:
    try:
        update = influence_version(ctx.ws, current, old, new, [receipt], settings)
    except BadInput as err:
        return ApproximationOutcome(f"no approximate update: {err}", error=str(err))
    if update is None:
        return ApproximationOutcome("no approximate update: no served adapter was trained on the records")
    registered = publish(ctx.ws, ctx.registry, update.version, [], parent=current, approximation=update.approximation)
    return ApproximationOutcome("APPROXIMATE influence update; the exact path follows", registered,
                                {cid: s.report() for cid, s in update.solutions.items()})


def exclude_requests(ctx: Context, model: str, request_ids: list[str]) -> ExclusionOutcome:
    """One exact exclusion version of `model` for every request not yet excluded there, certified
    and aliased (`request_excluded`), also when an earlier exclusion already removed its shard (so
    every request gets a certificate naming it). When nothing servable would remain, the
    registered versions holding the records are purged and `exclusion_deferred` says the retrain
    restores service."""
    if not _not_excluded(ctx, model, request_ids):
        return ExclusionOutcome("already excluded")
    with model_lock(ctx.ws, model, urgent=True):
        current = settle(ctx, model)
        pending = _not_excluded(ctx, model, request_ids)
        if not pending:
            return ExclusionOutcome("already excluded")
        receipts = receipts_of(ctx.ws, pending)
        excluded = exclude(ctx.ws, current, receipts, attest=True)
        if excluded is not None:
            registered, purged = finish_exclusion(ctx, excluded, receipts, current)
            return ExclusionOutcome(f"excluded in v{excluded.version}", registered, purged)
        purge(ctx.ws, ctx.registry, model, receipts, local=False)
        reason = (f"excluding the affected shards would leave {model} nothing to serve: its registered "
                  "versions holding the records are purged, and the retrain restores it")
        with open_ledger(ctx.ws) as ledger:
            ledger.append_many([entries.exclusion_deferred(r, model, reason) for r in pending])
        return ExclusionOutcome("nothing left to serve until the retrain")


def restore_requests(ctx: Context, model: str, shards: Sequence[int], request_ids: list[str],
                     jobs: Sequence[str] = (), progress=None) -> RestoreOutcome:  # type: ignore[no-untyped-def]
    """Rebuild `shards` of `model` without the requests' records (one coalesced retrain from the
    model's newest version, which holds every other shard's latest state), certify it and log
    `request_restored` per request and shard. A shard the newest version already serves without
    the records (S3T's next valid prefix, or an earlier coalesced retrain) needs no retrain,
    only its entries. Raises ExclusionPending until the requests' exclusion is logged: the fast
    path goes first and the retrain never races it."""
    todo = _unrestored(ctx, model, shards, request_ids)
    if not todo:
        return RestoreOutcome("already restored")
    with open_ledger(ctx.ws) as ledger:  # an exclusion that failed for good: the retrain is the way out
        if any(ledger.find(entries.excluded_key(r, model)) is None and ledger.find(entries.failed_key(r)) is None
               for r in {r for rids in todo.values() for r in rids}):
            raise ExclusionPending(f"{model}/{list(shards)}: waiting for the exclusion of its requests")
    with model_lock(ctx.ws, model):
        newest = settle(ctx, model)
        todo = _unrestored(ctx, model, shards, request_ids)
        if not todo:
            return RestoreOutcome("already restored")
        pending = sorted({r for rids in todo.values() for r in rids})
        receipts = receipts_of(ctx.ws, pending)
        clean = sorted(served_clean(newest, todo, receipts))
        if clean:
            registry_version, sha = registration(ctx.ws, newest)
            log_restored(ctx, newest, registry_version, sha, {"shards": clean, "requests": pending, "jobs": list(jobs)})
        dirty = [s for s in todo if s not in clean]
        if not dirty:
            return RestoreOutcome(f"already served without the records in v{newest.version}")
        intent = Journal(ctx.ws, model).write(newest.version, dirty, pending, list(jobs))
        version = restore(ctx.ws, newest, receipts, shards=set(dirty), progress=progress)
        registered, purged = finish_restore(ctx, version, intent, newest)
        return RestoreOutcome(f"restored v{version.version}", registered, purged)


def _not_excluded(ctx: Context, model: str, request_ids: list[str]) -> list[str]:
    with open_ledger(ctx.ws) as ledger:
        return [r for r in request_ids if ledger.find(entries.excluded_key(r, model)) is None]


def _unrestored(ctx: Context, model: str, shards: Sequence[int], request_ids: list[str]) -> dict[int, list[str]]:
    """shard -> the requests not yet restored there."""
    with open_ledger(ctx.ws) as ledger:
        todo = {s: [r for r in request_ids if ledger.find(entries.restored_key(r, model, s)) is None] for s in shards}
    return {s: rids for s, rids in todo.items() if rids}
