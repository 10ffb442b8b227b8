"""The request ids the intake has taken, so that a replay is refused (HTTP 409).

SQLite `$ERASURE_HOME/intake/accepted.db`, one row per id: the sender, `pending` or `accepted`,
and when. An id is claimed before its request is produced and marked accepted once Kafka has
acknowledged it; a failed produce releases it, so the sender may retry. A claim a crash left
pending is taken over by the next attempt after PENDING_S (the planner is idempotent by request
id: a request produced twice is received once).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from ledger.workspace import Workspace

PENDING_S = 60.0


class Accepted:
    def __init__(self, ws: Workspace) -> None:
        self.path = ws.home / "intake" / "accepted.db"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS accepted (request_id TEXT PRIMARY KEY, sender TEXT NOT NULL, "
                       "state TEXT NOT NULL, at REAL NOT NULL)")

    def claim(self, request_id: str, sender: str) -> str | None:
        """Take `request_id` for `sender`: None when taken now, else why it is a replay."""
        with self._db() as db:
            row = db.execute("SELECT sender, state, at FROM accepted WHERE request_id = ?", (request_id,)).fetchone()
            if row is not None and (row[1] == "accepted" or time.time() - row[2] < PENDING_S):
                when = datetime.fromtimestamp(row[2], UTC).isoformat(timespec="seconds")
                return f"request id {request_id!r} was {'accepted' if row[1] == 'accepted' else 'taken'} at {when}"
            db.execute("INSERT OR REPLACE INTO accepted VALUES (?, ?, 'pending', ?)", (request_id, sender, time.time()))
        return None

    def holds(self, request_id: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM accepted WHERE request_id = ?", (request_id,)).fetchone() is not None

    def confirm(self, request_id: str) -> None:
        with self._db() as db:
            db.execute("UPDATE accepted SET state = 'accepted', at = ? WHERE request_id = ?", (time.time(), request_id))

    def release(self, request_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM accepted WHERE request_id = ? AND state = 'pending'", (request_id,))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One connection per call (the app's worker threads), one write transaction."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
