"""The planner: `erasure.requests` -> ledger, exclusion versions, `erasure.jobs` (design §2).

It handles whatever the last poll brought as one batch, so the per-request cost is a few ledger
rows and the per-batch cost (one ledger and one record-store transaction, one exclusion version
per affected model, one Kafka transaction) is shared:

1. parse: a bad message goes to the DLQ with the reason, gets a `request_rejected` entry and a
   `rejected` event; a request for an unknown model or subject is rejected the same way (no DLQ);
2. receive: log each request with its commitments and crypto-shred its records (`receive_many`);
3. plan: the shards of each model that trained on the records (record-store provenance: a
   record's shard never changes, and a restore running meanwhile may already have dropped the
   shard from the newest version, so the newest version's manifests would miss it);
4. exclude: per model, under its lock, one exclusion version for the batch's requests, then
   certified, registered and aliased; every request gets a certificate naming it, also when an
   earlier exclusion already removed its shard. When no shard would be left to serve, the
   registered versions holding the records are purged and the retrain restores service;
5. one job per affected model/shard, keyed model/shard, for the executors.

Every step is idempotent by request id, so a redelivered batch repeats only events.
"""

from __future__ import annotations

import hashlib

from consumers import stages
from consumers.loop import is_transient
from consumers.stages import Outbox
from consumers.topics import Topics
from consumers.versions import Context, finish_exclusion, model_lock, settle
from ledger.errors import BadInput
from ledger.log import open_ledger
from producers.schemas import ErasureRequest, Job, parse_request
from unlearning.certify import Receipt
from unlearning.forget import Request, exclude, purge, receive_many
from unlearning.records import RecordStore


