"""The planner: `erasure.requests` -> ledger + `erasure.jobs` (design §2).

It handles whatever the last poll brought as one batch, in one ledger and one record-store
transaction and one Kafka transaction (jobs, events, offsets), so planning costs a few
milliseconds per request:

1. parse: a bad message (a null value, oversized, undecodable, not a valid request) goes to the
   DLQ with the reason, gets a `request_rejected` entry and a `rejected` event; a request for an
   unknown model or subject is rejected the same way (no DLQ). A message whose handling fails for
   good (the consumer loop's rules) takes the same path (`dead_letter`);
2. receive: log each request with its commitments and crypto-shred its records (`receive_many`);
   a rectification (v1.1 `rectify_record`) replaces the record's content under a new commitment
   and logs the old one, which the exact path then treats like an erased record (a correction
   the models in scope could not train on, e.g. longer than their max_length, is rejected first);
3. plan: the shards of each model that trained on the records (record-store provenance: a
   record's shard never changes, and a restore running meanwhile may already have dropped the
   shard from the newest version, so the newest version's manifests could miss it);
4. v1.1 `approximate` requests: per affected model (retrain and SISA), the records held in memory
   before step 2 and the served adapters of the model's newest exact version that trained on
   them, read now, before the jobs can lead to its exclusion and purge (`steps.hold`: no solve);
   they go to the approximator (`consumers.approximator`) once the batch's Kafka transaction is
   over, which solves beside the exact path and publishes the APPROXIMATE update after the
   request's exclusion, unless the retrain came first. Neither the batch nor the exact path
   waits for it;
5. one job per affected model/shard, keyed model/shard. The excluder (`consumers.excluder`,
   same role) and the executors both consume them: exclusion first, then the retrain;
6. deadlines: each request was logged with its legal deadline at receipt (the policy's, or the
   sender's when earlier: `unlearning.operations.deadlines`), which its events carry; a request
   planned now whose expected completion (now + the measured median time from planned to
   restored, `unlearning.operations.pace`) is past its deadline gets a `deadline_at_risk` event
   (one that falls behind later gets it from the deadline watch, `consumers.deadline_watch`)
   (schema v1.1) naming the expected time.

Every step is idempotent by request id, so a redelivered batch repeats only events.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from consumers import stages
from consumers.loop import Batching
from consumers.stages import Outbox
from consumers.topics import Topics
from ledger import entries
from ledger.errors import BadInput
from ledger.log import Ledger, open_ledger
from producers.schemas import ErasureRequest, Job, parse_request
from unlearning.data.records import RecordStore
from unlearning.data.secrets import subject_tag
from unlearning.operations import steps
from unlearning.operations.approximate import latest_exact
from unlearning.operations.context import Context
from unlearning.operations.deadlines import policy_table
from unlearning.operations.pace import Pace, at_risk, measured_pace
from unlearning.operations.receive import (
    Receipt, Request, check_trainable, correction, logged_rectification, receive_many, receive_rectification,
)


PACE_TTL_S = 30.0  # how long a measured pace is reused: it moves slowly, and measuring reads the ledger


class Planner(Batching):
    name = "planner"

    def __init__(self, ctx: Context, topics: Topics,
                 approximator: Callable[[steps.PendingUpdate], None] | None = None,
                 warned: set[str] | None = None) -> None:
        """`approximator` takes the approximate updates to make (`Approximator.submit`); without
        one, approximate requests get the exact path alone. `warned` collects the requests it
        sends `deadline_at_risk` for (the deadline watch's, which then does not repeat them)."""
        super().__init__()
        self.ctx, self.topics, self.approximator = ctx, topics, approximator
        self.warned = set() if warned is None else warned
        # read once: a bad [deadlines] table stops the service at start instead of failing (and
        # so rejecting) every request; a changed one takes effect at the next start
        self.deadlines = policy_table(ctx.ws)
        self._pace: tuple[float, Pace | None] | None = None  # (monotonic time measured, pace)

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
                rejected.append(self._to_dlq(message, str(err), outbox))
                handled.append(rejected[-1][0])
        models = self.ctx.models.names()
        valid = []
        for message, req in parsed:
            if req.model is not None and req.model not in models:
                rejected.append((req.request_id, f"no model named {req.model!r}", message))
            else:
                valid.append((message, req))
        erasures = [(m, r) for m, r in valid if r.kind != "rectify_record"]
        held = self._held([r for _, r in erasures if r.approximate])  # read before the store shreds them
        results = receive_many(self.ctx.ws, [Request(req.request_id, req.subject_id,
                                                     tuple(req.record_ids) if req.record_ids else None,
                                                     req.model, _source(message, req)) for message, req in erasures],
                               self.deadlines)
        results += [self._rectification(message, req, held, models)
                    for message, req in valid if req.kind == "rectify_record"]
        accepted: dict[str, tuple[ErasureRequest, Receipt]] = {}
        ordered = erasures + [(m, r) for m, r in valid if r.kind == "rectify_record"]
        for (message, req), result in zip(ordered, results, strict=True):
            if isinstance(result, BadInput):  # names the subject: the ledger and events use its tag
                tag = f"with tag {subject_tag(self.ctx.ws, req.subject_id)[:16]}"
                rejected.append((req.request_id, str(result).replace(repr(req.subject_id), tag), message))
            else:
                accepted[req.request_id] = (req, result)
        self._reject(rejected, outbox)
        plans = self._plan(accepted, models, outbox)
        self._approximate(accepted, plans, held, outbox)
        self._jobs(plans, outbox)
        outbox.lines.extend(f"request {rid}: {outbox.last[rid]}" for rid in handled)
        return outbox

    def dead_letter(self, records: list, reason: str) -> Outbox:
        """Messages whose handling failed for good (the consumer loop's rules): the DLQ, a
        `request_rejected` entry and a `rejected` event each, as for bad input."""
        outbox = Outbox(self.topics)
        rejected = [self._to_dlq(message, reason, outbox) for message in records]
        self._reject(rejected, outbox)
        outbox.lines.extend(f"request {rid}: to the DLQ: {reason}" for rid, _, _ in rejected)
        return outbox

    def _to_dlq(self, message, reason: str, outbox: Outbox) -> tuple[str, str, object]:  # type: ignore[no-untyped-def]
        """A DLQ copy of a message that is not a request; (its request id, reason, message) to reject."""
        outbox.dead_letter(self.topics.dlq, message, reason)
        return _request_id_of(message), reason, message

    def _held(self, requests: list[ErasureRequest]) -> dict[str, tuple[list, list]]:
        """Per approximate erasure: (its training records as stored, no replacements)."""
        if not requests:
            return {}
        with RecordStore.open(self.ctx.ws) as store:
            train = store.records("train")
        return {req.request_id: ([r for r in train if r.subject_id == req.subject_id
                                  and (not req.record_ids or r.record_id in req.record_ids)], [])
                for req in requests}

    def _rectification(self, message, req: ErasureRequest, held: dict,  # type: ignore[no-untyped-def]
                       models: list[str]) -> Receipt | BadInput:
        """Log a rectification and replace the record's content (the exact path then treats the
        old commitment as erased); its old and new content go to `held` for an approximate update.
        A correction the models in scope could not train on is rejected before any effect."""
        try:
            old, new = correction(self.ctx.ws, req.record_ids[0], req.prompt, req.answer, req.subject_id)
            receipt = logged_rectification(self.ctx.ws, req.request_id, old, new)
            if receipt is None:
                scope = [req.model] if req.model else models
                check_trainable([latest_exact(self.ctx.ws, m).config for m in scope], new)
            first = receipt is None or old.commitment.hex() in receipt.commitments
            receipt = receive_rectification(self.ctx.ws, req.request_id, old, new, req.model, receipt,
                                            {**_source(message, req), "kind": "rectify_record"}, self.deadlines)
        except BadInput as err:
            return err
        if req.approximate and first:
            held[req.request_id] = ([old], [new])
        return receipt

    def _approximate(self, accepted: dict, plans: dict[str, dict[str, list[int]]], held: dict,
                     outbox: Outbox) -> None:
        """For approximate requests received now (a redelivered one has no records left), per
        model that trained on the records: its inputs, read before the jobs go out, handed to the
        approximator after the transaction (design §5: the exact path supersedes the update)."""
        for rid, (old, new) in held.items():
            if rid not in accepted or not old or self.approximator is None:
                continue
            receipt = accepted[rid][1]
            for model in plans.get(rid, {}):
                outbox.after.append(partial(self.approximator, steps.hold(self.ctx, model, receipt, old, new)))

    def _reject(self, rejected: list, outbox: Outbox) -> None:
        if not rejected:
            return
        with open_ledger(self.ctx.ws) as ledger:
            ledger.append_many([entries.request_rejected(
                rid, reason, {"topic": m.topic, "partition": m.partition, "offset": m.offset},  # type: ignore[attr-defined]
            ) for rid, reason, m in rejected])
        for rid, reason, _ in rejected:
            outbox.event(rid, "rejected", reason=reason)

    def _plan(self, accepted: dict, models: list[str], outbox: Outbox) -> dict[str, dict[str, list[int]]]:
        """Per request: model -> the shards that trained on its records; logged, and events."""
        plans = steps.plan(self.ctx, [(rid, [req.model] if req.model else models, receipt)
                                      for rid, (req, receipt) in accepted.items()])
        with open_ledger(self.ctx.ws) as ledger:
            timings = {rid: stages.timing(ledger, rid) for rid in accepted}
            pace = self._measured_pace(ledger) if any(plans.values()) else None
        now = datetime.now(UTC)
        for rid in accepted:
            timing = timings[rid]
            outbox.event(rid, "received", **timing)
            if not plans[rid]:
                outbox.event(rid, "planned", reason="no model was trained on these records: nothing to exclude "
                             "or retrain", **timing)
            for model, shards in plans[rid].items():
                outbox.event(rid, "planned", model=model, shards=shards, **timing)
            expected = at_risk(timing["deadline"], now, pace) if plans[rid] else None
            if expected is not None:
                self.warned.add(rid)
                outbox.event(rid, "deadline_at_risk", expected_at=expected, **timing, reason=(
                    f"expected to complete at {expected.isoformat()} ("
                    + (pace.describe() if pace else "no request restored yet to measure") + "), after the deadline"))
        return plans

    def _measured_pace(self, ledger: Ledger) -> Pace | None:
        if self._pace is None or time.monotonic() - self._pace[0] > PACE_TTL_S:
            self._pace = (time.monotonic(), measured_pace(ledger))
        return self._pace[1]

    def _jobs(self, plans: dict[str, dict[str, list[int]]], outbox: Outbox) -> None:
        """One job per model/shard for the batch's requests not restored there yet."""
        wanted: dict[tuple[str, int], list[str]] = {}
        for rid, plan in plans.items():
            for model, shards in plan.items():
                for shard in shards:
                    wanted.setdefault((model, shard), []).append(rid)
        with open_ledger(self.ctx.ws) as ledger:
            for (model, shard), rids in sorted(wanted.items()):
                rids = [r for r in rids if ledger.find(entries.restored_key(r, model, shard)) is None]
                if rids:
                    job_id = hashlib.sha256(repr((model, shard, sorted(rids))).encode()).hexdigest()[:24]
                    job = Job(job_id=job_id, model=model, shard=shard, request_ids=rids)
                    outbox.send(self.topics.jobs, job.key, job.to_bytes())


def _request_id_of(message) -> str:  # type: ignore[no-untyped-def]
    """The request id a malformed message names, else its Kafka coordinates."""
    import json

    try:
        rid = json.loads(message.value).get("request_id")
    except (TypeError, ValueError, AttributeError, RecursionError):  # null, not JSON, not an object
        rid = None
    if isinstance(rid, str) and 0 < len(rid) <= 256:
        return rid
    return stages.coordinates_id(message.topic, message.partition, message.offset)


def _source(message, req: ErasureRequest) -> dict:  # type: ignore[no-untyped-def]
    return {"via": "kafka", "topic": message.topic, "partition": message.partition, "offset": message.offset,
            "requested_at": req.requested_at.isoformat(), "deadline": req.deadline.isoformat() if req.deadline else None,
            "legal_basis": req.legal_basis, "requester": req.requester}
