"""How long requests take, measured from the ledger, and whether a planned one will miss its deadline.

The estimate: a request planned now is expected to complete at now + the median time from
`request_planned` to its last `request_restored` over the SAMPLE requests restored most
recently (read back from the end of the ledger, at most SCAN entries). It measures the whole
path (queueing, exclusion, the coalesced retrain, publishing) on this deployment's own
hardware and load, and takes the restore, not the earlier exclusion, as completion, so the
warning comes early rather than late. With no restored request yet there is no estimate, and
a request is at risk only when its deadline has already passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from ledger import entries
from ledger.log import Ledger
from unlearning.operations.deadlines import parse_time

SAMPLE = 20
SCAN = 5000
_PAGE = 500
_RESTORED = b'"type":"request_restored"'  # canonical JSON: no spaces, so a cheap test before parsing


@dataclass(frozen=True)
class Pace:
    seconds: float  # median time from planned to restored
    sample: int  # over how many recently restored requests

    def describe(self) -> str:
        return f"median planned-to-restored {self.seconds:.0f} s over the last {self.sample} restored requests"


def measured_pace(ledger: Ledger, sample: int = SAMPLE, scan: int = SCAN) -> Pace | None:
    """The median planned-to-restored time of the last `sample` restored requests (None: none yet)."""
    size = ledger.size
    floor = max(0, size - scan)
    last_restored: dict[str, str] = {}  # request id -> its latest restored time, newest request first
    stop = size
    while stop > floor and len(last_restored) < sample:
        start = max(floor, stop - _PAGE)
        for _, raw in reversed(ledger.entries(start, stop - start)):
            if _RESTORED in raw:
                entry = json.loads(raw)
                last_restored.setdefault(entry["request_id"], entry["at"])
                if len(last_restored) >= sample:
                    break
        stop = start
    durations = []
    for request_id, restored_at in last_restored.items():
        planned = entries.read(ledger, entries.planned_key(request_id))
        if planned is not None:
            durations.append((parse_time(restored_at) - parse_time(planned["at"])).total_seconds())  # type: ignore[operator]
    return Pace(median(durations), len(durations)) if durations else None


def expected_completion(planned_at: datetime, pace: Pace | None) -> datetime:
    return planned_at + timedelta(seconds=pace.seconds if pace else 0)


def at_risk(deadline: datetime | None, planned_at: datetime, pace: Pace | None) -> datetime | None:
    """The expected completion of a request planned at `planned_at`, if it is past the deadline."""
    expected = expected_completion(planned_at, pace)
    return expected if deadline is not None and expected > deadline else None
