"""Deadlines in the pipeline, without Kafka: the planner's `deadline_at_risk` event from the
measured pace (the median time from planned to restored in the ledger), and the executor taking
the most urgent shard first when several are due."""

from __future__ import annotations

import time
from collections import namedtuple
from datetime import UTC, datetime, timedelta

import pytest

from consumers.planner import Planner
from consumers.topics import Topics
from ledger import entries
from ledger.log import open_ledger
from producers.schemas import ErasureRequest, Job, OutcomeEvent, parse
from unlearning.data.records import Provenance, RecordStore
from unlearning.operations.context import Context
from unlearning.operations.deadlines import iso
from unlearning.operations.pace import at_risk, measured_pace
from unlearning.operations.receive import receive

Record = namedtuple("Record", "topic partition offset key value")
TOPICS = Topics("t.")


def _log_at(monkeypatch: pytest.MonkeyPatch, workspace, when: datetime, *logged: entries.Entry) -> None:  # type: ignore[no-untyped-def]
    """Append entries with the ledger's clock set to `when`."""
    with monkeypatch.context() as patch, open_ledger(workspace) as ledger:
        patch.setattr("ledger.log.utc_now", lambda: iso(when))
        ledger.append_many(list(logged))


def _history(monkeypatch, workspace, days: list[float]) -> None:  # type: ignore[no-untyped-def]
    """Requests planned and restored `days` apart, long ago."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i, d in enumerate(days):
        _log_at(monkeypatch, workspace, start, entries.request_planned(f"old-{i}", {"m": [0]}))
        _log_at(monkeypatch, workspace, start + timedelta(days=d),
                entries.request_restored(f"old-{i}", "m", 0, 2, 2, "ab" * 32, ["j"], "x"))


def test_the_pace_is_the_median_planned_to_restored_of_recent_requests(monkeypatch, workspace) -> None:  # type: ignore[no-untyped-def]
    with open_ledger(workspace) as ledger:
        assert measured_pace(ledger) is None
    _history(monkeypatch, workspace, [1, 2, 10, 3, 40])
    with open_ledger(workspace) as ledger:
        pace = measured_pace(ledger)
        assert pace is not None and (pace.seconds, pace.sample) == (3 * 86400, 5)
        assert measured_pace(ledger, sample=2).seconds == (3 + 40) / 2 * 86400  # type: ignore[union-attr]  # the newest
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert at_risk(now + timedelta(days=2), now, pace) == now + timedelta(days=3)
    assert at_risk(now + timedelta(days=4), now, pace) is None
    assert at_risk(None, now, pace) is None
    assert at_risk(now - timedelta(seconds=1), now, None) == now  # no measurement: at risk once past due


@pytest.fixture
def planner(workspace, records) -> tuple[Planner, list[str]]:  # type: ignore[no-untyped-def]
    """A planner over model `m` (one version dir), whose shard 0 trained on every record."""
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=4, per_subject=1), split="train")
        subjects = store.subjects()
        store.add_provenance(Provenance(c, "m", 1, "c0", 0, 0, "train")
                             for s in subjects for c in store.commitments_of(s))
    (workspace.artifacts / "models" / "m" / "v1").mkdir(parents=True)
    return Planner(Context(workspace), TOPICS), subjects


def _handle(planner: Planner, *requests: ErasureRequest) -> dict[str, list[OutcomeEvent]]:
    unit = [Record(TOPICS.requests, 0, i, None, r.to_bytes()) for i, r in enumerate(requests)]
    events: dict[str, list[OutcomeEvent]] = {}
    for topic, _, value, _ in planner.handle(unit).messages:
        if topic == TOPICS.events:
            event: OutcomeEvent = parse(value, OutcomeEvent)  # type: ignore[assignment]
            events.setdefault(event.request_id, []).append(event)
    return events


def test_the_planner_warns_of_a_deadline_at_risk(monkeypatch, workspace, planner) -> None:  # type: ignore[no-untyped-def]
    planner, subjects = planner
    past = ErasureRequest(request_id="past", kind="erase_subject", subject_id=subjects[0], model="m",
                          deadline=datetime.now(UTC) - timedelta(hours=1))
    fine = ErasureRequest(request_id="fine", kind="erase_subject", subject_id=subjects[1], model="m")
    events = _handle(planner, past, fine)
    assert [e.status for e in events["fine"]] == ["received", "planned"]
    assert events["fine"][0].deadline is not None  # the policy's, though the sender set none
    risk = events["past"][-1]
    assert risk.status == "deadline_at_risk" and risk.schema_ == "erasure.event/v1.1"
    assert risk.expected_at > risk.deadline and "no request restored yet" in risk.reason  # type: ignore[operator]

    _history(monkeypatch, workspace, [40, 40, 40])  # restores take 40 days here: past GDPR's month, within CCPA's 45
    planner = Planner(Context(workspace), TOPICS)
    gdpr = ErasureRequest(request_id="gdpr", kind="erase_subject", subject_id=subjects[2], model="m")
    ccpa = ErasureRequest(request_id="ccpa", kind="erase_subject", subject_id=subjects[3], model="m",
                          legal_basis="CCPA")
    events = _handle(planner, gdpr, ccpa)
    assert [e.status for e in events["ccpa"]] == ["received", "planned"]
    risk = events["gdpr"][-1]
    assert risk.status == "deadline_at_risk" and "median planned-to-restored 3456000 s over the last 3" in risk.reason
    assert abs((risk.expected_at - datetime.now(UTC)) - timedelta(days=40)) < timedelta(minutes=1)  # type: ignore[operator]


def test_the_executor_takes_the_most_urgent_due_shard_first(workspace, records) -> None:  # type: ignore[no-untyped-def]
    from consumers.executor import Executor

    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=3, per_subject=1))
        subjects = store.subjects()
    soon = datetime.now(UTC) + timedelta(days=3)
    receive(workspace, "ccpa", subjects[0], source={"via": "kafka", "legal_basis": "CCPA"})  # 45 days
    receive(workspace, "soon", subjects[1], source={"via": "kafka", "deadline": soon.isoformat()})
    receive(workspace, "gdpr", subjects[2])  # a month
    executor = Executor(Context(workspace), TOPICS, window_s=60)

    def job(shard: int, *request_ids: str) -> Record:
        return Record(TOPICS.jobs, shard, 0, None, Job(model="m", shard=shard, request_ids=list(request_ids)).to_bytes())

    executor.take([job(0, "ccpa"), job(1, "unknown"), job(2, "gdpr")])
    executor.take([job(3, "ccpa", "soon")])  # the group's most urgent request counts
    now = time.monotonic()
    assert executor.ready(now) is None  # none due yet: the window still coalesces
    order = [parse(executor.ready(now + 61)[0].value, Job).shard for _ in range(4)]  # type: ignore[index, union-attr]
    assert order == [3, 2, 0, 1]  # soon, a month, 45 days, no deadline known
    assert executor.ready(now + 61) is None


def test_a_bad_deadlines_table_stops_the_planner_at_start_not_each_request(workspace) -> None:  # type: ignore[no-untyped-def]
    from ledger.errors import BadInput

    workspace.ensure()
    workspace.config_file.write_text('[deadlines]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(BadInput, match="not an IANA time zone"):
        Planner(Context(workspace), TOPICS)


class _Sent:
    """An in-process stand-in for the watch's Kafka producer (the real one is exercised by the
    approximator's events in the pipeline tests): what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[OutcomeEvent] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        assert topic == TOPICS.events
        event: OutcomeEvent = parse(value, OutcomeEvent)  # type: ignore[assignment]
        assert key == event.request_id.encode()
        self.sent.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_the_deadline_watch_warns_of_requests_that_fall_behind_once(monkeypatch, workspace, records) -> None:  # type: ignore[no-untyped-def]
    import threading

    from consumers.deadline_watch import DeadlineWatch

    producer = _Sent()
    watch = DeadlineWatch(Context(workspace), TOPICS, producer, threading.Event())
    assert watch.look() == []  # no ledger yet: nothing to look at, and none made
    assert not workspace.ledger_db.exists()
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=4, per_subject=1))
        subjects = store.subjects()
    _history(monkeypatch, workspace, [10, 10, 10])  # restores take 10 days here
    now = datetime.now(UTC)
    receive(workspace, "soon", subjects[0], source={"via": "kafka", "deadline": (now + timedelta(days=3)).isoformat()})
    receive(workspace, "ccpa", subjects[1], source={"via": "kafka", "legal_basis": "CCPA"})  # 45 days
    receive(workspace, "done", subjects[2], source={"via": "kafka", "deadline": (now + timedelta(days=1)).isoformat()})
    receive(workspace, "unplanned", subjects[3], source={"via": "kafka",
                                                          "deadline": (now - timedelta(days=1)).isoformat()})
    with open_ledger(workspace) as ledger:
        ledger.append_many([entries.request_planned(rid, {"m": [0]}) for rid in ("soon", "ccpa", "done")])
        ledger.append_many([entries.request_restored("done", "m", 0, 2, 2, "ab" * 32, ["j"], "x")])

    first = watch.look(now)
    assert [e.request_id for e in first] == ["soon"]  # planned + 10 days > 3 days; ccpa has 45; done is restored
    risk = first[0]
    assert risk.status == "deadline_at_risk" and risk.schema_ == "erasure.event/v1.1"
    assert risk.expected_at > risk.deadline  # type: ignore[operator]
    assert "expected to complete at" in risk.reason and "median planned-to-restored 864000 s" in risk.reason
    assert watch.look(now) == []  # once per request
    assert "done" not in watch._open  # off the clock for good: not looked at again

    later = now + timedelta(days=50)  # ccpa is still not complied, past its 45 days
    second = watch.look(later)
    assert [e.request_id for e in second] == ["ccpa"]
    assert second[0].expected_at == later and "past its expected completion" in second[0].reason
    assert "and the deadline has passed" in second[0].reason
    assert [e.request_id for e in producer.sent] == ["soon", "ccpa"]  # "unplanned" is the planner's to warn about

    watch.warned.clear()  # as a restarted planner: what is still at risk is said again, what was restored is not
    with open_ledger(workspace) as ledger:
        ledger.append_many([entries.request_restored("soon", "m", 0, 3, 3, "cd" * 32, ["j"], "x")])
    assert [e.request_id for e in watch.look(later)] == ["ccpa"]


def test_the_planner_shares_its_warnings_with_the_watch(workspace, planner) -> None:  # type: ignore[no-untyped-def]
    import threading

    from consumers.deadline_watch import DeadlineWatch

    planner, subjects = planner
    watch = DeadlineWatch(Context(workspace), TOPICS, _Sent(), threading.Event())
    planner = Planner(Context(workspace), TOPICS, warned=watch.warned)
    past = ErasureRequest(request_id="past", kind="erase_subject", subject_id=subjects[0], model="m",
                          deadline=datetime.now(UTC) - timedelta(hours=1))
    assert _handle(planner, past)["past"][-1].status == "deadline_at_risk"
    assert watch.warned == {"past"} and watch.look() == []  # not warned twice
