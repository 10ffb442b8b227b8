"""The excluder (role `planner`, consumer group `erasure-excluder` on `erasure.jobs`): the fast,
exact path of design §2.

It takes every job planned since its last unit and, per model, makes one exclusion version
without the components that saw any of their records; the version is certified, registered
and aliased (`finish_exclusion`) before the offsets are committed, so every request gets a
certificate naming it within seconds, also when an earlier exclusion already removed its shard.
When no shard would be left to serve, the registered versions holding the records are purged
and the retrain restores service.

Exclusions run apart from planning so that planning throughput never waits for the registry,
and one exclusion covers everything planned meanwhile. They go ahead of retrains on the model
lock; executors retrain a shard only once its requests' exclusion is logged.
"""

from __future__ import annotations

from consumers import stages
from consumers.loop import Batching, is_transient
from consumers.stages import Outbox
from consumers.topics import Topics
from consumers.versions import Context, excluded_events, finish_exclusion, settle
from ledger.log import open_ledger
from unlearning.operations.forget import exclude, lookup_receipt, purge
from unlearning.versions.lock import model_lock


class Excluder(Batching):
    name = "excluder"

    def __init__(self, ctx: Context, topics: Topics) -> None:
        super().__init__()
        self.ctx, self.topics = ctx, topics

    def handle(self, unit: list) -> Outbox:
        outbox = Outbox(self.topics)
        jobs = stages.parse_jobs(unit)
        for model in sorted({job.model for job in jobs}):
            request_ids = list(dict.fromkeys(r for job in jobs if job.model == model for r in job.request_ids))
            try:
                outcome = self._exclude(model, request_ids, outbox)
            except Exception as err:
                if is_transient(err):
                    raise
                outcome = f"failed: {type(err).__name__}: {err}"
                stages.fail(self.ctx.ws, request_ids, model, outcome, outbox)
            excluded_events(self.ctx, model, request_ids, outbox)  # also those a redelivery finds done
            outbox.lines.extend(f"job {job.job_id} ({model}/{job.shard}, {len(job.request_ids)} requests): {outcome}"
                                for job in jobs if job.model == model)
        return outbox

    def _pending(self, model: str, request_ids: list[str]) -> list[str]:
        with open_ledger(self.ctx.ws) as ledger:
            return [r for r in request_ids if ledger.find(stages.excluded_key(r, model)) is None]

    def _exclude(self, model: str, request_ids: list[str], outbox: Outbox) -> str:
        if not self._pending(model, request_ids):
            return "already excluded"
        with model_lock(self.ctx.ws, model, urgent=True):
            current = settle(self.ctx, model, outbox)
            pending = self._pending(model, request_ids)
            if not pending:
                return "already excluded"
            receipts = [lookup_receipt(self.ctx.ws, r) for r in pending]
            excluded = exclude(self.ctx.ws, current, receipts, attest=True)  # type: ignore[arg-type]
            if excluded is not None:
                finish_exclusion(self.ctx, excluded, receipts, current, outbox)  # type: ignore[arg-type]
                return f"excluded in v{excluded.version}"
            purge(self.ctx.ws, self.ctx.registry, model, receipts, local=False)  # type: ignore[arg-type]
            reason = (f"excluding the affected shards would leave {model} nothing to serve: its registered "
                      "versions holding the records are purged, and the retrain restores it")
            with open_ledger(self.ctx.ws) as ledger:
                ledger.append_many([("exclusion_deferred", {"request_id": r, "model": model, "reason": reason},
                                     stages.excluded_key(r, model)) for r in pending])
            return "nothing left to serve until the retrain"
