"""The compliance report: what happened to the requests of a period, computed from the ledger alone.

A request belongs to the period when its clock started in it (the `from` of the deadline logged
at receipt: its requested_at, or the receipt; for a request logged before deadlines, its
`request_received` time); a rejected message when its `request_rejected` was logged in it.
Figures are as of the report's time (`as_of`) and of the ledger's size then, whose root hash
the report names, so a figure can be recomputed from that tree.

Per request, from its stage entries: complied (exact compliance: `compliance.complied`, the
certified exclusion of every planned model), restored (every planned shard retrained and
certified), failed (a `request_failed` and not complied), open (not complied); days to
compliance and to restoration from the clock start; its deadline in force (the one logged at
receipt, moved by its `request_extended` entries): met (complied by then), missed (complied
later, or still open past it), pending (open, not yet due); extended (at least one extension).
Every figure lists the ledger indices behind it: the `request_received` entry of each request
counted, and for a duration or a met/missed deadline also the entry that completed it (pairs
[received, completed]); a failure lists its `request_failed` entry, an extension count the
`request_extended` entries, a rejection its `request_rejected` entry.

Grouped as a whole, per legal basis (as the sender named it) and per model (the models the
request was planned for, with that model's own compliance and restoration; a request not yet
planned, or planned for none, under the model it named, or "(all models)").
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from statistics import mean, median
from zoneinfo import ZoneInfo

from ledger.errors import BadInput
from ledger.log import log_exists, log_location, open_ledger
from ledger.workspace import Workspace
from unlearning.operations.compliance import ModelStages, complied, restored
from unlearning.operations.deadlines import iso, parse_time, policy_table

_PAGE = 1000
_TYPES = (b'"type":"request_', b'"type":"exclusion_deferred"')
ALL_MODELS = "(all models)"


@dataclass
class _Request:
    """A request's stage entries, as read from the ledger (each with its `at` and `index`)."""

    received: dict | None = None
    rejected: dict | None = None
    planned: dict | None = None
    failed: dict | None = None
    extensions: list[dict] = field(default_factory=list)
    excluded: dict[str, dict] = field(default_factory=dict)  # model -> request_excluded / exclusion_deferred
    restored: dict[tuple[str, int], dict] = field(default_factory=dict)  # (model, shard) -> request_restored


@dataclass(frozen=True)
class Row:
    """One request (or one request for one model) with what the figures count."""

    request_id: str
    received_index: int
    start: datetime
    legal_basis: str
    deadline: datetime | None
    extensions: tuple[int, ...]  # request_extended indices
    complied: dict | None
    restored: dict | None
    failed: dict | None


def _read(ws: Workspace) -> tuple[dict[str, _Request], int, str]:
    """Every request's stage entries, the ledger's size and its root hash (hex) at that size."""
    requests: dict[str, _Request] = {}
    with open_ledger(ws, create=False) as ledger:
        size = ledger.size
        root = ledger.root(size).hex()
        for start in range(0, size, _PAGE):
            for index, raw in ledger.entries(start, min(_PAGE, size - start)):
                if not any(t in raw for t in _TYPES):
                    continue
                entry = {**json.loads(raw), "index": index}
                _add(requests.setdefault(entry.get("request_id", ""), _Request()), entry)
    requests.pop("", None)
    return requests, size, root


def _add(request: _Request, entry: dict) -> None:
    kind = entry["type"]
    if kind in ("request_received", "request_rejected", "request_planned", "request_failed"):
        setattr(request, kind.removeprefix("request_"), entry)
    elif kind == "request_extended":
        request.extensions.append(entry)
    elif kind in ("request_excluded", "exclusion_deferred"):
        request.excluded[entry["model"]] = entry
    elif kind == "request_restored":
        request.restored[(entry["model"], entry["shard"])] = entry


def _stages(request: _Request, models: Iterable[str]) -> dict[str, ModelStages]:
    shards = request.planned["models"] if request.planned else {}
    return {m: ModelStages(request.excluded.get(m), [request.restored.get((m, s)) for s in shards[m]]) for m in models}


