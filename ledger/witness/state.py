"""What a witness keeps: its name, the logs it witnesses (origin -> verifier keys), the latest
checkpoint it cosigned per origin, and the refused checkpoints that were validly signed (they
may be evidence of a misbehaving log).

SQLite in WAL mode with `synchronous=FULL`: checking a request against the stored checkpoint and
storing the new one happen in one `BEGIN IMMEDIATE` transaction, so two concurrent requests (in
this process or another one on the same state) can never roll the witness back (tlog-witness:
"checking the old size ... and persisting the new checkpoint must be performed atomically").
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import BadInput, CorruptState, ServiceError
from ledger.merkle import EMPTY_ROOT
from ledger.store import sqlite_transaction
from ledger.note import Verifier, check_key_name, parse_vkey
from ledger.workspace import Workspace

DB_NAME = "witness.db"
DEFAULT_NAME = "erasure.local/witness"
SCHEMA_VERSION = "1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS logs (origin TEXT NOT NULL, vkey TEXT NOT NULL, PRIMARY KEY (origin, vkey))",
    "CREATE TABLE IF NOT EXISTS latest (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, "
    "note TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, at REAL NOT NULL, "
    "status INTEGER NOT NULL, reason TEXT NOT NULL, request BLOB NOT NULL)",
)


def default_state_dir(workspace: Workspace) -> Path:
    return workspace.home / "witness"


@dataclass(frozen=True)
class Latest:
    size: int
    root: bytes
    note: str | None  # None: nothing cosigned yet for this origin (size 0, the empty root)


@dataclass(frozen=True)
class Refusal:
    origin: str
    at: float
    status: int
    reason: str
    request: bytes


class WitnessState:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._lock = threading.RLock()  # one connection, shared by the server's threads
        self.path = path

    @classmethod
    def open(cls, directory: Path, create: bool = True) -> "WitnessState":
        path = Path(directory) / DB_NAME
        if not path.exists() and not create:
            raise BadInput(f"no witness state at {path}: run `erasure witness init`")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a cosigned checkpoint is durable before it is answered
            with _transaction(db, "BEGIN IMMEDIATE"):
                for statement in _SCHEMA:
                    db.execute(statement)
                schema = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if schema is None:
                    db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except sqlite3.OperationalError as err:
            raise ServiceError(f"cannot open witness state {path}: {err}") from None
        except sqlite3.DatabaseError as err:
            raise CorruptState(f"witness state {path} is corrupt: {err}") from None
        if schema is not None and schema[0] != SCHEMA_VERSION:
            raise BadInput(f"witness state {path} has schema {schema[0]!r}, expected {SCHEMA_VERSION}")
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "WitnessState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _txn(self, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
        with self._lock, _transaction(self._db, begin):
            yield self._db

    def name(self) -> str | None:
        with self._txn() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
        return None if row is None else row[0]

    def set_name(self, name: str) -> None:
        """Record the witness's name once: its key must never cosign under another one."""
        check_key_name(name)
        with self._txn("BEGIN IMMEDIATE") as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
            if row is not None and row[0] != name:
                raise BadInput(f"this witness is named {row[0]!r}; its key cannot cosign as {name!r}")
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('name', ?)", (name,))

    def add_log(self, origin: str, vkey: str) -> bool:
        """Witness the log `origin` signed by `vkey` (its key name must be the origin); False if known."""
        check_key_name(origin)
        verifier = parse_vkey(vkey)
        if verifier.name != origin:
            raise BadInput(f"verifier key {verifier.name!r} is not named after the origin {origin!r}")
        with self._txn("BEGIN IMMEDIATE") as db:
            cursor = db.execute("INSERT OR IGNORE INTO logs (origin, vkey) VALUES (?, ?)", (origin, verifier.vkey))
        return cursor.rowcount == 1

    def remove_log(self, origin: str) -> bool:
        with self._txn("BEGIN IMMEDIATE") as db:
            cursor = db.execute("DELETE FROM logs WHERE origin = ?", (origin,))
        return cursor.rowcount > 0

    def logs(self) -> dict[str, list[str]]:
        with self._txn() as db:
            rows = db.execute("SELECT origin, vkey FROM logs ORDER BY origin, vkey").fetchall()
        out: dict[str, list[str]] = {}
        for origin, vkey in rows:
            out.setdefault(origin, []).append(vkey)
        return out

    def verifiers(self, origin: str) -> list[Verifier]:
        """The log keys configured for `origin` (none: the witness does not know the log)."""
        with self._txn() as db:
            rows = db.execute("SELECT vkey FROM logs WHERE origin = ? ORDER BY vkey", (origin,)).fetchall()
        return [parse_vkey(vkey) for (vkey,) in rows]

    def latest(self, origin: str) -> Latest:
        with self._txn() as db:
            return _latest(db, origin)

    def advance(self, origin: str, check: Callable[[Latest], None], size: int, root: bytes, note: str) -> None:
        """Run `check` on the stored checkpoint and store (size, root, note) in its place, as one
        transaction; `check` refuses by raising, and then nothing changes."""
        with self._txn("BEGIN IMMEDIATE") as db:
            check(_latest(db, origin))
            db.execute(
                "INSERT INTO latest (origin, size, root, note, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                "note = excluded.note, at = excluded.at",
                (origin, size, root, note, time.time()),
            )

    def record_refusal(self, origin: str, status: int, reason: str, request: bytes) -> None:
        with self._txn("BEGIN IMMEDIATE") as db:
            db.execute("INSERT INTO refused (origin, at, status, reason, request) VALUES (?, ?, ?, ?, ?)",
                       (origin, time.time(), status, reason, request))

    def refusals(self, origin: str | None = None) -> list[Refusal]:
        with self._txn() as db:
            rows = db.execute("SELECT origin, at, status, reason, request FROM refused "
                              "WHERE ? IS NULL OR origin = ? ORDER BY id", (origin, origin)).fetchall()
        return [Refusal(*row) for row in rows]


def _latest(db: sqlite3.Connection, origin: str) -> Latest:
    row = db.execute("SELECT size, root, note FROM latest WHERE origin = ?", (origin,)).fetchone()
    return Latest(0, EMPTY_ROOT, None) if row is None else Latest(row[0], bytes(row[1]), row[2])


def _transaction(db: sqlite3.Connection, begin: str):  # type: ignore[no-untyped-def]
    return sqlite_transaction(db, begin, "witness state")
