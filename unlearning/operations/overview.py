"""What the dashboard shows, read from the ledger alone: every request's status, each model's
registered versions with their certificate state, and the ledger's latest signed checkpoint.

One pass over the ledger's entries finds the request ids and the version events; each request's
stage is then `status.status_in`'s, in the same open ledger (one rule for the CLI and the page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.log import log_exists, open_ledger
from ledger.workspace import Workspace
from unlearning.operations.deadlines import parse_time
from unlearning.operations.status import FINAL, status_in

_PAGE = 1000
_REQUEST_TYPES = ("request_received", "request_rejected")
_VERSION_TYPES = ("model_registered", "certificate_issued", "alias_moved", "version_superseded", "version_purged")


@dataclass
class RegisteredVersion:
    registry_version: int
    version: int  # the local version
    envelope_sha256: str
    index: int  # of its model_registered entry
    at: str
    claim: str | None = None  # EXACT or APPROXIMATE, from certificate_issued
    certified: bool = False  # the `certified` alias points at it now
    superseded_by: int | None = None
    purged_at: str | None = None


@dataclass
class Overview:
    size: int  # the ledger's size when read
    checkpoint: str | None  # the latest signed checkpoint note
    requests: list[dict]  # request_status of each request, newest first
    models: dict[str, list[RegisteredVersion]] = field(default_factory=dict)

    @property
    def open_requests(self) -> list[dict]:
        """Requests not in a final stage, most urgent deadline first (no deadline last)."""
        pending = [r for r in self.requests if r["stage"] not in (*FINAL, "failed")]
        return sorted(pending, key=lambda r: (r["deadline"] is None, r["deadline"] or "", r["request_id"]))

    def days_to_compliance(self) -> list[tuple[str, float]]:
        """(request id, days from its clock start to exact compliance) of every complied request;
        the clock starts as the deadline policy says (`from`), else at receipt."""
        out = []
        for r in self.requests:
            clock = (r.get("deadline_policy") or {}).get("from") or r["stages"].get("received")
            start, done = parse_time(clock), parse_time(r.get("complied_at"))
            if start and done:
                out.append((r["request_id"], (done - start).total_seconds() / 86400))
        return out


def overview(ws: Workspace, now: datetime | None = None, limit: int = 500) -> Overview:
    """The newest `limit` requests and every model's registered versions."""
    if not log_exists(ws):
        return Overview(0, None, [])
    request_ids: dict[str, None] = {}
    models: dict[str, dict[int, RegisteredVersion]] = {}
    certified: dict[str, int] = {}  # model -> the registry version the alias points at
    claims: dict[str, str] = {}  # envelope sha256 -> EXACT / APPROXIMATE
    with open_ledger(ws, create=False) as ledger:
        size, checkpoint = ledger.size, ledger.latest_checkpoint()
        for start in range(0, size, _PAGE):
            for index, raw in ledger.entries(start, _PAGE):
                entry = json.loads(raw)
                kind = entry["type"]
                if kind in _REQUEST_TYPES:
                    request_ids[entry["request_id"]] = None
                elif kind in _VERSION_TYPES:
                    _version_event(models, certified, claims, index, entry)
        now = now or datetime.now(UTC)
        statuses = [status_in(ledger, rid, now) for rid in list(request_ids)[::-1][:limit]]
    for name, versions in models.items():
        for v in versions.values():
            v.claim = claims.get(v.envelope_sha256)
            v.certified = certified.get(name) == v.registry_version
    return Overview(size, checkpoint, statuses,
                    {name: sorted(versions.values(), key=lambda v: -v.registry_version)
                     for name, versions in sorted(models.items())})


def _version_event(models: dict[str, dict[int, RegisteredVersion]], certified: dict[str, int],
                   claims: dict[str, str], index: int, entry: dict) -> None:
    name, kind = entry["model"], entry["type"]
    versions = models.setdefault(name, {})
    if kind == "model_registered":
        versions[entry["registry_version"]] = RegisteredVersion(entry["registry_version"], entry["version"],
                                                                entry["envelope_sha256"], index, entry["at"])
    elif kind == "certificate_issued":  # logged before its version is registered
        claims[entry["envelope_sha256"]] = entry["claim"]
    elif kind == "alias_moved" and entry["alias"] == "certified":
        certified[name] = entry["to_version"]
    elif kind == "version_superseded" and entry["registry_version"] in versions:
        versions[entry["registry_version"]].superseded_by = entry["by_registry_version"]
    elif kind == "version_purged" and entry.get("registry_version") in versions:
        versions[entry["registry_version"]].purged_at = entry["at"]
