"""An executor: `erasure.jobs` -> restored (retrained, certified) versions (design §2).

Jobs of one model/shard that arrive within `window_s` of the first are coalesced into one
retrain; when several shards' groups are due, the most urgent goes first: the one holding the
request with the earliest deadline in force (read from the ledger: the policy's or the sender's,
extended), then the one waiting longest. The retrain is the restore step (`unlearning.operations.steps.restore_requests`): under the model's
lock it first finishes anything a crash left (`settle`), then restores the shard from the
model's newest version, which already holds every other shard's latest state. A job whose
requests are all restored for the shard is done; a shard that the newest version already
serves without the records (an earlier coalesced retrain covered it) needs no retrain, only
its ledger entries.

A retrain waits until its requests' exclusion is logged (`ExclusionPending`, retried): the fast
path goes first and the retrain never races it. A job that cannot succeed (the consumer loop's
rules: a permanent error, or transient ones past the retry budget) goes to the jobs DLQ and its
requests get `request_failed` and a `failed` event (`stages.dead_letter_jobs`).

Exactly once: the restore is announced in the model's journal before it starts; a process
killed during the retrain leaves no version (the draft is discarded) and the redelivered job
retrains again; one killed after the version was made has it certified by the next lock holder
(`settle`), and the redelivered job then finds the shard restored. Ledger entries have natural
keys, so neither path logs anything twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from consumers import stages
from consumers.stages import Outbox
from consumers.topics import Topics
from ledger.errors import BadInput
from producers.schemas import Job, parse
from unlearning.operations.context import Context
from unlearning.operations.deadlines import deadlines_of
from unlearning.operations.steps import restore_requests


@dataclass
class _Group:
    since: float  # monotonic time of the first job
    records: list = field(default_factory=list)
    deadline: datetime | None = None  # the earliest deadline of the group's requests

    def urgency(self) -> tuple:
        """Sorts the most urgent first: an earlier deadline, then no deadline, then the older group."""
        return (self.deadline is None, self.deadline.timestamp() if self.deadline else 0.0, self.since)


class Executor:
    name = "executor"

    def __init__(self, ctx: Context, topics: Topics, window_s: float = 2.0) -> None:
        self.ctx, self.topics, self.window_s = ctx, topics, window_s
        self._groups: dict[tuple[str, int], _Group] = {}
        self._malformed: list = []
        import unlearning.operations.build  # noqa: F401 - torch and transformers load at start, not in the first job

    def take(self, records: list) -> None:
        jobs: list[tuple[object, Job]] = []
        for record in records:
            try:
                job: Job = parse(record.value, Job)  # type: ignore[assignment]
            except BadInput:
                self._malformed.append(record)  # logged when handled
                continue
            jobs.append((record, job))
        deadlines = deadlines_of(self.ctx.ws, [r for _, job in jobs for r in job.request_ids]) if jobs else {}
        for record, job in jobs:
            group = self._groups.setdefault((job.model, job.shard), _Group(time.monotonic()))
            group.records.append(record)
            for due in (deadlines[r] for r in job.request_ids):
                if due is not None and (group.deadline is None or due < group.deadline):
                    group.deadline = due

    def ready(self, now: float) -> list | None:
        if self._malformed:
            unit, self._malformed = self._malformed, []
            return unit
        due = [key for key, group in self._groups.items() if now - group.since >= self.window_s]
        if not due:
            return None
        return self._groups.pop(min(due, key=lambda key: self._groups[key].urgency())).records

    def forget(self, partitions: set) -> None:
        self._malformed = [r for r in self._malformed if (r.topic, r.partition) not in partitions]
        for key, group in list(self._groups.items()):
            group.records = [r for r in group.records if (r.topic, r.partition) not in partitions]
            if not group.records:
                del self._groups[key]

    def handle(self, unit: list) -> Outbox:
        outbox = Outbox(self.topics)
        jobs = stages.parse_jobs(unit, outbox)  # a unit of malformed jobs has none: only their DLQ copies
        if not jobs:
            return outbox
        model, shard = jobs[0].model, jobs[0].shard
        request_ids = list(dict.fromkeys(r for job in jobs for r in job.request_ids))
        outcome = restore_requests(self.ctx, model, [shard], request_ids, [job.job_id for job in jobs]).outcome
        stages.restored_events(self.ctx.ws, model, request_ids, outbox)
        outbox.lines.extend(f"job {job.job_id} ({model}/{shard}, {len(job.request_ids)} requests): {outcome}"
                            for job in jobs)
        return outbox

    def dead_letter(self, records: list, reason: str) -> Outbox:
        outbox = Outbox(self.topics)
        stages.dead_letter_jobs(self.ctx.ws, records, reason, outbox)
        return outbox
