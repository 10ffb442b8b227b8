"""The deadline watch (role `planner`): a `deadline_at_risk` event for a request that falls
behind after it was planned, not only for one that is late when it is planned (the planner's).

Every `interval_s` it reads the ledger's new `request_planned` entries, then looks at each
request still on the legal clock (`status_in`: a deadline, not yet complied, not in a final
stage). Its expected completion is its planned time + the measured pace (the median time from
planned to restored, `unlearning.operations.pace`), or now if that has passed without it
completing. When that is after its deadline, one event goes out, with `expected_at` and the
reason; a request is warned about once per planner process (the planner's plan-time warnings
count), so a restarted planner, or a second one, may warn about a request again: the event
says a fact of now, and repeating it is harmless.

The events go out through a plain idempotent producer (acks=all), outside the consumer loops'
transactions, as the approximator's do. A failed look (the ledger or Kafka away) is logged and
tried again at the next interval.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

from consumers.stages import describe, outcome_event
from consumers.topics import Topics
from ledger.errors import BadInput
from ledger.log import Ledger, log_exists, open_ledger
from producers.schemas import OutcomeEvent
from unlearning.operations.context import Context
from unlearning.operations.deadlines import parse_time
from unlearning.operations.pace import measured_pace
from unlearning.operations.status import status_in

log = logging.getLogger("erasure.serve")

INTERVAL_S = 60.0
_PAGE = 1000
_PLANNED = b'"type":"request_planned"'  # canonical JSON: no spaces, so a cheap test before parsing


class DeadlineWatch:
    name = "deadline-watch"

    def __init__(self, ctx: Context, topics: Topics, producer, stop: threading.Event,  # type: ignore[no-untyped-def]
                 interval_s: float = INTERVAL_S) -> None:
        self.ctx, self.topics, self.producer, self._stop, self.interval_s = ctx, topics, producer, stop, interval_s
        self.warned: set[str] = set()  # request ids warned about (the planner adds its own)
        self._open: dict[str, None] = {}  # planned requests that may still be on the clock, in ledger order
        self._seen = 0  # ledger entries read so far

    def run(self) -> None:
        """The thread: a look every interval until the service stops."""
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.look()
                except Exception as err:  # noqa: BLE001 - advisory: the ledger or Kafka away must not stop the service
                    log.warning("%s: no look this time (the next one tries again): %s: %s", self.name,
                                type(err).__name__, err)
        finally:
            self.producer.close()

    def look(self, now: datetime | None = None) -> list[OutcomeEvent]:
        """Warn about each open request now expected to miss its deadline; the events sent."""
        now = now or datetime.now(UTC)
        sent = []
        if not log_exists(self.ctx.ws):  # nothing received yet
            return sent
        with open_ledger(self.ctx.ws, create=False) as ledger:
            self._read_planned(ledger)
            pace = measured_pace(ledger) if self._open else None
            for rid in list(self._open):
                try:
                    status = status_in(ledger, rid, now)
                except BadInput:  # planned, never received (a log written by hand): no clock to watch
                    status = {"time_left_s": None}
                if status["time_left_s"] is None:  # complied, final, or no deadline: off the clock for good
                    del self._open[rid]
                    continue
                if rid in self.warned:
                    continue
                planned = parse_time(status["stages"]["planned"])
                expected = max(now, planned + timedelta(seconds=pace.seconds if pace else 0))
                deadline = parse_time(status["deadline"])
                if expected <= deadline:
                    continue
                late = expected == now  # its expected completion has passed: it is running late
                sent.append(outcome_event(rid, "deadline_at_risk", expected_at=expected,
                                          requested_at=status["requested_at"], deadline=status["deadline"], reason=(
                    f"still open at {now.isoformat()}, planned at {planned.isoformat()}; "
                    + ("past its expected completion" if late else f"expected to complete at {expected.isoformat()}")
                    + f" ({pace.describe() if pace else 'no request restored yet to measure'}), "
                    + f"{'and the deadline has passed' if now > deadline else 'after the deadline'}")))
        for event in sent:
            self.producer.send(self.topics.events, key=event.request_id.encode(), value=event.to_bytes())
            self.warned.add(event.request_id)
            log.info("%s: request %s: %s", self.name, event.request_id, describe(event))
        if sent:
            self.producer.flush()
        return sent

    def _read_planned(self, ledger: Ledger) -> None:
        size = ledger.size
        for start in range(self._seen, size, _PAGE):
            for _, raw in ledger.entries(start, min(_PAGE, size - start)):
                if _PLANNED in raw:
                    entry = json.loads(raw)
                    if entry["models"]:  # planned on no model: nothing to wait for
                        self._open[entry["request_id"]] = None
        self._seen = max(self._seen, size)
