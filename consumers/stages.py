"""Where a request stands: ledger entries (durable; `erasure status` reads them) and the
matching outcome events (for data platforms).

Each stage of a request is one ledger entry under a natural key, so a redelivered message logs
nothing twice. Events are at-least-once: they go out in the Kafka transaction that commits the
offsets, after the entries are durable, and a redelivery sends them again.

| stage    | entry type         | natural key                          |
|----------|--------------------|--------------------------------------|
| received | request_received   | request/ID (logged by `receive_many`)|
| rejected | request_rejected   | rejected/ID                          |
| planned  | request_planned    | planned/ID                           |
| certified exclusion | request_excluded | excluded/ID/MODEL             |
| (no exclusion possible) | exclusion_deferred | excluded/ID/MODEL         |
| restored | request_restored   | restored/ID/MODEL/SHARD              |
| failed   | request_failed     | failed/ID                            |

A message without a usable request id is named by its Kafka coordinates (`kafka:TOPIC/P/OFFSET`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from consumers.topics import Topics
from ledger.errors import BadInput
from ledger.log import Ledger, open_ledger
from ledger.workspace import Workspace
from producers.schemas import Job, OutcomeEvent, Status, parse

log = logging.getLogger("erasure.serve")


def received_key(request_id: str) -> str:
    return f"request/{request_id}"


def rejected_key(request_id: str) -> str:
    return f"rejected/{request_id}"


def planned_key(request_id: str) -> str:
    return f"planned/{request_id}"


def approximated_key(request_id: str, model: str) -> str:
    return f"approximated/{request_id}/{model}"


def excluded_key(request_id: str, model: str) -> str:
    return f"excluded/{request_id}/{model}"


def restored_key(request_id: str, model: str, shard: int) -> str:
    return f"restored/{request_id}/{model}/{shard}"


def failed_key(request_id: str) -> str:
    return f"failed/{request_id}"


def coordinates_id(topic: str, partition: int, offset: int) -> str:
    return f"kafka:{topic}/{partition}/{offset}"


def read(ledger: Ledger, key: str) -> dict | None:
    """The entry logged under `key` (with its `at`), or None."""
    index = ledger.find(key)
    return None if index is None else {**json.loads(ledger.entry(index)), "index": index}


def timing(ledger: Ledger, request_id: str) -> dict:
    """requested_at and deadline of a received request, for its events."""
    received = read(ledger, received_key(request_id))
    source = received["source"] if received else {}
    return {"requested_at": source.get("requested_at"), "deadline": source.get("deadline")}


def planned_shards(ledger: Ledger, request_id: str) -> dict[str, list[int]]:
    """model -> shards that held the request's records, as planned."""
    planned = read(ledger, planned_key(request_id))
    return planned["models"] if planned else {}


@dataclass
class Outbox:
    """What one unit of work sends: events, jobs, DLQ copies; the consumer loop sends them in the
    transaction that commits the unit's offsets, then logs `lines` (one per handled message)."""

    topics: Topics
    messages: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # request id -> its last status, described
    _events: set[tuple] = field(default_factory=set)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        self.messages.append((topic, key, value, headers or []))

    def event(self, request_id: str, status: Status, at: datetime | str | None = None, **fields: object) -> None:
        """Queue an outcome event (once per request, status, model and reason); `fields` are
        OutcomeEvent fields, None ones left out."""
        given = {k: v for k, v in fields.items() if v is not None}
        once = (request_id, status, given.get("model"), given.get("reason"))
        if once in self._events:
            return
        self._events.add(once)
        event = OutcomeEvent.model_validate({"schema": "erasure.event/v1", "request_id": request_id,
                                             "status": status, **given, **({"at": at} if at else {})})
        self.send(self.topics.events, request_id.encode(), event.to_bytes())
        detail = " ".join(f"{k}={given[k]}" for k in ("model", "version", "shards", "reason") if k in given)
        self.last[request_id] = f"{status} {detail}".strip()


def fail(ws: Workspace, request_ids: list[str], model: str, reason: str, outbox: Outbox) -> None:
    """Log and announce requests whose work hit a permanent error (transient ones are retried)."""
    with open_ledger(ws) as ledger:
        ledger.append_many([("request_failed", {"request_id": r, "model": model, "reason": reason},
                             failed_key(r)) for r in request_ids])
    for r in request_ids:
        outbox.event(r, "failed", model=model, reason=reason)


def parse_jobs(records: list) -> list[Job]:
    """The jobs among `records`; only the planner writes jobs, so a bad one is a bug: logged, skipped."""
    jobs = []
    for record in records:
        try:
            jobs.append(parse(record.value, Job))
        except BadInput as err:
            log.error("skipping malformed job at %s/%d/%d: %s", record.topic, record.partition, record.offset, err)
    return jobs  # type: ignore[return-value]
