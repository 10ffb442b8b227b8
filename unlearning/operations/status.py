"""Where one request stands, read from its stage entries in the ledger (`ledger.entries`), whether
it came through Kafka or the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger import entries
from ledger.errors import BadInput
from ledger.log import Ledger, log_exists, log_location, open_ledger
from ledger.workspace import Workspace
from unlearning.operations.compliance import ModelStages, complied
from unlearning.operations.deadlines import deadline_of, iso, parse_time

FINAL = ("rejected", "restored", "done")


def request_status(ws: Workspace, request_id: str, now: datetime | None = None) -> dict:
    if not log_exists(ws):
        raise BadInput(f"no ledger at {log_location(ws)}")
    with open_ledger(ws, create=False) as ledger:
        return status_in(ledger, request_id, now)


def status_in(ledger: Ledger, request_id: str, now: datetime | None = None) -> dict:
    """`request_status` in an open ledger (one open for many requests: the dashboard)."""
    received = entries.read(ledger, entries.received_key(request_id))
    rejected = entries.read(ledger, entries.rejected_key(request_id))
    planned = entries.read(ledger, entries.planned_key(request_id))
    failed = entries.read(ledger, entries.failed_key(request_id))
    if not (received or rejected):
        raise BadInput(f"no request {request_id!r} in the ledger")
    models, stages = {}, {}
    deadline = deadline_of(ledger, request_id, received) if received else None
    for model, shards in (planned["models"] if planned else {}).items():
        excluded = entries.read(ledger, entries.excluded_key(request_id, model))
        deferred = excluded if excluded and excluded["type"] == "exclusion_deferred" else None
        excluded = None if deferred else excluded
        built = excluded and entries.read(ledger, entries.version_built_key(model, excluded['version']))
        restored = {s: entries.read(ledger, entries.restored_key(request_id, model, s)) for s in shards}
        approximated = entries.read(ledger, entries.approximated_key(request_id, model))
        stages[model] = ModelStages(excluded or deferred, list(restored.values()))
        models[model] = {
            "shards": shards,
            "approximate": approximated and {"at": approximated["at"], "reason": approximated["reason"],
                                             "version": approximated.get("registry_version"),
                                             "local_version": approximated.get("version"),
                                             "certificate_sha256": approximated.get("certificate_sha256")},
            "exclusion_deferred": deferred and deferred["reason"],
            "excluded": excluded and {"excluded_at": built["at"] if built else None, "certified_at": excluded["at"],
                                      "version": excluded["registry_version"], "local_version": excluded["version"],
                                      "certificate_sha256": excluded["certificate_sha256"]},
            "restored": {str(s): e and {"at": e["at"], "version": e["registry_version"], "local_version": e["version"],
                                        "certificate_sha256": e["certificate_sha256"], "executor": e["executor"]}
                         for s, e in restored.items()},
        }
    if received is None:
        stage = "rejected"
    elif planned is None:
        stage = "received"
    elif not models:
        stage = "done"
    elif all(all(m["restored"].values()) for m in models.values()):
        stage = "restored"
    elif all(m["excluded"] for m in models.values()):
        stage = "certified"
    else:
        stage = "planned"
    last = max((e for e in (received, rejected, planned) if e), key=lambda e: e["index"])
    if failed and failed["index"] > last["index"] and stage not in FINAL:
        stage = "failed"
    source = received["source"] if received else {}
    done = complied(planned, stages)
    complied_at = parse_time(done["at"]) if done else None
    now = now or datetime.now(UTC)
    pending = deadline is not None and complied_at is None and stage not in FINAL  # the clock still runs
    if deadline is None or (complied_at is None and not pending):
        met = None
    else:
        met = complied_at <= deadline.at if complied_at else (False if now > deadline.at else None)
    return {
        "request_id": request_id, "stage": stage,
        "kind": received and received["kind"], "subject_tag": received and received["subject_tag"],
        "requested_at": source.get("requested_at"), "deadline": iso(deadline.at) if deadline else None,
        "deadline_policy": deadline.to_json() if deadline else None,
        "complied_at": done and done["at"],
        "time_left_s": round((deadline.at - now).total_seconds(), 1) if pending else None,  # type: ignore[union-attr]
        "deadline_met": met,
        "stages": {"received": received and received["at"], "planned": planned and planned["at"],
                   "rejected": rejected and rejected["at"], "failed": failed and failed["at"]},
        "reason": (rejected or failed or {}).get("reason"),
        "models": models,
    }
