"""Outcome events of a request's stages, for data platforms.

Each stage of a request is one ledger entry under a natural key (`ledger.entries`), logged by
the operation that does the stage (`unlearning.operations`), so a redelivered message logs
nothing twice. Events are at-least-once: they are read back from those entries and go out in
the Kafka transaction that commits the offsets, after the entries are durable, and a
redelivery sends them again.

A message without a usable request id is named by its Kafka coordinates (`kafka:TOPIC/P/OFFSET`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from consumers.topics import Topics
from ledger import entries
from ledger.errors import BadInput
from ledger.log import Ledger, open_ledger
from ledger.workspace import Workspace
from producers.schemas import Job, OutcomeEvent, Status, parse
from unlearning.operations.deadlines import deadline_of

log = logging.getLogger("erasure.serve")


# a DLQ copy with its headers stays under Kafka's default 1 MiB record limit
DLQ_VALUE_MAX = 1_000_000
REASON_MAX = 1000


def coordinates_id(topic: str, partition: int, offset: int) -> str:
    return f"kafka:{topic}/{partition}/{offset}"


def timing(ledger: Ledger, request_id: str) -> dict:
    """requested_at and the deadline in force (the policy's or the sender's, extended) of a
    received request, for its events."""
    received = entries.read(ledger, entries.received_key(request_id))
    source = received["source"] if received else {}
    deadline = received and deadline_of(ledger, request_id, received)
    return {"requested_at": source.get("requested_at"), "deadline": deadline.at if deadline else None}


def outcome_event(request_id: str, status: Status, at: datetime | str | None = None, **fields: object) -> OutcomeEvent:
    """An outcome event (schema v1, or v1.1 where it uses a v1.1 feature); `fields` are
    OutcomeEvent fields, None ones left out."""
    given = {k: v for k, v in fields.items() if v is not None}
    return OutcomeEvent.model_validate({"request_id": request_id, "status": status,
                                        **given, **({"at": at} if at else {})})


def describe(event: OutcomeEvent) -> str:
    """An event in one line, for logs."""
    given = event.model_dump(exclude_none=True)
    detail = " ".join(f"{k}={given[k]}" for k in ("model", "version", "shards", "reason") if k in given)
    return f"{event.status} {detail}".strip()


@dataclass
class Outbox:
    """What one unit of work sends: events, jobs, DLQ copies; the consumer loop sends them in the
    transaction that commits the unit's offsets, then logs `lines` (one per handled message) and
    calls `after` (hand-offs to work beside the loop, once the transaction is over, committed or
    not: a unit retried after an abort would not have them again)."""

    topics: Topics
    messages: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # request id -> its last status, described
    _events: set[tuple] = field(default_factory=set)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        self.messages.append((topic, key, value, headers or []))

    def dead_letter(self, topic: str, message, reason: str) -> None:  # type: ignore[no-untyped-def]
        """A copy of `message` (a polled record) for a DLQ: its key and value (a null value stays
        null; a value over DLQ_VALUE_MAX is cut there, its full size in `erasure.truncated`), the
        reason in `erasure.reason` and its coordinates in `erasure.source`."""
        value = message.value
        headers = [("erasure.reason", reason[:REASON_MAX].encode()),
                   ("erasure.source", f"{message.topic}/{message.partition}/{message.offset}".encode())]
        if value is not None and len(value) > DLQ_VALUE_MAX:
            headers.append(("erasure.truncated", str(len(value)).encode()))
            value = value[:DLQ_VALUE_MAX]
        self.send(topic, message.key, value, headers)

    def event(self, request_id: str, status: Status, at: datetime | str | None = None, **fields: object) -> None:
        """Queue an outcome event (once per request, status, model and reason); `fields` are
        OutcomeEvent fields, None ones left out."""
        once = (request_id, status, fields.get("model"), fields.get("reason"))
        if once in self._events:
            return
        self._events.add(once)
        event = outcome_event(request_id, status, at, **fields)
        self.send(self.topics.events, request_id.encode(), event.to_bytes())
        self.last[request_id] = describe(event)


def fail(ws: Workspace, request_ids: list[str], model: str, reason: str, outbox: Outbox) -> None:
    """Log and announce requests whose work hit a permanent error (transient ones are retried)."""
    with open_ledger(ws) as ledger:
        ledger.append_many([entries.request_failed(r, model, reason) for r in request_ids])
    for r in request_ids:
        outbox.event(r, "failed", model=model, reason=reason)


def parse_jobs(records: list, outbox: Outbox) -> list[Job]:
    """The jobs among `records`; only the planner writes jobs, so a bad one is a bug: logged and
    sent to the jobs DLQ with the reason."""
    jobs = []
    for record in records:
        try:
            jobs.append(parse(record.value, Job))
        except BadInput as err:
            log.error("malformed job at %s/%d/%d to the DLQ: %s", record.topic, record.partition, record.offset, err)
            outbox.dead_letter(outbox.topics.jobs_dlq, record, str(err))
    return jobs  # type: ignore[return-value]


def dead_letter_jobs(ws: Workspace, records: list, reason: str, outbox: Outbox) -> None:
    """Jobs that cannot succeed: each to the jobs DLQ with the reason, and its requests logged
    and announced as failed (`fail`)."""
    for record in records:
        for job in parse_jobs([record], outbox):  # a malformed one goes with its own reason
            outbox.dead_letter(outbox.topics.jobs_dlq, record, reason)
            fail(ws, job.request_ids, job.model, reason, outbox)
            outbox.lines.append(f"job {job.job_id} ({job.model}/{job.shard}) to the DLQ: {reason}")


def excluded_events(ws: Workspace, name: str, request_ids: list[str], outbox: Outbox) -> None:
    """Per request with an exclusion outcome for `name`, from the ledger (so a redelivered message
    sends them again): `excluded` (version built) and `certified` (registered, aliased), or a
    `planned` event saying why there is no exclusion."""
    with open_ledger(ws) as ledger:
        built: dict[int, dict | None] = {}
        for r in request_ids:
            entry = entries.read(ledger, entries.excluded_key(r, name))
            if entry is None:
                continue
            times = timing(ledger, r)
            if entry["type"] == "exclusion_deferred":
                outbox.event(r, "planned", model=name, reason=entry["reason"], **times)
                continue
            version = entry["version"]
            if version not in built:
                built[version] = entries.read(ledger, entries.version_built_key(name, version))
            common = {"model": name, "version": entry["registry_version"], **times}
            outbox.event(r, "excluded", at=built[version]["at"] if built[version] else None, **common)
            outbox.event(r, "certified", at=entry["at"], certificate_sha256=entry["certificate_sha256"], **common)


def restored_events(ws: Workspace, name: str, request_ids: list[str], outbox: Outbox) -> None:
    """A `restored` event for each request whose every planned shard of `name` is restored."""
    with open_ledger(ws) as ledger:
        for r in request_ids:
            shards = entries.planned_shards(ledger, r).get(name, [])
            restored = [entries.read(ledger, entries.restored_key(r, name, s)) for s in shards]
            if not shards or any(e is None for e in restored):
                continue
            last = max(restored, key=lambda e: e["index"])  # type: ignore[arg-type, return-value]
            outbox.event(r, "restored", at=last["at"], model=name, version=last["registry_version"], shards=shards,
                         certificate_sha256=last["certificate_sha256"], **timing(ledger, r))