class Planner:
    name = "planner"

    def __init__(self, ctx: Context, topics: Topics) -> None:
        self.ctx, self.topics = ctx, topics
        self._buffer: list = []

    def take(self, records: list) -> None:
        self._buffer.extend(records)

    def ready(self, now: float) -> list | None:
        unit, self._buffer = self._buffer, []
        return unit or None

    def forget(self, partitions: set) -> None:
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) not in partitions]

    def handle(self, unit: list) -> Outbox:
        outbox = Outbox(self.topics)
        rejected: list[tuple[str, str, object]] = []  # request id, reason, message
        parsed: list[tuple[object, ErasureRequest]] = []
        handled: list[str] = []  # request id of each message, for its log line
        for message in unit:
            try:
                parsed.append((message, parse_request(message.value)))
                handled.append(parsed[-1][1].request_id)
            except BadInput as err:
                handled.append(_request_id_of(message))
                rejected.append((handled[-1], str(err), message))
                outbox.send(self.topics.dlq, message.key, message.value or b"", [
                    ("erasure.reason", str(err).encode()),
                    ("erasure.source", f"{message.topic}/{message.partition}/{message.offset}".encode())])
        models = self.ctx.model_names()
        valid = []
        for message, req in parsed:
            if req.model is not None and req.model not in models:
                rejected.append((req.request_id, f"no model named {req.model!r}", message))
            else:
                valid.append((message, req))
        results = receive_many(self.ctx.ws, [Request(req.request_id, req.subject_id,
                                                     tuple(req.record_ids) if req.record_ids else None,
                                                     req.model, _source(message, req)) for message, req in valid])
        accepted: dict[str, tuple[ErasureRequest, Receipt]] = {}
        for (message, req), result in zip(valid, results):
            if isinstance(result, BadInput):
                rejected.append((req.request_id, str(result), message))
            else:
                accepted[req.request_id] = (req, result)
        self._reject(rejected, outbox)
        plans = self._plan(accepted, models, outbox)
        for model in sorted({m for plan in plans.values() for m in plan}):
            self._model_step(model, {rid: plan[model] for rid, plan in plans.items() if model in plan}, accepted, outbox)
        outbox.lines.extend(f"request {rid}: {outbox.last[rid]}" for rid in handled)
        return outbox

    def _reject(self, rejected: list, outbox: Outbox) -> None:
        if not rejected:
            return
        with open_ledger(self.ctx.ws) as ledger:
            ledger.append_many([("request_rejected", {
                "request_id": rid, "reason": reason,
                "kafka": {"topic": m.topic, "partition": m.partition, "offset": m.offset},  # type: ignore[attr-defined]
            }, stages.rejected_key(rid)) for rid, reason, m in rejected])
        for rid, reason, _ in rejected:
            outbox.event(rid, "rejected", reason=reason)

    def _plan(self, accepted: dict, models: list[str], outbox: Outbox) -> dict[str, dict[str, list[int]]]:
        """Per request: model -> the shards that trained on its records; logged, and events."""
        plans = {}
        with RecordStore.open(self.ctx.ws) as store:
            for rid, (req, receipt) in accepted.items():
                rows = store.provenance(bytes.fromhex(c) for c in receipt.commitments)
                scope = [req.model] if req.model else models
                # shard -1: a component without shard (APA's aggregator); every restore rebuilds those
                shards = {m: sorted({p.shard for p in rows if p.model == m and p.shard >= 0}) for m in scope}
                plans[rid] = {m: s for m, s in shards.items() if s}
        with open_ledger(self.ctx.ws) as ledger:
            ledger.append_many([("request_planned", {"request_id": rid, "models": plan}, stages.planned_key(rid))
                                for rid, plan in plans.items()])
            for rid, (req, receipt) in accepted.items():
                timing = _timing(req)
                outbox.event(rid, "received", at=stages.read(ledger, stages.received_key(rid))["at"], **timing)
                planned_at = stages.read(ledger, stages.planned_key(rid))["at"]
                if not plans[rid]:
                    outbox.event(rid, "planned", at=planned_at, reason="no model was trained on these records: "
                                 "nothing to exclude or retrain", **timing)
                for model, shards in plans[rid].items():
                    outbox.event(rid, "planned", at=planned_at, model=model, shards=shards, **timing)
        return plans

    def _model_step(self, model: str, shards: dict[str, list[int]], accepted: dict, outbox: Outbox) -> None:
        """Exclusion (certified) and jobs for one model's share of the batch."""
        try:
            with model_lock(self.ctx.ws, model):
                current = settle(self.ctx, model, outbox)
                with open_ledger(self.ctx.ws) as ledger:
                    pending = [rid for rid in shards if ledger.find(stages.excluded_key(rid, model)) is None]
                receipts = [accepted[rid][1] for rid in pending]
                excluded = exclude(self.ctx.ws, current, receipts, attest=True) if pending else None
                if excluded is not None:
                    finish_exclusion(self.ctx, excluded, receipts, current, outbox)
                elif pending:
                    purge(self.ctx.ws, self.ctx.registry, model, receipts, local=False)
                    for rid in pending:
                        outbox.event(rid, "planned", model=model, shards=shards[rid], reason=(
                            f"excluding shards {shards[rid]} would leave {model} nothing to serve: its registered "
                            "versions holding the records are purged, and the retrain restores it"))
        except Exception as err:
            if is_transient(err):
                raise
            self._fail(list(shards), model, err, outbox)
            return
        self._jobs(model, shards, outbox)

    def _jobs(self, model: str, shards: dict[str, list[int]], outbox: Outbox) -> None:
        with open_ledger(self.ctx.ws) as ledger:
            for shard in sorted({s for ss in shards.values() for s in ss}):
                rids = [rid for rid, ss in shards.items()
                        if shard in ss and ledger.find(stages.restored_key(rid, model, shard)) is None]
                if rids:
                    job_id = hashlib.sha256(repr((model, shard, sorted(rids))).encode()).hexdigest()[:24]
                    job = Job(job_id=job_id, model=model, shard=shard, request_ids=rids)
                    outbox.send(self.topics.jobs, job.key, job.to_bytes())

    def _fail(self, request_ids: list[str], model: str, err: Exception, outbox: Outbox) -> None:
        reason = f"{model}: {type(err).__name__}: {err}"
        with open_ledger(self.ctx.ws) as ledger:
            ledger.append_many([("request_failed", {"request_id": rid, "model": model, "reason": reason},
                                 stages.failed_key(rid)) for rid in request_ids])
        for rid in request_ids:
            outbox.event(rid, "failed", model=model, reason=reason)


def _request_id_of(message) -> str:  # type: ignore[no-untyped-def]
    """The request id a malformed message names, else its Kafka coordinates."""
    import json

    try:
        rid = json.loads(message.value).get("request_id")
    except (TypeError, ValueError, AttributeError):
        rid = None
    if isinstance(rid, str) and 0 < len(rid) <= 256:
        return rid
    return stages.coordinates_id(message.topic, message.partition, message.offset)


def _timing(req: ErasureRequest) -> dict:
    return {"requested_at": req.requested_at, "deadline": req.deadline}


def _source(message, req: ErasureRequest) -> dict:  # type: ignore[no-untyped-def]
    return {"via": "kafka", "topic": message.topic, "partition": message.partition, "offset": message.offset,
            "requested_at": req.requested_at.isoformat(), "deadline": req.deadline.isoformat() if req.deadline else None,
            "legal_basis": req.legal_basis, "requester": req.requester}
