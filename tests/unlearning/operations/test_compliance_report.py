"""The compliance report on a scripted ledger: entries appended with the real ledger API at known
times (the ledger's clock patched), and every figure, with its ledger indices, checked exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger import entries
from ledger.errors import BadInput
from ledger.log import open_ledger
from unlearning.operations.deadlines import PolicyTable, iso
from unlearning.operations.report import compliance_report, to_html

runner = CliRunner()
NOW = datetime(2025, 3, 15, tzinfo=UTC)


def day(text: str) -> datetime:
    """A time; UTC unless it names its offset."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Script:
    """Appends entries to the workspace's ledger at given times; remembers their indices by name."""

    def __init__(self, workspace, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
        self.ws, self.monkeypatch, self.at = workspace, monkeypatch, {}

    def log(self, name: str, when: str, entry: entries.Entry) -> int:
        with self.monkeypatch.context() as patch, open_ledger(self.ws) as ledger:
            patch.setattr("ledger.log.utc_now", lambda: iso(day(when)))
            self.at[name] = ledger.append_many([entry])[0]
        return self.at[name]

    def receive(self, rid: str, when: str, basis: str, model: str | None = "m", sender: str | None = None) -> int:
        terms = PolicyTable().terms(basis, day(when), day(sender) if sender else None)
        source = {"via": "kafka", "requested_at": when, "legal_basis": basis, "deadline": sender}
        return self.log(f"{rid}.received", when, entries.request_received(
            rid, "erase_subject", "tag-" + rid, model, ["00" * 32], source, deadline=terms))

    def excluded(self, rid: str, when: str, model: str = "m") -> int:
        return self.log(f"{rid}.excluded.{model}", when,
                        entries.request_excluded(rid, model, 2, 2, "ab" * 32, ["c0"]))

    def restored(self, rid: str, when: str, model: str = "m", shard: int = 0) -> int:
        return self.log(f"{rid}.restored.{model}.{shard}", when,
                        entries.request_restored(rid, model, shard, 3, 3, "cd" * 32, ["j"], "x"))


@pytest.fixture
def script(workspace, monkeypatch: pytest.MonkeyPatch) -> Script:  # type: ignore[no-untyped-def]
    s = Script(workspace, monkeypatch)
    # a: GDPR; certified exclusion after 2 days, restored after 5
    s.receive("a", "2025-01-10T00:00:00", "GDPR Art. 17")
    s.log("a.planned", "2025-01-10T00:00:00", entries.request_planned("a", {"m": [0]}))
    s.excluded("a", "2025-01-12T00:00:00")
    s.restored("a", "2025-01-15T00:00:00")
    # b: CCPA, two models; m excluded after 1 day, n has no exclusion (nothing left to serve) and complies
    # when its shard is restored (day 4); m's shards restored on days 4 and 6
    s.receive("b", "2025-01-20T00:00:00", "CCPA", model=None)
    s.log("b.planned", "2025-01-20T00:00:00", entries.request_planned("b", {"m": [0, 1], "n": [0]}))
    s.excluded("b", "2025-01-21T00:00:00")
    s.log("b.deferred.n", "2025-01-21T00:00:00", entries.exclusion_deferred("b", "n", "nothing left to serve"))
    s.restored("b", "2025-01-24T00:00:00", "n", 0)
    s.restored("b", "2025-01-24T00:00:00", "m", 0)
    s.restored("b", "2025-01-26T00:00:00", "m", 1)
    # c: GDPR (due Feb 5), extended by 30 days to Mar 7, excluded on day 46: met, extended
    s.receive("c", "2025-01-05T00:00:00", "GDPR Art. 17")
    s.log("c.planned", "2025-01-05T00:00:00", entries.request_planned("c", {"m": [0]}))
    s.log("c.extended", "2025-01-20T00:00:00", entries.request_extended(
        "c", 1, "2025-03-07T23:59:59.000Z", "2025-02-05T23:59:59.000Z", 30, "complex"))
    s.excluded("c", "2025-02-20T00:00:00")
    # d: DROP (due Mar 11), failed, still open at NOW: missed
    s.receive("d", "2025-01-25T12:00:00", "DROP")
    s.log("d.planned", "2025-01-25T12:00:00", entries.request_planned("d", {"m": [1]}))
    s.log("d.failed", "2025-01-26T00:00:00", entries.request_failed("d", "m", "retrain failed: out of memory"))
    # e: no model trained on the records: complied when planned
    s.receive("e", "2025-01-28T00:00:00", "GDPR Art. 17", model=None)
    s.log("e.planned", "2025-01-28T00:00:00", entries.request_planned("e", {}))
    # g: the sender's deadline (Feb 1) kept; excluded Feb 3: missed
    s.receive("g", "2025-01-30T00:00:00", "GDPR Art. 17", sender="2025-02-01T00:00:00")
    s.log("g.planned", "2025-01-30T00:00:00", entries.request_planned("g", {"m": [0]}))
    s.excluded("g", "2025-02-03T00:00:00")
    # outside the period: received Dec 31 in UTC; Jan 31 in New York but Feb 1 in UTC
    s.receive("f", "2024-12-31T23:00:00", "GDPR Art. 17")
    s.receive("h", "2025-01-31T23:00:00-05:00", "GDPR Art. 17")
    # rejected messages, by when they were rejected
    s.log("bad1", "2025-01-15T00:00:00", entries.request_rejected("bad1", "no model named 'x'"))
    s.log("bad2", "2025-01-16T00:00:00", entries.request_rejected("bad2", "no model named 'x'"))
    s.log("bad3", "2025-01-17T00:00:00", entries.request_rejected("kafka:t/0/9", "not valid JSON: x"))
    s.log("bad4", "2025-02-05T00:00:00", entries.request_rejected("bad4", "not valid JSON: y"))
    return s


def test_the_figures_of_a_scripted_ledger(workspace, script: Script) -> None:  # type: ignore[no-untyped-def]
    i = script.at
    report = compliance_report(workspace, "2025-01-01", "2025-01-31", now=NOW)
    assert report["period"] == {"from": "2025-01-01T00:00:00.000Z", "to": "2025-02-01T00:00:00.000Z", "timezone": "UTC"}
    with open_ledger(workspace) as ledger:
        assert report["ledger"] == {"size": ledger.size, "root": ledger.root().hex()}
    assert report["rejected"] == {"count": 3, "by_reason": {
        "no model named 'x'": {"count": 2, "indices": [i["bad1"], i["bad2"]]},
        "not valid JSON: x": {"count": 1, "indices": [i["bad3"]]}}}

    every = report["requests"]
    received = sorted(i[f"{r}.received"] for r in "abcdeg")
    assert every["received"] == {"count": 6, "indices": received}
    assert every["complied"] == {"count": 5, "indices": sorted(i[f"{r}.received"] for r in "abceg")}
    assert every["open"] == {"count": 1, "indices": [i["d.received"]]}
    assert every["failed"] == {"count": 1, "indices": [i["d.failed"]], "by_reason": {
        "retrain failed: out of memory": {"count": 1, "indices": [i["d.failed"]]}}}
    # days to exact compliance: a 2, b 4 (n's restore), c 46, e 0, g 4
    assert every["days_to_compliance"] == {"count": 5, "median": 4.0, "mean": 11.2, "indices": sorted([
        [i["a.received"], i["a.excluded.m"]], [i["b.received"], i["b.restored.n.0"]],
        [i["c.received"], i["c.excluded.m"]], [i["e.received"], i["e.planned"]],
        [i["g.received"], i["g.excluded.m"]]])}
    assert every["days_to_restoration"] == {"count": 2, "median": 5.5, "mean": 5.5, "indices": [
        [i["a.received"], i["a.restored.m.0"]], [i["b.received"], i["b.restored.m.1"]]]}
    assert every["deadlines"] == {
        "met": {"count": 4, "indices": sorted([[i[f"{r}.received"], i[k]] for r, k in (
            ("a", "a.excluded.m"), ("b", "b.restored.n.0"), ("c", "c.excluded.m"), ("e", "e.planned"))])},
        "missed": {"count": 2, "indices": [[i["d.received"]], [i["g.received"], i["g.excluded.m"]]]},
        "pending": {"count": 0, "indices": []}, "none": {"count": 0, "indices": []},
        "extended": {"count": 1, "indices": [i["c.extended"]]}}

    assert sorted(report["by_legal_basis"]) == ["CCPA", "DROP", "GDPR Art. 17"]
    gdpr = report["by_legal_basis"]["GDPR Art. 17"]
    assert gdpr["received"]["count"] == 4 and gdpr["days_to_compliance"]["median"] == 3.0  # 2, 46, 0, 4
    assert report["by_legal_basis"]["DROP"]["deadlines"]["missed"]["count"] == 1

    assert sorted(report["by_model"]) == ["(all models)", "m", "n"]
    m, n = report["by_model"]["m"], report["by_model"]["n"]
    assert m["received"]["indices"] == sorted(i[f"{r}.received"] for r in "abcdg")
    assert m["days_to_compliance"] == {"count": 4, "median": 3.0, "mean": 13.25, "indices": sorted([  # 2, 1, 46, 4
        [i["a.received"], i["a.excluded.m"]], [i["b.received"], i["b.excluded.m"]],
        [i["c.received"], i["c.excluded.m"]], [i["g.received"], i["g.excluded.m"]]])}
    assert m["days_to_restoration"]["indices"] == [[i["a.received"], i["a.restored.m.0"]],
                                                   [i["b.received"], i["b.restored.m.1"]]]
    assert (n["received"]["count"], n["days_to_compliance"]["median"], n["days_to_restoration"]["median"]) == (1, 4.0, 4.0)
    assert report["by_model"]["(all models)"]["complied"]["indices"] == [i["e.received"]]


def test_periods_follow_the_configured_time_zone_and_times(workspace, script: Script) -> None:  # type: ignore[no-untyped-def]
    workspace.config_file.write_text('[deadlines]\ntimezone = "America/New_York"\n')
    ny = compliance_report(workspace, "2025-01-31", "2025-01-31", now=NOW)
    assert ny["period"]["from"] == "2025-01-31T05:00:00.000Z"  # h (Jan 31, 23:00 in New York) is in, g is not
    assert ny["requests"]["received"]["indices"] == [script.at["h.received"]]
    exact = compliance_report(workspace, "2025-01-10T00:00:00Z", "2025-01-10T00:00:01Z", now=NOW)
    assert exact["requests"]["received"]["indices"] == [script.at["a.received"]]
    for start, end, reason in (("2025-02-01", "2025-01-01", "is empty"), ("Jan 1", "2025-01-31", "neither a date"),
                               ("2025-01-01T00:00:00", "2025-01-31", "needs a timezone")):
        with pytest.raises(BadInput, match=reason):
            compliance_report(workspace, start, end, now=NOW)


def test_the_command_prints_json_and_writes_a_self_contained_page(workspace, script: Script, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = runner.invoke(app, ["report", "compliance", "--from", "2025-01-01", "--to", "2025-01-31", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["requests"]["received"]["count"] == 6 and shown["rejected"]["count"] == 3
    assert datetime.fromisoformat(shown["as_of"]) > NOW + timedelta(days=1)

    page = tmp_path / "report.html"
    written = runner.invoke(app, ["report", "compliance", "--from", "2025-01-01", "--to", "2025-01-31", "--html", str(page)])
    assert written.exit_code == 0 and f"wrote {page}" in written.stdout
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Erasure compliance report" in html
    assert not any(ref in html.lower() for ref in ("http:", "https:", "<script", "<link", "src=", "@import", "url("))
    assert "no model named &#x27;x&#x27;" in html and "GDPR Art. 17" in html
    assert to_html(compliance_report(workspace, "2025-01-01", "2025-01-31", now=NOW)).count("<table>") == 4

    summary = runner.invoke(app, ["report", "compliance", "--from", "2025-01-01", "--to", "2025-01-31"])
    assert summary.exit_code == 0 and "all: received 6, complied 5" in summary.stdout
    bad = runner.invoke(app, ["report", "compliance", "--from", "2025-02-01", "--to", "2025-01-01"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
