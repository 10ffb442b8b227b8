"""Legal deadlines: the calendar arithmetic per policy (month ends, leap years, time zones), the
policy table and its configuration, the deadline logged at receipt and shown by `status`, and
extensions as the policy allows them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger import entries
from ledger.errors import BadInput
from ledger.log import open_ledger
from unlearning.data.records import RecordStore
from unlearning.operations.deadlines import PolicyTable, add_months, extend, policy_table
from unlearning.operations.receive import receive
from unlearning.operations.status import request_status

runner = CliRunner()


def t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def due(basis: str, received: str, zone: str = "UTC") -> str:
    return PolicyTable(zone=zone).terms(basis, t(received), None)["at"]


@pytest.mark.parametrize(("received", "deadline"), [
    ("2025-01-15T10:00:00Z", "2025-02-15T23:59:59.000Z"),  # the same day number next month, end of that day
    ("2025-01-31T10:00:00Z", "2025-02-28T23:59:59.000Z"),  # no Feb 31: the month's last day
    ("2024-01-31T10:00:00Z", "2024-02-29T23:59:59.000Z"),  # leap year
    ("2025-03-31T00:00:00Z", "2025-04-30T23:59:59.000Z"),
    ("2025-12-15T23:59:59Z", "2026-01-15T23:59:59.000Z"),  # across the year
    ("2025-03-01T08:00:00+09:00", "2025-03-28T23:59:59.000Z"),  # Feb 28 in UTC, the table's zone
])
def test_gdpr_is_one_calendar_month(received: str, deadline: str) -> None:
    assert due("GDPR Art. 17", received) == deadline


@pytest.mark.parametrize(("basis", "received", "deadline"), [
    ("CCPA", "2025-01-01T10:00:00Z", "2025-02-15T23:59:59.000Z"),  # the day of receipt does not count
    ("CCPA", "2024-02-01T00:00:00Z", "2024-03-17T23:59:59.000Z"),  # Feb 2024 has 29 days
    ("CCPA", "2025-02-01T00:00:00Z", "2025-03-18T23:59:59.000Z"),
    ("DROP", "2025-12-20T12:00:00Z", "2026-02-03T23:59:59.000Z"),
])
def test_ccpa_and_drop_are_45_calendar_days(basis: str, received: str, deadline: str) -> None:
    assert due(basis, received) == deadline


def test_days_are_counted_in_the_controllers_time_zone() -> None:
    received = "2025-01-30T22:00:00-05:00"  # Jan 31 03:00 in UTC, still Jan 30 in New York
    assert due("CCPA", received) == "2025-03-17T23:59:59.000Z"
    # Jan 30 + 45 = Mar 16, after the switch to daylight time (EDT, UTC-4) on Mar 9
    assert due("CCPA", received, "America/New_York") == "2025-03-17T03:59:59.000Z"
    assert due("GDPR Art. 17", "2025-10-25T23:30:00Z", "Europe/Berlin") == "2025-11-26T22:59:59.000Z"  # CEST -> CET


def test_add_months_clamps_to_the_month_end() -> None:
    from datetime import date

    assert add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 11, 30), 3) == date(2025, 2, 28)
    assert add_months(date(2025, 5, 31), 1) == date(2025, 6, 30)


def test_policies_match_names_and_unknown_bases_get_the_strictest() -> None:
    table = PolicyTable()
    assert table.match("gdpr  art. 17(1)(a)").name == "GDPR Art. 17"  # type: ignore[union-attr]
    assert table.match("CCPA §1798.105").name == "CCPA"  # type: ignore[union-attr]
    assert table.match("GDPR Art. 170") is None and table.match("LGPD Art. 18") is None
    terms = table.terms("LGPD Art. 18", t("2025-01-31T10:00:00Z"), None)
    assert (terms["policy"], terms["legal_basis"], terms["at"]) == ("GDPR Art. 17", "LGPD Art. 18",
                                                                   "2025-02-28T23:59:59.000Z")
    assert table.terms(None, t("2025-01-31T10:00:00Z"), None)["legal_basis"] == "GDPR Art. 17"
    configured = PolicyTable(default="DROP")
    assert configured.terms("LGPD Art. 18", t("2025-01-31T10:00:00Z"), None)["policy"] == "DROP"


def test_a_senders_deadline_is_kept_only_when_earlier() -> None:
    table = PolicyTable()
    earlier = table.terms("CCPA", t("2025-01-01T10:00:00Z"), t("2025-01-20T00:00:00+01:00"))
    assert (earlier["at"], earlier["set_by"], earlier["statutory"]) == (
        "2025-01-19T23:00:00.000Z", "sender", "2025-02-15T23:59:59.000Z")
    later = table.terms("CCPA", t("2025-01-01T10:00:00Z"), t("2099-01-01T00:00:00Z"))
    assert (later["at"], later["set_by"]) == ("2025-02-15T23:59:59.000Z", "policy")
    assert later["extendable_to"] == "2025-04-01T23:59:59.000Z" and later["max_extensions"] == 1
    drop = table.terms("DROP", t("2025-01-01T10:00:00Z"), None)
    assert drop["extendable_to"] is None and drop["max_extensions"] == 0


def test_the_table_is_configured_in_erasure_toml(workspace) -> None:  # type: ignore[no-untyped-def]
    workspace.ensure()
    workspace.config_file.write_text('[deadlines]\ntimezone = "Europe/Berlin"\ndefault = "LGPD"\n'
                                     '[deadlines.policies."LGPD"]\ndays = 15\n'
                                     '[deadlines.policies."CCPA"]\ndays = 30\nextension_days = 10\n')
    table = policy_table(workspace)
    assert table.zone == "Europe/Berlin" and table.policy("anything", t("2025-01-01T00:00:00Z")).name == "LGPD"
    ccpa = table.terms("CCPA", t("2025-01-01T10:00:00Z"), None)
    assert (ccpa["at"], ccpa["extendable_to"]) == ("2025-01-31T22:59:59.000Z", "2025-02-10T22:59:59.000Z")
    assert table.match("GDPR Art. 17").period == 1  # type: ignore[union-attr]  # defaults stay


@pytest.mark.parametrize(("toml", "reason"), [
    ('[deadlines]\ntimezone = "Mars/Olympus"\n', "not an IANA time zone"),
    ('[deadlines]\ndefault = "LGPD"\n', "names no policy"),
    ('[deadlines]\ngrace = 1\n', "unknown keys: grace"),
    ('[deadlines.policies."X"]\ndays = 10\nmonths = 1\n', "exactly one of days and months"),
    ('[deadlines.policies."X"]\ndays = 0\n', "days must be an integer >= 1"),
    ('[deadlines.policies."X"]\ndays = 10\nextension_months = 1\n', "use extension_days"),
])
def test_a_bad_table_is_one_line(workspace, toml: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    workspace.ensure()
    workspace.config_file.write_text(toml)
    with pytest.raises(BadInput, match=reason) as info:
        policy_table(workspace)
    assert "\n" not in str(info.value)


@pytest.fixture
def subjects(workspace, records) -> list[str]:  # type: ignore[no-untyped-def]
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=4, per_subject=1))
        return store.subjects()


def test_every_request_gets_a_deadline_at_receipt_and_status_shows_it(workspace, subjects) -> None:  # type: ignore[no-untyped-def]
    before = datetime.now(UTC)
    receive(workspace, "cli", subjects[0])  # as `erasure forget` does: no source, GDPR Art. 17 from now
    receive(workspace, "kafka", subjects[1], source={
        "via": "kafka", "requested_at": "2025-01-31T09:00:00+00:00", "deadline": None, "legal_basis": "CCPA"})
    receive(workspace, "early", subjects[2], source={
        "via": "kafka", "requested_at": "2025-01-31T09:00:00+00:00", "deadline": "2025-02-10T00:00:00+00:00"})
    with open_ledger(workspace) as ledger:
        logged = entries.read(ledger, entries.received_key("kafka"))
    assert logged["deadline"] == {  # type: ignore[index]
        "at": "2025-03-17T23:59:59.000Z", "set_by": "policy", "from": "2025-01-31T09:00:00.000Z",
        "legal_basis": "CCPA", "policy": "CCPA", "timezone": "UTC", "statutory": "2025-03-17T23:59:59.000Z",
        "extendable_to": "2025-05-01T23:59:59.000Z", "max_extensions": 1}

    now = t("2025-03-17T23:59:00Z")
    cli = request_status(workspace, "cli")
    assert cli["deadline_policy"]["policy"] == "GDPR Art. 17" and t(cli["deadline"]) > before
    assert cli["time_left_s"] > 27 * 86400 and cli["deadline_met"] is None
    kafka = request_status(workspace, "kafka", now=now)
    assert (kafka["deadline"], kafka["time_left_s"]) == ("2025-03-17T23:59:59.000Z", 59.0)
    early = request_status(workspace, "early", now=now)
    assert early["deadline"] == "2025-02-10T00:00:00.000Z" and early["deadline_policy"]["set_by"] == "sender"
    assert early["time_left_s"] < 0 and early["deadline_met"] is False  # open past its deadline


def test_extensions_as_the_policy_allows(workspace, subjects) -> None:  # type: ignore[no-untyped-def]
    source = {"via": "kafka", "requested_at": "2025-01-31T09:00:00+00:00"}
    for request_id, subject, basis in (("gdpr", 0, "GDPR Art. 17"), ("ccpa", 1, "CCPA"), ("drop", 2, "DROP")):
        receive(workspace, request_id, subjects[subject], source={**source, "legal_basis": basis})
    within = t("2025-02-20T00:00:00Z")

    first = extend(workspace, "gdpr", "complex request: 12 systems", days=30, now=within)
    assert (first.to_json()["at"], first.extensions[0]["previous"]) == ("2025-03-30T23:59:59.000Z",
                                                                        "2025-02-28T23:59:59.000Z")
    rest = extend(workspace, "gdpr", "still complex", now=within)  # default: as far as allowed
    assert rest.to_json()["at"] == "2025-04-30T23:59:59.000Z" and len(rest.extensions) == 2
    with pytest.raises(BadInput, match="extending to 2025-04-30T23:59:59.000Z at the latest"):
        extend(workspace, "gdpr", "more", days=1, now=within)
    status = request_status(workspace, "gdpr", now=within)
    assert status["deadline"] == "2025-04-30T23:59:59.000Z"
    assert [e["days"] for e in status["deadline_policy"]["extensions"]] == [30, 31]

    with pytest.raises(BadInput, match="at the latest"):
        extend(workspace, "ccpa", "busy", days=46, now=within)
    extend(workspace, "ccpa", "busy", days=10, now=within)
    with pytest.raises(BadInput, match="allows 1 extension"):
        extend(workspace, "ccpa", "busy again", days=10, now=within)
    with pytest.raises(BadInput, match="policy DROP allows no extension"):
        extend(workspace, "drop", "busy", now=within)

    receive(workspace, "late", subjects[3], source=source)
    with pytest.raises(BadInput, match="passed at 2025-02-28T23:59:59.000Z"):
        extend(workspace, "late", "too late", now=t("2025-03-01T00:00:00Z"))
    with pytest.raises(BadInput, match="needs a reason"):
        extend(workspace, "late", "  ", now=within)
    with pytest.raises(BadInput, match="no request 'nope'"):
        extend(workspace, "nope", "why", now=within)


def test_request_extend_on_the_command_line(workspace, subjects) -> None:  # type: ignore[no-untyped-def]
    receive(workspace, "r1", subjects[0], source={"via": "kafka", "legal_basis": "CCPA"})
    done = runner.invoke(app, ["request", "extend", "r1", "--reason", "backlog", "--days", "20", "--json"])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert shown["policy"] == "CCPA" and [e["days"] for e in shown["extensions"]] == [20]
    again = runner.invoke(app, ["request", "extend", "r1", "--reason", "backlog"])
    assert again.exit_code == 2 and again.stderr.strip().count("\n") == 0 and "allows 1 extension" in again.stderr
    status = runner.invoke(app, ["status", "r1"])
    assert "(CCPA, extended 1x, " in status.stdout and "days left)" in status.stdout
