"""The consumer loop's failure rules, on in-process fakes of the Kafka consumer and transactional
producer (tests/integration/test_pipeline.py runs the loop on the real broker): transient errors
are retried up to the budget, a permanent error isolates the bad message, a message that fails
for good goes to the handler's `dead_letter` with its offset committed, and a failed Kafka
transaction is retried without a budget."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator

import pytest
from kafka.errors import IllegalStateError, KafkaConnectionError, KafkaTimeoutError
from kafka.structs import TopicPartition

from consumers import loop as consumer_loop
from consumers.loop import Batching, ConsumerLoop, CorruptState, is_corrupt_state, is_transient
from consumers.stages import DLQ_VALUE_MAX, Outbox
from consumers.topics import Topics
from ledger.errors import BadInput, ServiceError, VerificationFailed

Record = namedtuple("Record", "topic partition offset key value")
TP = TopicPartition("in", 0)


class Waiting(ServiceError):
    retry_after_s = 0.01


@pytest.mark.parametrize(("err", "transient"), [
    (ServiceError("MLflow at http://x: unavailable"), True),
    (Waiting("an executor waits for the exclusion"), True),
    (KafkaConnectionError("broker away"), True),
    (KafkaTimeoutError("no broker"), True),
    (sqlite3.OperationalError("database is locked"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (BadInput("not valid JSON"), False),
    (VerificationFailed("digest mismatch"), False),
    (TypeError("the JSON object must be str, bytes or bytearray, not NoneType"), False),
    (KeyError("model"), False),
    (sqlite3.DatabaseError("database disk image is malformed"), False),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
])
def test_errors_are_transient_or_permanent(err: Exception, transient: bool) -> None:
    assert is_transient(err) is transient


class Consumer:
    """Delivers `records` on partition in/0 at the first poll, then nothing."""

    def __init__(self, records: list) -> None:
        self.records, self.listener, self.joined = records, None, False

    def subscribe(self, topics: list, listener) -> None:  # type: ignore[no-untyped-def]
        self.listener = listener

    def poll(self, timeout_ms: int) -> dict:
        if not self.joined:  # the first poll joins the group; the records come after
            self.joined = True
            self.listener.on_partitions_assigned([TP])
            return {}
        if self.records:
            records, self.records = self.records, []
            return {TP: records}
        time.sleep(0.002)
        return {}

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def resume(self, *partitions: TopicPartition) -> None:
        pass

    def assignment(self) -> set:
        return {TP}

    def group_metadata(self) -> None:
        return None

    def committed(self, tp: TopicPartition) -> int | None:
        return None

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        pass

    def close(self) -> None:
        pass


class Rebalancing(Consumer):
    """A log per partition read from a position, as a broker client does; the `rebalance_at`-th
    poll revokes every partition and assigns them back, keeping the positions (kafka-python 3)."""

    def __init__(self, logs: dict[TopicPartition, list], rebalance_at: int) -> None:
        super().__init__([])
        self.logs, self.rebalance_at, self.polls = logs, rebalance_at, 0
        self.positions = dict.fromkeys(logs, 0)
        self.commits: dict[TopicPartition, int] = {}

    def poll(self, timeout_ms: int) -> dict:
        self.polls += 1
        if self.polls == 1:
            self.listener.on_partitions_assigned(list(self.logs))
        if self.polls == self.rebalance_at:
            self.listener.on_partitions_revoked(list(self.logs))
            self.listener.on_partitions_assigned(list(self.logs))
        out = {}
        for tp, log in self.logs.items():
            if self.positions[tp] < len(log):
                out[tp] = log[self.positions[tp]:]
                self.positions[tp] = len(log)
        time.sleep(0.002)
        return out

    def assignment(self) -> set:
        return set(self.logs)

    def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0


class Producer:
    """A transactional producer whose first `failing` commits fail as with the broker away."""

    def __init__(self, failing: int = 0) -> None:
        self.failing, self.sent, self.committed, self._open = failing, [], {}, ([], {})

    def begin_transaction(self) -> None:
        self._open = ([], {})

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        self._open[0].append((topic, value, dict(headers)))

    def send_offsets_to_transaction(self, offsets: dict, group: object) -> None:
        self._open[1].update({tp: o.offset for tp, o in offsets.items()})

    def commit_transaction(self) -> None:
        if self.failing:
            self.failing -= 1
            raise KafkaConnectionError("broker away")
        self.sent += self._open[0]
        self.committed.update(self._open[1])

    def abort_transaction(self) -> None:
        self._open = ([], {})

    def close(self) -> None:
        pass

    def to(self, topic: str) -> list:
        return [(value, headers) for t, value, headers in self.sent if t == topic]


class Script(Batching):
    """Handles a message by sending its value to `out`, unless `errors` has exceptions left for
    it (a factory: every time)."""

    name = "script"

    def __init__(self, errors: dict[bytes, Iterator[Exception] | Callable[[], Exception]]) -> None:
        super().__init__()
        self.errors, self.calls = errors, []

    def handle(self, unit: list) -> Outbox:
        self.calls.append([r.value for r in unit])
        for record in unit:
            errors = self.errors.get(record.value)
            err = errors() if callable(errors) else next(errors, None) if errors else None
            if err is not None:
                raise err
        outbox = Outbox(Topics())
        for record in unit:
            outbox.send("out", None, record.value)
        return outbox

    def dead_letter(self, records: list, reason: str) -> Outbox:
        outbox = Outbox(Topics())
        for record in records:
            outbox.dead_letter("dlq", record, reason)
        return outbox


def run(handler: Script, values: list, producer: Producer, retries: int, done: Callable[[], bool]) -> None:
    records = [Record("in", 0, offset, None, value) for offset, value in enumerate(values)]
    run_loop(ConsumerLoop(handler, Consumer(records), producer, "in", retries=retries), done)


def run_loop(loop: ConsumerLoop, done: Callable[[], bool]) -> None:
    """Run `loop` in a thread until `done()` (at most 20 s), then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 20
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(20)
    assert done() and not thread.is_alive()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_loop, "BACKOFF_S", 0.01)


