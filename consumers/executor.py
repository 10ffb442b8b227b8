"""An executor: `erasure.jobs` -> restored (retrained, certified) versions (design §2).

Jobs of one model/shard that arrive within `window_s` of the first are coalesced into one
retrain. Under the model's lock the executor first finishes anything a crash left (`settle`),
then restores the shard from the model's newest version, which already holds every other
shard's latest state. A job whose requests are all restored for the shard is done; a shard
that the newest version already serves without the records (an earlier coalesced retrain
covered it) needs no retrain, only its ledger entries.

Exactly once: the restore is announced in the model's journal before it starts; a process
killed during the retrain leaves no version (the draft is discarded) and the redelivered job
retrains again; one killed after the version was made has it certified by the next lock holder
(`settle`), and the redelivered job then finds the shard restored. Ledger entries have natural
keys, so neither path logs anything twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from consumers import stages
from consumers.loop import is_transient
from consumers.stages import Outbox
from consumers.topics import Topics
from consumers.versions import (
    Context, Journal, finish_restore, log_restored, model_lock, registered, restored_events, settle,
)
from ledger.errors import BadInput
from ledger.log import open_ledger
from producers.schemas import Job, parse
from unlearning.certify import Receipt
from unlearning.forget import affected_components, lookup_receipt, restore
from unlearning.model_store import ModelVersion

log = logging.getLogger("erasure.serve")


@dataclass
class _Group:
    since: float  # monotonic time of the first job
    records: list = field(default_factory=list)


class Executor:
    name = "executor"

    def __init__(self, ctx: Context, topics: Topics, window_s: float = 2.0) -> None:
        self.ctx, self.topics, self.window_s = ctx, topics, window_s
        self._groups: dict[tuple[str, int], _Group] = {}
        self._malformed: list = []

    def take(self, records: list) -> None:
        for record in records:
            try:
                job = parse(record.value, Job)
            except BadInput as err:  # only the planner writes jobs: a bad one is a bug, never retried
                log.error("executor: skipping malformed job at %s/%d/%d: %s", record.topic, record.partition,
                          record.offset, err)
                self._malformed.append(record)
                continue
            self._groups.setdefault((job.model, job.shard), _Group(time.monotonic())).records.append(record)

    def ready(self, now: float) -> list | None:
        if self._malformed:
            unit, self._malformed = self._malformed, []
            return unit
        due = [key for key, group in self._groups.items() if now - group.since >= self.window_s]
        if not due:
            return None
        return self._groups.pop(min(due, key=lambda key: self._groups[key].since)).records

    def forget(self, partitions: set) -> None:
        self._malformed = [r for r in self._malformed if (r.topic, r.partition) not in partitions]
        for key, group in list(self._groups.items()):
            group.records = [r for r in group.records if (r.topic, r.partition) not in partitions]
            if not group.records:
                del self._groups[key]

    def handle(self, unit: list) -> Outbox:
        outbox = Outbox(self.topics)
        jobs = []
        for record in unit:
            try:
                jobs.append(parse(record.value, Job))
            except BadInput:
                continue  # logged when taken
        if not jobs:
            return outbox
        model, shard = jobs[0].model, jobs[0].shard
        request_ids = list(dict.fromkeys(r for job in jobs for r in job.request_ids))
        job_ids = [job.job_id for job in jobs]
        try:
            outcome = self._restore(model, shard, request_ids, job_ids, outbox)
        except Exception as err:
            if is_transient(err):
                raise
            outcome = f"failed: {type(err).__name__}: {err}"
            self._fail(model, shard, request_ids, outcome, outbox)
        restored_events(self.ctx, model, request_ids, outbox)
        outbox.lines.extend(f"job {job.job_id} ({model}/{shard}, {len(job.request_ids)} requests): {outcome}"
                            for job in jobs)
        return outbox

    def _todo(self, model: str, shard: int, request_ids: list[str]) -> list[str]:
        with open_ledger(self.ctx.ws) as ledger:
            return [r for r in request_ids if ledger.find(stages.restored_key(r, model, shard)) is None]

    def _restore(self, model: str, shard: int, request_ids: list[str], job_ids: list[str], outbox: Outbox) -> str:
        if not self._todo(model, shard, request_ids):
            return "already restored"
        with model_lock(self.ctx.ws, model):
            newest = settle(self.ctx, model, outbox)
            todo = self._todo(model, shard, request_ids)
            if not todo:
                return "already restored"
            receipts = [lookup_receipt(self.ctx.ws, r) for r in todo]
            if _serves_clean(newest, shard, receipts):
                registry_version, sha = registered(self.ctx, newest)
                log_restored(self.ctx, newest, registry_version, sha, {"shard": shard, "requests": todo, "jobs": job_ids})
                return f"shard already restored in v{newest.version}"
            intent = Journal(self.ctx.ws, model).write(newest.version, shard, todo, job_ids)
            version = restore(self.ctx.ws, newest, receipts, shards={shard})
            finish_restore(self.ctx, version, intent, outbox)
            return f"restored v{version.version}"

    def _fail(self, model: str, shard: int, request_ids: list[str], reason: str, outbox: Outbox) -> None:
        with open_ledger(self.ctx.ws) as ledger:
            ledger.append_many([("request_failed", {"request_id": r, "model": model, "shard": shard, "reason": reason},
                                 stages.failed_key(r)) for r in request_ids])
        for r in request_ids:
            outbox.event(r, "failed", model=model, shards=[shard], reason=reason)


def _serves_clean(version: ModelVersion, shard: int, receipts: list[Receipt]) -> bool:
    """Does `version` serve `shard` with none of the erased records (nothing left to retrain)?"""
    shard_of = {c.id: c.meta["shard"] for c in version.components}
    affected = affected_components(version, receipts)
    return (any(shard_of[c] == shard for c in version.aggregate)
            and not any(shard_of[c] == shard for c in affected))