def _rows(request_id: str, request: _Request) -> tuple[Row, dict[str, Row]]:
    """The request's row, and one row per model it is counted under."""
    received = request.received
    assert received is not None
    terms = received.get("deadline") or {}
    start = parse_time(terms.get("from") or received["at"])
    deadline = parse_time(terms.get("at") or received["source"].get("deadline"))
    extensions = sorted(request.extensions, key=lambda e: e["number"])
    if extensions:
        deadline = parse_time(extensions[-1]["deadline"])
    basis = terms.get("legal_basis") or received["source"].get("legal_basis") or "(none named)"
    planned_models = list(request.planned["models"]) if request.planned else []
    failed = request.failed

    def row(models: list[str]) -> Row:
        stages = _stages(request, models)
        done = complied(request.planned, stages)
        return Row(request_id, received["index"], start, basis, deadline,  # type: ignore[arg-type]
                   tuple(e["index"] for e in extensions), done, restored(stages), None if done else failed)

    whole = row(planned_models)
    per_model = {m: row([m]) for m in planned_models} or {received.get("model") or ALL_MODELS: whole}
    return whole, per_model


def _indices(rows: list[Row]) -> list[int]:
    return sorted(r.received_index for r in rows)


def _count(rows: list[Row]) -> dict:
    return {"count": len(rows), "indices": _indices(rows)}


def _days(rows: list[Row], stage: str) -> dict:
    done = [(r, getattr(r, stage)) for r in rows if getattr(r, stage)]
    days = [(parse_time(e["at"]) - r.start).total_seconds() / 86400 for r, e in done]  # type: ignore[operator]
    return {"count": len(days), "median": round(median(days), 3) if days else None,
            "mean": round(mean(days), 3) if days else None,
            "indices": sorted([r.received_index, e["index"]] for r, e in done)}


def _by_reason(entries: list[tuple[str, int]]) -> dict:
    grouped: dict[str, list[int]] = {}
    for reason, index in entries:
        grouped.setdefault(reason, []).append(index)
    return {reason: {"count": len(indices), "indices": sorted(indices)} for reason, indices in sorted(grouped.items())}


def _deadlines(rows: list[Row], now: datetime) -> dict:
    met, missed, pending, unset = [], [], [], []
    for r in rows:
        if r.deadline is None:
            unset.append(r)
        elif r.complied is not None:
            (met if parse_time(r.complied["at"]) <= r.deadline else missed).append(r)  # type: ignore[operator]
        else:
            (missed if now > r.deadline else pending).append(r)

    def pairs(chosen: list[Row]) -> dict:
        return {"count": len(chosen), "indices": sorted(
            [r.received_index, r.complied["index"]] if r.complied else [r.received_index] for r in chosen)}

    extended = [r for r in rows if r.extensions]
    return {"met": pairs(met), "missed": pairs(missed), "pending": _count(pending), "none": _count(unset),
            "extended": {"count": len(extended), "indices": sorted(i for r in extended for i in r.extensions)}}


def figures(rows: list[Row], now: datetime) -> dict:
    """The figures of one group of requests (every count with the indices behind it)."""
    failed = [(r.failed["reason"], r.failed["index"]) for r in rows if r.failed]
    return {
        "received": _count(rows),
        "complied": _count([r for r in rows if r.complied]),
        "open": _count([r for r in rows if not r.complied]),
        "failed": {"count": len(failed), "indices": sorted(i for _, i in failed), "by_reason": _by_reason(failed)},
        "days_to_compliance": _days(rows, "complied"),
        "days_to_restoration": _days(rows, "restored"),
        "deadlines": _deadlines(rows, now),
    }


