"""The excluder (role `planner`, consumer group `erasure-excluder` on `erasure.jobs`): the fast,
exact path of design §2.

It takes every job planned since its last unit and, per model, runs the exclusion step
(`unlearning.operations.steps.exclude_requests`): one exclusion version without the components
that saw any of their records, certified, registered and aliased before the offsets are
committed, so every request gets a certificate naming it within seconds, also when an earlier
exclusion already removed its shard. When no shard would be left to serve, the registered
versions holding the records are purged and the retrain restores service.

An exclusion that fails for good fails the unit: the consumer loop retries its jobs one by one
and sends those that fail again to the jobs DLQ, their requests `failed`
(`stages.dead_letter_jobs`); the retrain still restores them.

Exclusions run apart from planning so that planning throughput never waits for the registry,
and one exclusion covers everything planned meanwhile. They go ahead of retrains on the model
lock; executors retrain a shard only once its requests' exclusion is logged.
"""

from __future__ import annotations

from consumers import stages
from consumers.loop import Batching
from consumers.stages import Outbox
from consumers.topics import Topics
from unlearning.operations.context import Context
from unlearning.operations.steps import exclude_requests


class Excluder(Batching):
    name = "excluder"

    def __init__(self, ctx: Context, topics: Topics) -> None:
        super().__init__()
        self.ctx, self.topics = ctx, topics

    def handle(self, unit: list) -> Outbox:
        outbox = Outbox(self.topics)
        jobs = stages.parse_jobs(unit, outbox)
        for model in sorted({job.model for job in jobs}):
            request_ids = list(dict.fromkeys(r for job in jobs if job.model == model for r in job.request_ids))
            outcome = exclude_requests(self.ctx, model, request_ids).outcome
            stages.excluded_events(self.ctx.ws, model, request_ids, outbox)  # also those a redelivery finds done
            outbox.lines.extend(f"job {job.job_id} ({model}/{job.shard}, {len(job.request_ids)} requests): {outcome}"
                                for job in jobs if job.model == model)
        return outbox

    def dead_letter(self, records: list, reason: str) -> Outbox:
        outbox = Outbox(self.topics)
        stages.dead_letter_jobs(self.ctx.ws, records, reason, outbox)
        return outbox
