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
  offsets; the partitions' owner gets the messages again and finds the work done. Every
  partition assigned, also one handed back to the same consumer, is read again from its
  committed offset.
- Failures (`is_transient` classifies them). A unit whose handler fails with a transient error
  (Kafka, MLflow, the registry or a database unavailable: `ServiceError`, `KafkaError`,
  `sqlite3.OperationalError`, `ConnectionError`, `TimeoutError`) is retried with backoff (1 s,
  doubling, at most 30 s) up to `retries` times (RETRIES = 30 by default: about 13 minutes);
  an error that says when to come back (`retry_after_s`: an executor waiting for an exclusion)
  is a wait, not a failure, and does not count. Any other error is permanent: null values,
  oversized or undecodable messages (the handlers' parsing turns those into DLQ copies without
  failing the unit), bugs. Corrupt local state (SQLite's "malformed" `DatabaseError`) is neither:
  the loop stops with `CorruptState` (the service with it) and commits nothing, since every
  message would fail the same way. A unit that fails for good (a permanent error, or
  a transient one past the budget) is isolated: a unit of several messages is retried message by
  message, in order, before anything else (after a permanent error each with the full budget,
  after the budget ran out with one try each), so its valid messages are still handled; a single
  message that fails for good goes to the handler's `dead_letter` (the planner: the requests
  DLQ, `request_rejected` and a `rejected` event; the excluder and executors: the jobs DLQ,
  `request_failed` and a `failed` event), whose outbox commits the message's offset in the same
  transaction, and the loop moves on.
- A failed Kafka transaction (the broker away) is retried with the same backoff and no budget:
  a DLQ needs the broker too, and the handler's work is already durable.
- A failed poll (the broker away) is retried with backoff and no budget, like the transaction:
  the service outlives a broker restart however long it takes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

from consumers.stages import Outbox
from ledger import failpoints
from ledger.errors import CorruptState, ErasureError, ServiceError

log = logging.getLogger("erasure.serve")

POLL_MS = 200
BACKOFF_S = 1.0  # the first retry's delay; doubling up to MAX_BACKOFF_S
MAX_BACKOFF_S = 30.0
RETRIES = 30  # transient failures of a unit's handler before it fails for good: 1+2+4+8+16+25*30 s, ~13 min


class ProducerLost(ErasureError):
    """The transactional producer cannot go on (fenced by a newer instance with the same id)."""


def is_transient(err: BaseException) -> bool:
    """Errors that go away by waiting (a broker, the registry or a database unavailable): retry
    the unit; any other error is permanent."""
    from kafka.errors import KafkaError

    return isinstance(err, (ServiceError, KafkaError, sqlite3.OperationalError, ConnectionError, TimeoutError))


def is_corrupt_state(err: BaseException) -> bool:
    """`CorruptState`, or SQLite's own corruption errors ("database disk image is malformed",
    "file is not a database"): `sqlite3.DatabaseError` itself, not its subclasses (locks,
    constraints, bugs). The loop stops on it; its messages stay uncommitted."""
    return isinstance(err, CorruptState) or type(err) is sqlite3.DatabaseError