def window(start: str, end: str, zone: str = "UTC") -> tuple[datetime, datetime]:
    """[start, end) from a DATE (the whole day, in `zone`) or an ISO 8601 time with a timezone."""
    def moment(text: str, day_after: bool) -> datetime:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text) + timedelta(days=1 if day_after else 0)
                return datetime.combine(day, time(0), ZoneInfo(zone)).astimezone(UTC)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadInput(f"{text!r} is neither a date (2026-01-31) nor an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise BadInput(f"{text!r} needs a timezone (e.g. 2026-01-31T12:00:00Z)")
        return moment.astimezone(UTC)

    since, until = moment(start, False), moment(end, True)
    if until <= since:
        raise BadInput(f"the period {start} .. {end} is empty: --to must not be before --from")
    return since, until


def compliance_report(ws: Workspace, start: str, end: str, now: datetime | None = None) -> dict:
    """The report of the requests whose clock started in [start, end] (dates inclusive)."""
    if not log_exists(ws):
        raise BadInput(f"no ledger at {log_location(ws)}")
    table = policy_table(ws)
    since, until = window(start, end, table.zone)
    now = now or datetime.now(UTC)
    requests, size, root = _read(ws)
    rows: list[Row] = []
    by_basis: dict[str, list[Row]] = {}
    by_model: dict[str, list[Row]] = {}
    rejected: list[tuple[str, int]] = []
    for request_id, request in requests.items():
        if request.received is None:
            at = parse_time(request.rejected["at"]) if request.rejected else None
            if at is not None and since <= at < until:
                rejected.append((request.rejected["reason"], request.rejected["index"]))  # type: ignore[index]
            continue
        whole, per_model = _rows(request_id, request)
        if not since <= whole.start < until:
            continue
        rows.append(whole)
        by_basis.setdefault(whole.legal_basis, []).append(whole)
        for model, row in per_model.items():
            by_model.setdefault(model, []).append(row)
    return {
        "period": {"from": iso(since), "to": iso(until), "timezone": table.zone},
        "as_of": iso(now), "ledger": {"size": size, "root": root},
        "rejected": {"count": len(rejected), "by_reason": _by_reason(rejected)},
        "requests": figures(rows, now),
        "by_legal_basis": {basis: figures(group, now) for basis, group in sorted(by_basis.items())},
        "by_model": {model: figures(group, now) for model, group in sorted(by_model.items())},
    }


# the static page: one file, inline style, no script, nothing fetched

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}
table{border-collapse:collapse;margin:0 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}small{color:#666}code{font-size:12px}"""

_FIGURES = (("received", "Requests received"), ("complied", "Complied (exact)"), ("open", "Open"),
            ("failed", "Failed"))


def _cell(figure: dict) -> str:
    return f'<td class="n">{figure["count"]}</td><td><small>{html.escape(json.dumps(figure["indices"]))}</small></td>'


def _days_cell(days: dict) -> str:
    value = "–" if days["median"] is None else f"{days['median']} / {days['mean']}"
    return f'<td class="n">{value}</td><td><small>{html.escape(json.dumps(days["indices"]))}</small></td>'


def _group_table(title: str, groups: dict[str, dict]) -> str:
    head = "<tr><th>group</th><th>figure</th><th>count / days</th><th>ledger indices</th></tr>"
    body = []
    for name, f in groups.items():
        lines = [(label, _cell(f[key])) for key, label in _FIGURES]
        lines += [("Days to compliance (median / mean)", _days_cell(f["days_to_compliance"])),
                  ("Days to restoration (median / mean)", _days_cell(f["days_to_restoration"]))]
        lines += [(f"Deadlines {k}", _cell(f["deadlines"][k])) for k in ("met", "missed", "pending", "extended")]
        for i, (label, cells) in enumerate(lines):
            first = f'<td rowspan="{len(lines)}">{html.escape(name)}</td>' if i == 0 else ""
            body.append(f"<tr>{first}<td>{html.escape(label)}</td>{cells}</tr>")
    return f"<h2>{html.escape(title)}</h2><table>{head}{''.join(body)}</table>"


def to_html(report: dict) -> str:
    """The report as one static, self-contained HTML page."""
    period = report["period"]
    rejected = "".join(f"<tr><td>{html.escape(reason)}</td>{_cell(r)}</tr>"
                       for reason, r in report["rejected"]["by_reason"].items()) or '<tr><td colspan="3">none</td></tr>'
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Erasure compliance report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Erasure compliance report</h1>",
        f"<p>Requests whose clock started from {html.escape(period['from'])} until {html.escape(period['to'])} "
        f"(dates in {html.escape(period['timezone'])}), as of {html.escape(report['as_of'])}. Computed from the ledger "
        f"alone, at size {report['ledger']['size']}, root <code>{report['ledger']['root']}</code>; every figure lists "
        "the ledger indices behind it (<code>erasure ledger show</code>, <code>erasure ledger prove</code>).</p>",
        _group_table("All requests", {"all": report["requests"]}),
        "<h2>Rejected</h2><table><tr><th>reason</th><th>count</th><th>ledger indices</th></tr>",
        f"{rejected}</table>",
        _group_table("Per legal basis", report["by_legal_basis"]),
        _group_table("Per model", report["by_model"]),
        "</body></html>\n",
    ])
