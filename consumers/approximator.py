"""The approximator (role `planner`): APPROXIMATE influence updates off the exact path (design §5).

For a request that asks for one, the planner reads the records before the store shreds them,
and the served adapters of the model's newest exact version that trained on them before the
request's exclusion can purge that version (`steps.hold`); it hands them here once its Kafka
transaction is over. One worker thread takes them in turn and runs `steps.approximate`: it
solves under no lock, beside the exclusion and the retrain; waits until the request's exclusion
on the model is logged (`request_excluded` or `exclusion_deferred`, or the request's failure),
polling the ledger; then, under the model's lock, publishes the update onto the newest exact
version unless the model has moved on (the retrain came first, another retrain since, another
erasure in an updated adapter), logs `request_approximated` and sends an `approximate` event.
So an approximate version is never published before the request's exclusion certificate, and
the retrain always supersedes it.

The records live only in this process's memory (the store has crypto-shredded or replaced
them): an update not yet published when the process stops is lost. On a graceful stop the
worker finishes a solve in flight, then logs every update it still holds as lost, with that
reason; the exact path is unaffected either way. The events go out through a plain idempotent
producer (acks=all), outside the consumer loops' transactions, once each: a redelivered
request has no records left to make another update from.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from consumers.stages import describe, outcome_event
from consumers.topics import Topics
from ledger import entries
from ledger.log import open_ledger
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations import steps
from unlearning.operations.context import Context

log = logging.getLogger("erasure.serve")

WAIT_S = 600.0  # at most this long for the request's exclusion after the solve
POLL_S = 0.5
STOPPED = ("the service stopped before the update was published: the records lived only in its memory "
           "(the exact path is unaffected)")


class Approximator:
    name = "approximator"

    def __init__(self, ctx: Context, topics: Topics, producer, settings: SolverSettings,  # type: ignore[no-untyped-def]
                 stop: threading.Event, wait_s: float = WAIT_S, poll_s: float = POLL_S) -> None:
        self.ctx, self.topics, self.producer, self.settings = ctx, topics, producer, settings
        self._stop, self.wait_s, self.poll_s = stop, wait_s, poll_s
        self._queue: queue.Queue[steps.PendingUpdate] = queue.Queue()

    def submit(self, pending: steps.PendingUpdate) -> None:
        """Take an update to make (from the planner's loop thread)."""
        self._queue.put(pending)

    def run(self, handing_off: Callable[[], bool] = lambda: False) -> None:
        """The worker thread: updates in turn until the service stops; after that, every update
        still held or handed off (`handing_off`: whether the planner may still hand one off, as it
        finishes its unit in flight) is logged lost."""
        try:
            while True:
                try:
                    pending = self._queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stop.is_set() and not handing_off():
                        break
                    continue
                if self._stop.is_set():
                    self._finish(pending, lambda p=pending: steps.give_up(self.ctx, p, STOPPED))  # type: ignore[misc]
                else:
                    self._finish(pending, lambda p=pending: steps.approximate(  # type: ignore[misc]
                        self.ctx, p, self.settings, ready=lambda: self._excluded(p)))
        finally:
            self.producer.close()

    def _finish(self, pending: steps.PendingUpdate, work) -> None:  # type: ignore[no-untyped-def]
        """Run `work` (an `ApproximationOutcome`), then send its event; an error is logged as the reason."""
        rid, model = pending.receipt.request_id, pending.model
        try:
            result = work()
        except Exception as err:  # noqa: BLE001 - the exact path goes on: log why there is no update
            log.exception("%s: request %s on %s", self.name, rid, model)
            try:
                result = steps.give_up(self.ctx, pending, f"{type(err).__name__}: {err}")
            except Exception:  # noqa: BLE001 - the ledger itself failed: nothing more to record
                log.exception("%s: cannot log request_approximated for %s", self.name, rid)
                return
        registered = result.registered
        event = outcome_event(rid, "approximate", model=model, version=registered and registered.version,
                              certificate_sha256=registered and registered.certificate_sha256, reason=result.reason)
        try:
            self.producer.send(self.topics.events, key=rid.encode(), value=event.to_bytes())
            self.producer.flush()
        except Exception as err:  # noqa: BLE001 - the ledger holds the outcome (`erasure status`)
            log.warning("%s: no event for request %s: %s", self.name, rid, err)
        log.info("%s: request %s: %s", self.name, rid, describe(event))

    def _excluded(self, pending: steps.PendingUpdate) -> str | None:
        """Wait until the request's exclusion on the model (or its failure) is logged: None, or why
        not (the service stopped, the wait ran out)."""
        rid, model = pending.receipt.request_id, pending.model
        deadline = time.monotonic() + self.wait_s
        while True:
            with open_ledger(self.ctx.ws) as ledger:
                if (ledger.find(entries.excluded_key(rid, model)) is not None
                        or ledger.find(entries.failed_key(rid)) is not None):
                    return None
            if self._stop.is_set():
                return STOPPED
            if time.monotonic() >= deadline:
                return f"its exclusion on {model} was not logged within {self.wait_s:g} s"
            self._stop.wait(self.poll_s)
