"""The consumer loop the planner and the executors share (the delivery rules of design §8).

- Work never runs inside the poll loop: a unit of work (a batch of requests, a coalesced group
  of jobs) runs in a worker thread while the partitions it came from are paused, and the loop
  keeps calling `poll()`, so the consumer stays in its group however long a retrain takes.
- A unit's output (events, jobs, DLQ copies) and its offsets go out in one Kafka transaction,
  after the worker made its effects durable in the ledger. A crash before that commit
  redelivers the messages; every effect is idempotent, so a redelivery only repeats events.
- Offsets are committed per partition up to the first message not yet handled, so a unit that
  took later messages of a partition never commits past an earlier one still waiting.
- A rebalance while a unit runs: the unit finishes (its ledger effects stand) but commits no
  offsets; the partitions' owner gets the messages again and finds the work done.
- A unit that fails with a transient error (Kafka, MLflow, a busy database) is retried with
  backoff; handlers turn every other error into `failed` outcomes themselves.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Protocol

from consumers.stages import Outbox
from ledger.errors import ErasureError, ServiceError

log = logging.getLogger("erasure.serve")

POLL_MS = 200
MAX_BACKOFF_S = 30.0


class ProducerLost(ErasureError):
    """The transactional producer cannot go on (fenced by a newer instance with the same id)."""


def is_transient(err: BaseException) -> bool:
    """Errors that go away by waiting: retry the unit instead of failing its requests."""
    from kafka.errors import KafkaError

    return isinstance(err, (ServiceError, KafkaError, sqlite3.OperationalError, ConnectionError, TimeoutError))


class Handler(Protocol):
    name: str

    def take(self, records: list) -> None:
        """Buffer polled records (kafka ConsumerRecord)."""

    def ready(self, now: float) -> list | None:
        """The records of the next unit of work, if one is due."""

    def handle(self, unit: list) -> Outbox:
        """Do the work (in the worker thread); effects durable in the ledger before returning."""

    def forget(self, partitions: set) -> None:
        """Drop buffered records of partitions this consumer no longer owns."""


class Batching:
    """A handler whose unit of work is everything polled since its previous unit (the planner,
    the excluder): the longer a unit takes, the more the next one coalesces."""

    def __init__(self) -> None:
        self._buffer: list = []

    def take(self, records: list) -> None:
        self._buffer.extend(records)

    def ready(self, now: float) -> list | None:
        unit, self._buffer = self._buffer, []
        return unit or None

    def forget(self, partitions: set) -> None:
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) not in partitions]


class ConsumerLoop:
    def __init__(self, handler: Handler, consumer, producer, topic: str) -> None:  # type: ignore[no-untyped-def]
        self.handler, self.consumer, self.producer, self.topic = handler, consumer, producer, topic
        self._pending: dict = {}  # partition -> offsets taken and not yet handled
        self._seen: dict = {}  # partition -> highest offset taken
        self._rebalances = 0
        self.assigned: frozenset = frozenset()  # partitions this consumer owns now
        self._inflight: tuple[list, Future, int, int, float] | None = None  # unit, result, rebalances, attempt, start
        self._retry: tuple[list, float, int] | None = None  # unit, not before, attempt

    # rebalance listener (called inside poll(), on the loop's thread)
    def on_partitions_revoked(self, revoked: Iterable) -> None:
        revoked = set(revoked)
        self.assigned = self.assigned - revoked
        self._rebalances += 1
        self.handler.forget(revoked)
        for tp in revoked:
            self._pending.pop(tp, None)
            self._seen.pop(tp, None)
        self._retry = None  # its partition's new owner (maybe us again) gets the messages anew

    def on_partitions_assigned(self, assigned: Iterable) -> None:
        self.assigned = self.assigned | set(assigned)
        log.info("%s: assigned %s", self.handler.name,
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)) or "no partitions")

    def run(self, stop: threading.Event) -> None:
        from kafka import ConsumerRebalanceListener

        loop = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                loop.on_partitions_revoked(revoked)

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                loop.on_partitions_assigned(assigned)

        self.consumer.subscribe([self.topic], listener=Listener())
        try:
            # on stop: finish the unit in flight, hand back everything else (uncommitted)
            while not (stop.is_set() and self._inflight is None):
                self._take(self.consumer.poll(timeout_ms=POLL_MS))
                if self._inflight is not None and self._inflight[1].done():
                    self._complete()
                if self._inflight is None and not stop.is_set():
                    self._dispatch()
        finally:
            self.consumer.close()
            self.producer.close()

    def _take(self, polled: dict) -> None:
        records = [r for batch in polled.values() for r in batch]
        for r in records:
            tp = _tp(r)
            self._pending.setdefault(tp, set()).add(r.offset)
            self._seen[tp] = max(self._seen.get(tp, -1), r.offset)
        if records:
            self.handler.take(records)

    def _dispatch(self) -> None:
        now = time.monotonic()
        if self._retry is not None:
            unit, not_before, attempt = self._retry
            if now < not_before:
                return
            self._retry = None
        else:
            unit, attempt = self.handler.ready(now), 0
            if not unit:
                return
        future: Future = Future()

        def work() -> None:
            try:
                future.set_result(self.handler.handle(unit))
            except BaseException as err:  # noqa: BLE001 - handed to the loop thread
                future.set_exception(err)

        self.consumer.pause(*{_tp(r) for r in unit})
        self._inflight = (unit, future, self._rebalances, attempt, time.monotonic())
        # daemon: a forced shutdown must not wait for a retrain (its work is redone after restart)
        threading.Thread(target=work, name=f"{self.handler.name}-worker", daemon=True).start()

    def _complete(self) -> None:
        unit, future, rebalances, attempt, started = self._inflight  # type: ignore[misc]
        self._inflight = None
        partitions = {_tp(r) for r in unit}
        try:
            outbox = future.result()
            self._commit(unit, outbox, rebalances == self._rebalances)
            log.debug("%s: %d messages in %.2f s", self.handler.name, len(unit), time.monotonic() - started)
        except ProducerLost:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is retried: effects are idempotent
            if not is_transient(err):
                log.exception("%s: unexpected error, retrying", self.handler.name)
            attempt += 1
            # an error may say when to come back (an executor waiting for an exclusion)
            delay = getattr(err, "retry_after_s", None) or min(MAX_BACKOFF_S, 0.5 * 2 ** attempt)
            log.log(logging.DEBUG if hasattr(err, "retry_after_s") else logging.WARNING,
                    "%s: %s: %s; retrying in %.1f s", self.handler.name, type(err).__name__, err, delay)
            if rebalances == self._rebalances:
                self._retry = (unit, time.monotonic() + delay, attempt)
        finally:
            self.consumer.resume(*(partitions & self.consumer.assignment()))

    def _commit(self, unit: list, outbox: Outbox, owned: bool) -> None:
        """Send the unit's messages and commit its offsets in one transaction, then hand off
        what the unit leaves to work beside the loop (`Outbox.after`)."""
        try:
            self._transaction(unit, outbox, owned)
        finally:
            for hand_off in outbox.after:
                hand_off()

    def _transaction(self, unit: list, outbox: Outbox, owned: bool) -> None:
        from kafka.structs import OffsetAndMetadata

        offsets = {}
        if owned:
            for r in unit:
                self._pending.get(_tp(r), set()).discard(r.offset)
            for tp in {_tp(r) for r in unit} & self.consumer.assignment():
                waiting = self._pending.get(tp)
                offsets[tp] = OffsetAndMetadata(min(waiting) if waiting else self._seen[tp] + 1, "", -1)
        self.producer.begin_transaction()
        try:
            for topic, key, value, headers in outbox.messages:
                self.producer.send(topic, key=key, value=value, headers=headers)
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
        except Exception as err:
            try:
                self.producer.abort_transaction()
            except Exception as abort:  # noqa: BLE001 - fenced, or the producer is broken
                raise ProducerLost(f"cannot abort the Kafka transaction after {err!r}: {abort!r}") from err
            if owned:  # not committed: these records are still to do
                for r in unit:
                    self._pending.setdefault(_tp(r), set()).add(r.offset)
            raise
        for line in outbox.lines:
            log.info("%s: %s", self.handler.name, line)


def _tp(record):  # type: ignore[no-untyped-def]
    from kafka.structs import TopicPartition

    return TopicPartition(record.topic, record.partition)