def test_a_permanent_error_isolates_the_bad_message() -> None:
    handler = Script({b"null": lambda: TypeError("the JSON object must be str, not NoneType\nmore")})
    producer = Producer()
    run(handler, [b"a", b"null", b"b"], producer, retries=5, done=lambda: producer.committed.get(TP) == 3)

    assert handler.calls == [[b"a", b"null", b"b"], [b"a"], [b"null"], [b"b"]]  # no retry: one by one at once
    assert [v for v, _ in producer.to("out")] == [b"a", b"b"]
    [(value, headers)] = producer.to("dlq")
    assert value == b"null" and headers["erasure.source"] == b"in/0/1"
    assert headers["erasure.reason"] == b"TypeError: the JSON object must be str, not NoneType"


def test_a_transient_error_past_the_budget_goes_to_the_dlq() -> None:
    handler = Script({b"flaky": lambda: ServiceError("MLflow at http://x: unavailable")})
    producer = Producer()
    run(handler, [b"a", b"flaky", b"b"], producer, retries=2, done=lambda: producer.committed.get(TP) == 3)

    # the unit: 1 try + 2 retries; then one try per message
    assert handler.calls == [[b"a", b"flaky", b"b"]] * 3 + [[b"a"], [b"flaky"], [b"b"]]
    assert [v for v, _ in producer.to("out")] == [b"a", b"b"]
    [(value, headers)] = producer.to("dlq")
    assert value == b"flaky"
    assert headers["erasure.reason"] == b"still failing after 2 retries: ServiceError: MLflow at http://x: unavailable"


def test_transient_errors_within_the_budget_and_waits_are_retried() -> None:
    handler = Script({b"a": iter([sqlite3.OperationalError("database is locked")] * 2),
                      b"b": iter([Waiting("waiting for the exclusion")] * 5)})  # a wait does not count
    producer = Producer()
    run(handler, [b"a", b"b"], producer, retries=2, done=lambda: producer.committed.get(TP) == 2)
    assert handler.calls == [[b"a", b"b"]] * 8 and not producer.to("dlq")
    assert [v for v, _ in producer.to("out")] == [b"a", b"b"]


def test_a_broker_outage_is_retried_without_a_budget() -> None:
    handler = Script({})
    producer = Producer(failing=4)
    run(handler, [b"a"], producer, retries=1, done=lambda: producer.committed.get(TP) == 1)
    assert handler.calls == [[b"a"]] * 5 and producer.to("out") == [(b"a", {})] and not producer.to("dlq")


class Unreachable(Consumer):
    """A consumer whose polls raise `errors` first (the broker away), then deliver."""

    def __init__(self, records: list, errors: list[Exception]) -> None:
        super().__init__(records)
        self.errors = errors

    def poll(self, timeout_ms: int) -> dict:
        if self.errors:
            raise self.errors.pop(0)
        return super().poll(timeout_ms)


def test_a_poll_failing_with_the_broker_away_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_loop, "POLL_MS", 1)
    handler, producer = Script({}), Producer()
    consumer = Unreachable([Record("in", 0, 0, None, b"a")],
                           [KafkaConnectionError("111 ECONNREFUSED"), KafkaTimeoutError("no coordinator")] * 3)
    loop = ConsumerLoop(handler, consumer, producer, "in", retries=0)
    run_loop(loop, lambda: producer.committed.get(TP) == 1)
    assert not consumer.errors and producer.committed.get(TP) == 1 and producer.to("out") == [(b"a", {})]


