"""`erasure forget` and `erasure rectify`: the pipeline's stages run synchronously (design §2).

receive → plan → exclude → (approximate) → restore, each the same operation the planner,
excluder, approximator and executor call (`unlearning.operations.steps`), so the ledger holds
the same stage entries and `erasure status` tells the same story for a request from the CLI or
from Kafka. Every step is idempotent: the same command twice changes nothing the second time.

The exclusion comes first, as in the pipeline; here the steps run one after the other, so the
retrain starts only after the approximate update's solve, where `erasure serve` solves beside
the exact path (`consumers.approximator`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ledger.errors import BadInput, ServiceError
from ledger.workspace import Workspace
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations import steps
from unlearning.operations.approximate import check_supported
from unlearning.operations.context import Context
from unlearning.operations.publish import registered_elsewhere, registry_unready
from unlearning.operations.receive import (
    Receipt, check_trainable, correction, default_request_id, logged_rectification, lookup_receipt, receive,
    receive_rectification, rectify_request_id,
)
from unlearning.versions.store import ModelVersion


@dataclass
class ForgetResult:
    request_id: str
    commitments: int
    approximate_version: int | None = None  # registry version numbers, of versions made by this call
    excluded_version: int | None = None
    restored_version: int | None = None  # None also when no retrain was needed (S3T's next valid prefix)
    purged_versions: list[int] = field(default_factory=list)  # local version numbers
    timings: dict[str, float] = field(default_factory=dict)
    approximation: dict = field(default_factory=dict)  # per updated component: solver report
    approximate_error: str | None = None  # why no approximate version was published

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "commitments": self.commitments,
                "approximate_version": self.approximate_version, "approximation": self.approximation,
                "approximate_error": self.approximate_error,
                "excluded_version": self.excluded_version, "restored_version": self.restored_version,
                "purged_versions": self.purged_versions, "timings": self.timings}


def forget(ws: Workspace, name: str, subject_id: str, record_ids: list[str] | None = None,
           request_id: str | None = None, retrain: bool = True, progress=None,  # type: ignore[no-untyped-def]
           approximate: SolverSettings | None = None, legal_basis: str | None = None) -> ForgetResult:
    """Erase a subject (or some of its records) from model `name`; `legal_basis` sets the deadline
    policy (`deadlines`; default GDPR Art. 17).

    With `approximate`, an influence-function update of the served adapters (APPROXIMATE, from
    the records held in memory after the store shredded them) is published after the exclusion
    and before the retrain, which supersedes it; the retrain starts after the solve.
    """
    start = time.monotonic()
    ctx = Context(ws)
    current = _ready(ctx, name)  # BadInput for unknown models, before anything is logged
    request_id = request_id or default_request_id(ws, name, subject_id, record_ids)
    held: list[StoredRecord] = []  # the records as trained, for the approximate update (none left on a repeat)
    if lookup_receipt(ws, request_id) is None:
        with RecordStore.open(ws) as store:
            store.commitments_of(subject_id, record_ids)  # BadInput for unknown subjects, before any effect
            if approximate is not None:
                _check_approximate(current, retrain)
                held = [r for r in store.records("train")
                        if r.subject_id == subject_id and (not record_ids or r.record_id in record_ids)]
    source = {"via": "cli", **({"legal_basis": legal_basis} if legal_basis else {})}
    receipt = receive(ws, request_id, subject_id, record_ids, model=name, source=source)
    return _stages(ctx, name, receipt, held, [], approximate, retrain, progress, start)


def rectify(ws: Workspace, name: str, record_id: str, prompt: str | None = None, answer: str | None = None,
            request_id: str | None = None, progress=None,  # type: ignore[no-untyped-def]
            approximate: SolverSettings | None = None) -> ForgetResult:
    """Correct a record (query modification: a new prompt; response correction: a new answer).

    The record store replaces its content under a fresh commitment; the old commitment is
    logged like an erasure, so the exact path (exclusion, retrain of the affected shard on the
    corrected data, purge) is the erasure's. With `approximate`, an influence update from the
    old to the new content is published between the exclusion and the retrain, as in `forget`.
    """
    start = time.monotonic()
    ctx = Context(ws)
    current = _ready(ctx, name)
    old, new = correction(ws, record_id, prompt, answer)
    request_id = request_id or rectify_request_id(ws, name, new)
    receipt = logged_rectification(ws, request_id, old, new)
    if receipt is None:
        check_trainable([current.config], new)  # before any effect
        if approximate is not None:
            _check_approximate(current, retrain=True)
    receipt = receive_rectification(ws, request_id, old, new, name, receipt)
    first = old.commitment.hex() in receipt.commitments  # the old content is at hand (not a repeat)
    held_old, held_new = ([old], [new]) if approximate is not None and first else ([], [])
    return _stages(ctx, name, receipt, held_old, held_new, approximate, True, progress, start)


def _stages(ctx: Context, name: str, receipt: Receipt, old: list[StoredRecord], new: list[Record],
            approximate: SolverSettings | None, retrain: bool, progress, start: float) -> ForgetResult:  # type: ignore[no-untyped-def]
    """plan → exclude → approximate → restore for one received request. The approximate
    update's inputs are read before the exclusion purges the version that held the records."""
    result = ForgetResult(receipt.request_id, len(receipt.commitments))
    result.timings["received_s"] = _since(start)
    shards = steps.plan(ctx, [(receipt.request_id, [name], receipt)])[receipt.request_id].get(name, [])
    purged: set[int] = set()
    pending = steps.hold(ctx, name, receipt, old, new) if old and approximate is not None else None
    if shards:
        exclusion = steps.exclude_requests(ctx, name, [receipt.request_id])
        purged.update(exclusion.purged)
        if exclusion.registered is not None:
            result.excluded_version = exclusion.registered.version
            result.timings["excluded_s"] = _since(start)
    if pending is not None and approximate is not None:
        approximation = steps.approximate(ctx, pending, approximate)
        result.approximate_error = approximation.error
        if approximation.registered is not None:
            result.approximate_version = approximation.registered.version
            result.approximation = approximation.report
            result.timings["approximate_s"] = _since(start)
    if shards and retrain:
        restoration = steps.restore_requests(ctx, name, shards, [receipt.request_id], progress=progress)
        purged.update(restoration.purged)
        if restoration.registered is not None:
            result.restored_version = restoration.registered.version
            result.timings["restored_s"] = _since(start)
    result.purged_versions = sorted(purged)
    result.timings["total_s"] = _since(start)
    return result


def _ready(ctx: Context, name: str) -> ModelVersion:
    """The model's newest exact version, after finishing what a crash left (under the model's
    lock, so a pipeline retrain of the model goes first) and certifying a version trained without
    a registry at hand; BadInput (unknown model) or ServiceError (no keys, no registry, or the
    model registered in a registry other than the embedded one in use) before the request has
    any effect."""
    elsewhere = registered_elsewhere(ctx.ws, ctx.registry, name)
    if elsewhere is not None:
        raise ServiceError(elsewhere)
    current = steps.settle_model(ctx, name)
    unready = registry_unready(ctx.ws)
    if unready is not None:
        raise ServiceError(unready)
    return current


def _check_approximate(version: ModelVersion, retrain: bool) -> None:
    check_supported(version)
    if not retrain:
        raise BadInput("an approximate update is always followed by the exact retrain: drop --no-retrain")


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


__all__ = ["ForgetResult", "forget", "rectify"]
