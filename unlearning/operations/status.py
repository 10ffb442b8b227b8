"""Where one request stands, read from its stage entries in the ledger (`ledger.entries`), whether
it came through Kafka or the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger import entries
from ledger.errors import BadInput
from ledger.log import open_ledger
from ledger.workspace import Workspace

FINAL = ("rejected", "restored", "done")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def request_status(ws: Workspace, request_id: str, now: datetime | None = None) -> dict:
    if not ws.ledger_db.exists():
        raise BadInput(f"no ledger at {ws.ledger_db}")
    with open_ledger(ws, create=False) as ledger:
        received = entries.read(ledger, entries.received_key(request_id))
        rejected = entries.read(ledger, entries.rejected_key(request_id))
        planned = entries.read(ledger, entries.planned_key(request_id))
        failed = entries.read(ledger, entries.failed_key(request_id))
        if not (received or rejected):
            raise BadInput(f"no request {request_id!r} in the ledger")
        models = {}
        for model, shards in (planned["models"] if planned else {}).items():
            excluded = entries.read(ledger, entries.excluded_key(request_id, model))
            deferred = excluded if excluded and excluded["type"] == "exclusion_deferred" else None
            excluded = None if deferred else excluded
            built = excluded and entries.read(ledger, entries.version_built_key(model, excluded['version']))
            restored = {s: entries.read(ledger, entries.restored_key(request_id, model, s)) for s in shards}
            approximated = entries.read(ledger, entries.approximated_key(request_id, model))
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
    completed = {"done": planned and planned["at"], "rejected": rejected and rejected["at"],
                 "restored": max((e["at"] for m in models.values() for e in m["restored"].values() if e), default=None)
                 }.get(stage)
    deadline = _time(source.get("deadline"))
    now = now or datetime.now(UTC)
    return {
        "request_id": request_id, "stage": stage,
        "kind": received and received["kind"], "subject_tag": received and received["subject_tag"],
        "requested_at": source.get("requested_at"), "deadline": source.get("deadline"),
        "time_left_s": round((deadline - now).total_seconds(), 1) if deadline and stage not in FINAL else None,
        "deadline_met": (_time(completed) <= deadline) if deadline and completed else None,
        "stages": {"received": received and received["at"], "planned": planned and planned["at"],
                   "rejected": rejected and rejected["at"], "failed": failed and failed["at"]},
        "reason": (rejected or failed or {}).get("reason"),
        "models": models,
    }