def test_a_poll_failing_for_good_stops_the_loop() -> None:
    consumer = Unreachable([], [IllegalStateError("KafkaConsumer is closed")])
    with pytest.raises(IllegalStateError, match="closed"):
        ConsumerLoop(Script({}), consumer, Producer(), "in").run(threading.Event())


def test_a_partition_handed_back_in_a_rebalance_is_read_again_from_its_committed_offset() -> None:
    """The executor lost its waiting job this way: the unit queued for a retry was dropped by the
    revocation, and the client, keeping the position of the partition it was given back, never
    delivered it again."""
    handler = Script({b"b": iter([Waiting("waiting for the exclusion")] * 3)})
    producer = Producer()
    consumer = Rebalancing({TP: [Record("in", 0, 0, None, b"a"), Record("in", 0, 1, None, b"b")]}, rebalance_at=3)
    loop = ConsumerLoop(handler, consumer, producer, "in", retries=5)
    run_loop(loop, lambda: producer.committed.get(TP) == 2)
    assert producer.committed.get(TP) == 2 and consumer.polls >= 3
    assert [v for v, _ in producer.to("out")].count(b"b") == 1


def test_a_dlq_copy_keeps_a_null_value_and_cuts_a_huge_one() -> None:
    outbox = Outbox(Topics())
    outbox.dead_letter("dlq", Record("in", 2, 7, b"k", None), "the value is null")
    outbox.dead_letter("dlq", Record("in", 2, 8, None, b"x" * (DLQ_VALUE_MAX + 5)), "r" * 5000)
    (_, key, null, headers), (_, _, cut, cut_headers) = outbox.messages
    assert key == b"k" and null is None and dict(headers)["erasure.source"] == b"in/2/7"
    assert len(cut) == DLQ_VALUE_MAX and dict(cut_headers)["erasure.truncated"] == str(DLQ_VALUE_MAX + 5).encode()
    assert len(dict(cut_headers)["erasure.reason"]) == 1000


def test_a_job_that_cannot_succeed_goes_to_the_jobs_dlq_as_failed(workspace) -> None:  # type: ignore[no-untyped-def]
    from consumers.stages import dead_letter_jobs
    from ledger import entries
    from ledger.log import open_ledger
    from producers.schemas import Job, OutcomeEvent, parse

    job = Job(model="m", shard=1, request_ids=["r1", "r2"])
    outbox = Outbox(Topics("t."))
    dead_letter_jobs(workspace, [Record("t.erasure.jobs", 3, 9, job.key, job.to_bytes()),
                                 Record("t.erasure.jobs", 3, 10, b"m/1", None)], "RuntimeError: boom", outbox)
    dlq = [(value, dict(headers)) for topic, _, value, headers in outbox.messages if topic == "t.erasure.jobs.dlq"]
    assert [(v, h["erasure.source"]) for v, h in dlq] == [(job.to_bytes(), b"t.erasure.jobs/3/9"),
                                                         (None, b"t.erasure.jobs/3/10")]
    assert dlq[0][1]["erasure.reason"] == b"RuntimeError: boom" and b"null" in dlq[1][1]["erasure.reason"]
    events = [parse(value, OutcomeEvent) for topic, _, value, _ in outbox.messages if topic == "t.erasure.events"]
    assert [(e.request_id, e.status, e.model, e.reason) for e in events] == [  # type: ignore[attr-defined]
        ("r1", "failed", "m", "RuntimeError: boom"), ("r2", "failed", "m", "RuntimeError: boom")]
    with open_ledger(workspace) as ledger:
        assert all(entries.read(ledger, entries.failed_key(r))["reason"] == "RuntimeError: boom"  # type: ignore[index]
                   for r in ("r1", "r2"))


def test_corrupt_state_stops_the_loop_and_commits_nothing() -> None:
    assert is_corrupt_state(sqlite3.DatabaseError("file is not a database"))
    assert not is_corrupt_state(sqlite3.OperationalError("database is locked"))
    assert not is_corrupt_state(sqlite3.IntegrityError("UNIQUE constraint failed"))
    handler = Script({b"b": lambda: sqlite3.DatabaseError("database disk image is malformed")})
    producer = Producer()
    records = [Record("in", 0, offset, None, value) for offset, value in enumerate([b"a", b"b"])]
    loop = ConsumerLoop(handler, Consumer(records), producer, "in", retries=5)
    with pytest.raises(CorruptState, match="a local store is corrupt.*malformed.*restore the workspace"):
        loop.run(threading.Event())
    assert not producer.to("dlq") and TP not in producer.committed  # nothing rejected, nothing committed
