"""The stages of a received request, one function each: plan, exclude, approximate, restore.

This is the one path: `erasure forget` / `rectify` call these in sequence, and the pipeline's
planner, excluder and executor call the same functions from their consumer loops (the planner
`hold`s an approximate update's inputs, the approximator worker makes it beside the exact path). Each step
logs its own stage entries (`ledger.entries`), so `erasure status` reads the same stages for a
request whichever way it came, and each is idempotent by request id: a repeated call finds the
stage done and changes nothing.

Steps that make versions take the model's lock (exclusions ahead of retrains) and first finish
whatever a crash left (`settle`). The approximate step solves before it takes the lock and never
goes ahead of the exact path: it publishes only if the model has not moved on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ledger import entries
from ledger.errors import BadInput, ServiceError
from ledger.log import open_ledger
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations import approximate as influence
from unlearning.operations.approximate import Held, latest_exact
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
    report: dict = field(default_factory=dict)  # per updated component: the solver's report and `measured`
    error: str | None = None  # why nothing was published

    @classmethod
    def skipped(cls, why: str) -> "ApproximationOutcome":
        return cls(f"no approximate update: {why}", error=why)


@dataclass
class PendingUpdate:
    """An approximate update to make for one request (`hold`); its records live only here."""

    model: str
    receipt: Receipt
    old: list[StoredRecord]  # the records as trained (shredded or replaced in the store)
    new: list[Record]  # their corrections (a rectification)
    held: Held | None  # what the solve needs of the version that held them; None: no update
    reason: str | None = None  # why there is no update (`held` None)


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


def hold(ctx: Context, model: str, receipt: Receipt, old: list[StoredRecord], new: list[Record]) -> PendingUpdate:
    """What the approximate update of `model` for one request needs, read into memory now, under
    no lock: the records (`old` as trained, held before the store shredded or replaced them;
    `new` their corrections) and the served adapters of the model's newest exact version that
    trained on them. Call it before the request's exclusion, which purges that version."""
    for _ in range(3):
        version = None
        try:
            version = latest_exact(ctx.ws, model)
            held = influence.hold(version, old)
        except (BadInput, OSError) as err:
            reason = str(err)
            if version is not None and version.path.exists():  # refused (e.g. an unsupported method)
                break
            continue  # a version purged by another request's exclusion while it was read: again
        reason = None if held else "no served adapter was trained on the records"
        return PendingUpdate(model, receipt, old, new, held, reason)
    return PendingUpdate(model, receipt, old, new, None, reason)


def approximate(ctx: Context, pending: PendingUpdate, settings: SolverSettings,
                ready: Callable[[], str | None] | None = None) -> ApproximationOutcome:
    """Publish the APPROXIMATE influence update of `pending.model` for one request, and log
    `request_approximated`; off the exact path: the solve takes no lock; then `ready` (the
    service waits there for the request's exclusion; a reason returned skips the update), then,
    under the model's lock (not urgent), the update is published onto the newest exact version
    unless the model has moved on (`approximate.moved_on`: the exact version came first, a
    retrain since, another erasure in an updated adapter). Nothing is published either when no
    served adapter saw the records or the solve is refused; the exact path runs either way."""
    return _logged(ctx, pending, _approximate(ctx, pending, settings, ready))


def give_up(ctx: Context, pending: PendingUpdate, reason: str) -> ApproximationOutcome:
    """No approximate update for `pending` (e.g. the service stopped: its records are lost with
    it); `request_approximated` says why."""
    return _logged(ctx, pending, ApproximationOutcome.skipped(reason))


def _logged(ctx: Context, pending: PendingUpdate, result: ApproximationOutcome) -> ApproximationOutcome:
    registered = result.registered
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([entries.request_approximated(
            pending.receipt.request_id, pending.model, result.reason, registered and registered.local_version,
            registered and registered.version, registered and registered.certificate_sha256)])
    return result


def _approximate(ctx: Context, pending: PendingUpdate, settings: SolverSettings,
                 ready: Callable[[], str | None] | None) -> ApproximationOutcome:
    if pending.held is None:
        return ApproximationOutcome.skipped(pending.reason or "nothing to update")
    try:
        update = influence.solve(ctx.ws, pending.held, pending.old, pending.new, [pending.receipt], settings)
    except BadInput as err:
        return ApproximationOutcome.skipped(str(err))
    reason = ready() if ready is not None else None
    if reason is not None:
        return ApproximationOutcome.skipped(reason)
    with model_lock(ctx.ws, pending.model):
        newest = settle(ctx, pending.model)
        reason = influence.moved_on(ctx.ws, update, newest)
        if reason is not None:
            return ApproximationOutcome.skipped(reason)
        version = influence.build(ctx.ws, update, newest)
        registered = publish(ctx.ws, ctx.registry, version.version, [], parent=newest,
                             approximation=version.approximation)
    return ApproximationOutcome("APPROXIMATE influence update; the exact path supersedes it", registered,
                                version.approximation["updated"])


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