def failure_reason(err: BaseException, retries: int | None = None) -> str:
    """One line for a DLQ header and the ledger: the error, and the retries spent on it if any."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if retries is None else f"still failing after {retries} retries: {text}"


@dataclass(frozen=True)
class _Unit:
    records: list
    failures: int = 0  # transient failures of the handler: the retry budget
    tries: int = 0  # failures of any kind in a row: the backoff
    not_before: float = 0.0
    reason: str | None = None  # set: the records failed for good, dead-letter them with this reason


class Handler(Protocol):
    name: str

    def take(self, records: list) -> None:
        """Buffer polled records (kafka ConsumerRecord)."""

    def ready(self, now: float) -> list | None:
        """The records of the next unit of work, if one is due."""

    def handle(self, unit: list) -> Outbox:
        """Do the work (in the worker thread); effects durable in the ledger before returning."""

    def dead_letter(self, records: list, reason: str) -> Outbox:
        """Messages that failed for good: their DLQ copies and outcomes (in the worker thread)."""

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
    def __init__(self, handler: Handler, consumer, producer, topic: str,  # type: ignore[no-untyped-def]
                 retries: int = RETRIES) -> None:
        """`retries`: transient failures of a unit's handler before it fails for good."""
        self.handler, self.consumer, self.producer, self.topic = handler, consumer, producer, topic
        self.retries = retries
        self._pending: dict = {}  # partition -> offsets taken and not yet handled
        self._seen: dict = {}  # partition -> highest offset taken
        self._rebalances = 0
        self.assigned: frozenset = frozenset()  # partitions this consumer owns now
        self._inflight: tuple[_Unit, Future, int, float] | None = None  # unit, result, rebalances, start
        self._queue: deque[_Unit] = deque()  # units to retry (or dead-letter) before new ones
        self._poll_failures = 0  # polls failed in a row (the broker away): the backoff
        self._reseek: set = set()  # partitions assigned and not yet moved back to their committed offset

    # rebalance listener (called inside poll(), on the loop's thread)
    def on_partitions_revoked(self, revoked: Iterable) -> None:
        revoked = set(revoked)
        self.assigned = self.assigned - revoked
        self._rebalances += 1
        self.handler.forget(revoked)
        for tp in revoked:
            self._pending.pop(tp, None)
            self._seen.pop(tp, None)
        self._queue.clear()  # its partition's new owner (maybe us again) gets the messages anew

    def on_partitions_assigned(self, assigned: Iterable) -> None:
        assigned = set(assigned)
        self.assigned = self.assigned | assigned
        # Every assigned partition starts again from its committed offset (`_poll` seeks there:
        # a listener may not block on the broker). The revocation dropped what this loop held of
        # it (buffered, queued, in flight), and a client that keeps the fetch position of a
        # partition it is given back (kafka-python 3 does) would never deliver those again.
        self._reseek |= assigned
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
                self._take(self._poll(stop))
                if self._inflight is not None and self._inflight[1].done():
                    self._complete()
                if self._inflight is None and not stop.is_set():
                    self._dispatch()
        finally:
            self.consumer.close()
            self.producer.close()

    def _poll(self, stop: threading.Event) -> dict:
        """One poll. The broker away (a retriable Kafka error: connection refused, coordinator
        unknown, timed out) is waited out with backoff for as long as it lasts, the unit in flight
        going on meanwhile; any other Kafka error (the consumer closed, bad configuration) stops
        the loop."""
        from kafka.errors import KafkaError

        try:
            # partitions assigned in an earlier poll: back to their committed offsets before
            # fetching (a failure here loses nothing: nothing was fetched yet)
            for tp in sorted(self._reseek & self.consumer.assignment()):
                committed = self.consumer.committed(tp)
                if committed is None:
                    self.consumer.seek_to_beginning(tp)  # auto_offset_reset="earliest"
                else:
                    self.consumer.seek(tp, committed)
                self._reseek.discard(tp)
            self._reseek &= self.consumer.assignment()
            polled = self.consumer.poll(timeout_ms=POLL_MS)
            # partitions assigned in this poll: what it fetched of them is read again after the seek
            polled = {tp: records for tp, records in polled.items() if tp not in self._reseek}
        except KafkaError as err:
            if not err.retriable:
                raise
            self._poll_failures += 1
            delay = min(MAX_BACKOFF_S, POLL_MS / 1000 * 2 ** (self._poll_failures - 1))
            log.warning("%s: poll failed (%s); polling again in %.1f s", self.handler.name, failure_reason(err), delay)
            stop.wait(delay)
            return {}
        self._poll_failures = 0
        return polled

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
        if self._queue:
            if now < self._queue[0].not_before:
                return
            unit = self._queue.popleft()
        else:
            records = self.handler.ready(now)
            if not records:
                return
            unit = _Unit(records)
        future: Future = Future()

        def work() -> None:
            try:
                if unit.reason is None:
                    future.set_result(self.handler.handle(unit.records))
                else:
                    future.set_result(self.handler.dead_letter(unit.records, unit.reason))
            except BaseException as err:  # noqa: BLE001 - handed to the loop thread
                future.set_exception(err)

        self.consumer.pause(*{_tp(r) for r in unit.records})
        self._inflight = (unit, future, self._rebalances, time.monotonic())
        # daemon: a forced shutdown must not wait for a retrain (its work is redone after restart)
        threading.Thread(target=work, name=f"{self.handler.name}-worker", daemon=True).start()

    def _complete(self) -> None:
        unit, future, rebalances, started = self._inflight  # type: ignore[misc]
        self._inflight = None
        owned = rebalances == self._rebalances  # else the partitions' owner gets the messages anew
        try:
            try:
                outbox = future.result()
            except Exception as err:  # noqa: BLE001 - classified: retried, isolated or dead-lettered
                if owned:
                    self._failed(unit, err)
                return
            failpoints.reach(f"{self.handler.name}.before_commit")
            try:
                self._commit(unit.records, outbox, owned)
            except ProducerLost:
                raise
            except Exception as err:  # noqa: BLE001 - the transaction: retried without a budget
                if owned:
                    self._retry(err, replace(unit, tries=unit.tries + 1))
                return
            log.debug("%s: %d messages in %.2f s", self.handler.name, len(unit.records), time.monotonic() - started)
        finally:
            self.consumer.resume(*({_tp(r) for r in unit.records} & self.consumer.assignment()))

    def _failed(self, unit: _Unit, err: Exception) -> None:
        """A handler failed: stop on corrupt state, else retry the unit, split it, or dead-letter
        its one message."""
        if is_corrupt_state(err):
            raise CorruptState(f"{self.handler.name}: a local store is corrupt ({failure_reason(err)}): stopping; "
                               "restore the workspace from a backup, then restart") from err
        waiting = getattr(err, "retry_after_s", None) is not None
        transient = is_transient(err)
        failures = unit.failures + int(transient and not waiting)
        if unit.reason is not None or waiting or (transient and failures <= self.retries):
            if unit.reason is not None:  # dead-lettering must not fail: a bug, or the ledger away
                log.exception("%s: sending to the DLQ failed", self.handler.name, exc_info=err)
            self._retry(err, replace(unit, failures=failures, tries=unit.tries + 1))
            return
        if not transient:
            log.error("%s: permanent error on %d messages: %s", self.handler.name, len(unit.records),
                      failure_reason(err), exc_info=err)
        if len(unit.records) > 1:  # isolate the bad message: one by one, in order, before anything else
            again = 0 if not transient else self.retries
            self._queue.extendleft(reversed([_Unit([r], failures=again) for r in unit.records]))
            return
        reason = failure_reason(err, self.retries if transient else None)
        self._queue.appendleft(_Unit(unit.records, reason=reason))

    def _retry(self, err: Exception, again: _Unit) -> None:
        # an error may say when to come back (an executor waiting for an exclusion)
        delay = getattr(err, "retry_after_s", None) or min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (again.tries - 1))
        log.log(logging.DEBUG if hasattr(err, "retry_after_s") else logging.WARNING,
                "%s: %s; retrying in %.1f s", self.handler.name, failure_reason(err), delay)
        self._queue.appendleft(replace(again, not_before=time.monotonic() + delay))

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
