"""Legal deadlines (design §8): a policy table, the deadline a request gets at receipt, extensions.

A policy names a legal basis, the period the law allows (calendar days, or calendar months),
and how far the controller may extend it. The defaults:

| policy        | period          | extension                          | source |
|---------------|-----------------|------------------------------------|--------|
| GDPR Art. 17  | one month       | up to two further months            | GDPR Art. 12(3) |
| GDPR Art. 16  | one month       | up to two further months            | GDPR Art. 12(3) (rectification) |
| CCPA          | 45 calendar days | once, up to 45 more days           | CCPA regulations §7021(b) |
| DROP          | 45 calendar days | none                               | California Delete Act, Civ. Code §1798.99.86 |

Calendar rule (EU Regulation 1182/71, art. 3, which the courts apply to Art. 12(3)): the day of
receipt does not count; a period of days ends at the end of the last day; a period of months
ends at the end of the day with the same number in the last month, or of that month's last day
when it has none (Jan 31 + one month: Feb 28, or 29 in a leap year). Days are counted in the
controller's time zone (`[deadlines] timezone`, default UTC), so the receipt time is converted
there first: 2024-01-30T22:00-05:00 is Jan 31 in UTC and Jan 30 in New York. A deadline is the
last second of its day in that zone, stored in UTC.

The clock starts at the request's `requested_at` (when the data platform received it), or at
the ledger's receipt when that is absent or later. A sender's deadline earlier than the
policy's is kept; a later one is not. A legal basis not in the table gets the `[deadlines]
default` policy, or, when none is configured, the strictest: the policy whose deadline for that
receipt comes first. A basis matches a policy when it is its name (case and spacing aside) or
starts with it followed by a non-alphanumeric character ("GDPR Art. 17(1)(a)", "CCPA §1798.105").

The deadline and the terms it was set under (policy, legal basis, the statutory deadline, how
far it may be extended, how many times) are logged in the request's `request_received` entry,
so an extension is judged by what was logged at receipt, not by today's configuration. An
extension (`request_extended`, one entry per extension) must be logged before the deadline set
at receipt passes: both GDPR and CCPA require the person to be told within the first period.

Configuration, in erasure.toml (a policy given here replaces the default of the same name):

    [deadlines]
    timezone = "Europe/Berlin"
    default = "GDPR Art. 17"
    [deadlines.policies."LGPD"]
    days = 15
    [deadlines.policies."CCPA"]
    days = 45
    extension_days = 45
    max_extensions = 1
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger import entries
from ledger.errors import BadInput
from ledger.log import Ledger, open_ledger
from ledger.workspace import Workspace

Unit = Literal["days", "months"]
DEFAULT_BASIS = "GDPR Art. 17"  # what a request that names none is taken to invoke (the request schema's default)


@dataclass(frozen=True)
class Policy:
    name: str
    unit: Unit
    period: int
    extension: int = 0  # in `unit`, in total over all extensions; 0: none allowed
    max_extensions: int | None = None  # None: any number, within `extension`


DEFAULT_POLICIES = (
    Policy("GDPR Art. 17", "months", 1, 2),  # first: the strictest on a tie
    Policy("GDPR Art. 16", "months", 1, 2),
    Policy("CCPA", "days", 45, 45, 1),
    Policy("DROP", "days", 45),
)


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z`: the ledger's own timestamp format."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def add_months(day: date, months: int) -> date:
    """The same day number `months` later, clamped to that month's last day."""
    year, month = divmod(day.month - 1 + months, 12)
    year, month = day.year + year, month + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _normal(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class PolicyTable:
    policies: tuple[Policy, ...] = DEFAULT_POLICIES
    zone: str = "UTC"
    default: str | None = None  # the policy of an unknown legal basis; None: the strictest

    def due(self, start: datetime, unit: Unit, amount: int) -> datetime:
        """The last second of the day `amount` days or months after `start`'s day, in the table's zone."""
        zone = ZoneInfo(self.zone)
        day = start.astimezone(zone).date()
        last = day + timedelta(days=amount) if unit == "days" else add_months(day, amount)
        return datetime.combine(last, time(23, 59, 59), zone).astimezone(UTC)

    def match(self, legal_basis: str) -> Policy | None:
        """The policy named by `legal_basis` (the longest name it starts with, at a word boundary)."""
        basis = _normal(legal_basis)
        found = [p for p in self.policies if basis == _normal(p.name) or (
            basis.startswith(_normal(p.name)) and not basis[len(_normal(p.name))].isalnum())]
        return max(found, key=lambda p: len(p.name), default=None)

    def policy(self, legal_basis: str, start: datetime) -> Policy:
        """The policy of `legal_basis`; for an unknown one the configured default, else the strictest."""
        found = self.match(legal_basis)
        if found is not None:
            return found
        if self.default is not None:
            return self.match(self.default)  # type: ignore[return-value]  # checked by `policy_table`
        return min(self.policies, key=lambda p: (self.due(start, p.unit, p.period), self.policies.index(p)))

    def terms(self, legal_basis: str | None, start: datetime, sender: datetime | None) -> dict[str, Any]:
        """The deadline of a request received at `start` and what it was set under, as logged."""
        basis = legal_basis or DEFAULT_BASIS
        policy = self.policy(basis, start)
        statutory = self.due(start, policy.unit, policy.period)
        by_sender = sender is not None and sender < statutory
        return {
            "at": iso(sender if by_sender else statutory),  # type: ignore[arg-type]
            "set_by": "sender" if by_sender else "policy",
            "from": iso(start), "legal_basis": basis, "policy": policy.name, "timezone": self.zone,
            "statutory": iso(statutory),
            "extendable_to": iso(self.due(start, policy.unit, policy.period + policy.extension))
            if policy.extension else None,
            "max_extensions": policy.max_extensions if policy.extension else 0,
        }

    def at_receipt(self, source: dict, now: datetime) -> dict[str, Any]:
        """`terms` of a request received `now` from `source` (its requested_at, deadline, legal_basis)."""
        requested = parse_time(source.get("requested_at"))
        start = now if requested is None or requested > now else requested
        return self.terms(source.get("legal_basis"), start, parse_time(source.get("deadline")))


def _int(section: dict, key: str, where: str, minimum: int) -> int | None:
    value = section.get(key)
    if value is not None and (type(value) is not int or value < minimum):
        raise BadInput(f"erasure.toml: {where} {key} must be an integer >= {minimum}")
    return value


def _configured_policy(name: str, section: object) -> Policy:
    where = f"[deadlines.policies.{json.dumps(name)}]"
    if not isinstance(section, dict):
        raise BadInput(f"erasure.toml: {where} must be a table")
    unknown = sorted(set(section) - {"days", "months", "extension_days", "extension_months", "max_extensions"})
    if unknown:
        raise BadInput(f"erasure.toml: {where} has unknown keys: {', '.join(unknown)}")
    days, months = _int(section, "days", where, 1), _int(section, "months", where, 1)
    if (days is None) == (months is None):
        raise BadInput(f"erasure.toml: {where} needs exactly one of days and months")
    unit: Unit = "days" if days is not None else "months"
    other = "extension_months" if unit == "days" else "extension_days"
    if other in section:
        raise BadInput(f"erasure.toml: {where} counts in {unit}: use extension_{unit}, not {other}")
    extension = _int(section, f"extension_{unit}", where, 0) or 0
    return Policy(name, unit, days or months, extension, _int(section, "max_extensions", where, 1))  # type: ignore[arg-type]


def policy_table(ws: Workspace) -> PolicyTable:
    """The defaults with `[deadlines]` of erasure.toml applied; BadInput naming a bad key."""
    config = ws.config().get("deadlines", {})
    if not isinstance(config, dict):
        raise BadInput("erasure.toml: [deadlines] must be a table")
    unknown = sorted(set(config) - {"timezone", "default", "policies"})
    if unknown:
        raise BadInput(f"erasure.toml: [deadlines] has unknown keys: {', '.join(unknown)}")
    zone = config.get("timezone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise BadInput(f"erasure.toml: [deadlines] timezone {zone!r} is not an IANA time zone") from None
    configured = config.get("policies", {})
    if not isinstance(configured, dict):
        raise BadInput("erasure.toml: [deadlines.policies] must be a table")
    policies = {p.name: p for p in DEFAULT_POLICIES}
    policies.update({name: _configured_policy(name, section) for name, section in configured.items()})
    table = PolicyTable(tuple(policies.values()), zone, config.get("default"))
    if table.default is not None and (not isinstance(table.default, str) or table.match(table.default) is None):
        raise BadInput(f"erasure.toml: [deadlines] default {table.default!r} names no policy "
                       f"(policies: {', '.join(policies)})")
    return table


# the deadline in force: the one logged at receipt, moved by its extensions

@dataclass(frozen=True)
class Deadline:
    at: datetime
    terms: dict[str, Any]  # as logged at receipt (`PolicyTable.terms`); {} for a request logged before policies
    extensions: tuple[dict, ...]  # the request_extended entries, in order, with their index

    def to_json(self) -> dict[str, Any]:
        return {**self.terms, "at": iso(self.at), "extensions": [
            {k: e[k] for k in ("index", "at", "deadline", "previous", "days", "reason")} for e in self.extensions]}


def deadline_of(ledger: Ledger, request_id: str, received: dict | None = None) -> Deadline | None:
    """The request's deadline in force (None: not received, or logged without one)."""
    received = received or entries.read(ledger, entries.received_key(request_id))
    if received is None:
        return None
    terms = received.get("deadline") or {}
    at = parse_time(terms.get("at") or received["source"].get("deadline"))
    if at is None:
        return None
    extensions = []
    while (extended := entries.read(ledger, entries.extended_key(request_id, len(extensions) + 1))) is not None:
        extensions.append(extended)
        at = parse_time(extended["deadline"])  # type: ignore[assignment]
    return Deadline(at, terms, tuple(extensions))


def deadlines_of(ws: Workspace, request_ids: list[str]) -> dict[str, datetime | None]:
    """The deadline in force of each request (None where it has none)."""
    with open_ledger(ws) as ledger:
        found = {r: deadline_of(ledger, r) for r in dict.fromkeys(request_ids)}
    return {r: d and d.at for r, d in found.items()}


def extend(ws: Workspace, request_id: str, reason: str, days: int | None = None,
           now: datetime | None = None) -> Deadline:
    """Log an extension of the request's deadline by `days` (default: as far as its policy
    allows); BadInput when the policy allows none, the allowance or count is used up, the
    deadline set at receipt has passed."""
    if not (reason or "").strip():
        raise BadInput("an extension needs a reason (it is logged, and the person must be told it)")
    if days is not None and days < 1:
        raise BadInput(f"--days must be at least 1, not {days}")
    now = now or datetime.now(UTC)
    with open_ledger(ws) as ledger:
        received = entries.read(ledger, entries.received_key(request_id))
        if received is None:
            raise BadInput(f"no request {request_id!r} received in the ledger")
        current = deadline_of(ledger, request_id, received)
        terms = current.terms if current else {}
        if current is None or "policy" not in terms:
            raise BadInput(f"request {request_id} has no deadline set by a policy: nothing to extend")
        if not terms["extendable_to"]:
            raise BadInput(f"policy {terms['policy']} allows no extension")
        first = parse_time(terms["at"])
        if now > first:  # type: ignore[operator]
            raise BadInput(f"the deadline set at receipt passed at {terms['at']}: an extension had to be "
                           "logged (and the person told) before it")
        if terms["max_extensions"] and len(current.extensions) >= terms["max_extensions"]:
            raise BadInput(f"policy {terms['policy']} allows {terms['max_extensions']} extension(s): "
                           f"already extended to {iso(current.at)}")
        limit = parse_time(terms["extendable_to"])
        target = limit if days is None else current.at + timedelta(days=days)
        if target > limit or target <= current.at:  # type: ignore[operator]
            left = (limit - current.at).days  # type: ignore[operator]
            raise BadInput(f"policy {terms['policy']} allows extending to {terms['extendable_to']} at the latest "
                           f"(the deadline is {iso(current.at)}, {max(left, 0)} day(s) of extension left)")
        number = len(current.extensions) + 1
        ledger.append_many([entries.request_extended(
            request_id, number, iso(target), iso(current.at),  # type: ignore[arg-type]
            (target - current.at).days, reason.strip())])  # type: ignore[operator]
        return deadline_of(ledger, request_id, received)  # type: ignore[return-value]
