"""The approximator worker without Kafka: it waits for the request's exclusion, stops promptly,
and logs the updates it still holds as lost when the service stops."""

from __future__ import annotations

import threading
import time

from consumers.approximator import STOPPED, Approximator
from consumers.topics import Topics
from ledger import entries
from ledger.log import open_ledger
from producers.schemas import OutcomeEvent, parse
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations import steps
from unlearning.operations.context import Context
from unlearning.operations.receive import Receipt


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, OutcomeEvent]] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, parse(value, OutcomeEvent)))  # type: ignore[arg-type]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _pending(request_id: str, reason: str | None = None) -> steps.PendingUpdate:
    receipt = Receipt(request_id=request_id, ledger_index=0, commitments=("ab" * 32,))
    return steps.PendingUpdate("m", receipt, [], [], None, reason)


def _approximator(workspace, stop: threading.Event, **options: float) -> tuple[Approximator, Producer]:
    producer = Producer()
    return Approximator(Context(workspace), Topics("t."), producer, SolverSettings(), stop, **options), producer


def test_waits_for_the_exclusion_and_stops_promptly(workspace) -> None:
    stop = threading.Event()
    approximator, _ = _approximator(workspace, stop, wait_s=0.3, poll_s=0.05)
    pending = _pending("r1")
    assert approximator._excluded(pending) == "its exclusion on m was not logged within 0.3 s"
    with open_ledger(workspace) as ledger:
        ledger.append_many([entries.exclusion_deferred("r1", "m", "nothing left to serve")])
    assert approximator._excluded(pending) is None
    with open_ledger(workspace) as ledger:
        ledger.append_many([entries.request_failed("r2", "m", "broken")])
    assert approximator._excluded(_pending("r2")) is None  # the retrain is the way out: no reason to wait

    waiting, _ = _approximator(workspace, stop, wait_s=60, poll_s=0.05)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert waiting._excluded(_pending("r3")) == STOPPED and time.monotonic() - started < 5


def test_updates_in_turn_then_the_rest_logged_lost_on_stop(workspace) -> None:
    stop = threading.Event()
    approximator, producer = _approximator(workspace, stop)
    approximator.submit(_pending("r1", "no served adapter was trained on the records"))
    planner_done = threading.Event()
    thread = threading.Thread(target=approximator.run, args=(lambda: not planner_done.is_set(),))
    thread.start()
    deadline = time.monotonic() + 30
    while not producer.sent:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    time.sleep(0.5)
    assert thread.is_alive()  # the planner may still hand one off as it finishes its unit
    approximator.submit(_pending("r2"))  # handed off as the service stops: its records are lost
    planner_done.set()
    thread.join(30)
    assert not thread.is_alive() and producer.closed
    events = {key.decode(): event for _, key, event in producer.sent}
    assert {topic for topic, _, _ in producer.sent} == {"t.erasure.events"}
    assert events["r1"].status == "approximate" and events["r1"].version is None
    assert events["r1"].reason == "no approximate update: no served adapter was trained on the records"
    assert events["r2"].reason == f"no approximate update: {STOPPED}"
    with open_ledger(workspace) as ledger:
        logged = {r: entries.read(ledger, entries.approximated_key(r, "m")) for r in ("r1", "r2")}
    assert logged["r1"]["reason"] == events["r1"].reason and logged["r2"]["reason"] == events["r2"].reason
