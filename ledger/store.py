"""Log storage: a small interface the log logic runs on, and its SQLite implementation.

The store keeps bytes; it does no hashing and no signing. `Ledger` computes every hash inside
`writing()`, which is exclusive (one writer at a time, across processes) and atomic: a crash
leaves either the whole batch (entries + their tree hashes [+ checkpoint]) or none of it.
`ledger.postgres_store.PostgresStore` implements the same protocol on PostgreSQL (a transaction
holding an advisory lock) for shared deployments; `ledger.log.open_log_store` picks the workspace's.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from ledger.errors import BadInput, CorruptState, ServiceError, VerificationFailed
from ledger.merkle import HashReader, Node, stored_index

SCHEMA_VERSION = "1"
_MAX_VARS = 900  # stay under SQLite's host-parameter limit on old builds


class LogReader(Protocol):
    """A consistent snapshot of the log."""

    def size(self) -> int:
        """Entries in the log: one more than the highest index."""

    def entries(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """(index, bytes) for start <= index < stop, in index order."""

    def iter_entries(self) -> Iterator[tuple[int, bytes]]:
        """Every (index, bytes) in index order."""

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        """Stored tree hashes by position (see `merkle.stored_index`)."""

    def iter_hashes(self) -> Iterator[tuple[int, bytes]]:
        """Every (position, hash) in position order."""

    def find_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Index of each natural key already in the log."""

    def iter_keys(self) -> Iterator[tuple[int, str]]:
        """Every (index, natural key) of the entries logged with one, in index order."""

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored (size, signed note), by size."""

    def latest_checkpoint(self) -> tuple[int, str] | None: ...


class LogWriter(LogReader, Protocol):
    def insert_entries(self, rows: Sequence[tuple[int, bytes, str | None]]) -> None:
        """(index, bytes, natural key or None)."""

    def insert_hashes(self, rows: Sequence[tuple[int, bytes]]) -> None: ...

    def insert_checkpoint(self, size: int, note: str) -> None: ...

    def replace_checkpoint(self, size: int, old: str, new: str) -> bool:
        """Store `new` as the note of size `size` if it still is `old` (cosignatures were added)."""
        ...


def hash_reader(view: LogReader) -> HashReader:
    """Read perfect subtrees (level, index) from a snapshot, in one batch."""

    def read(nodes: Sequence[Node]) -> list[bytes]:
        return view.read_hashes([stored_index(level, index) for level, index in nodes])

    return read


class LogStore(Protocol):
    origin: str

    def reading(self) -> AbstractContextManager[LogReader]: ...

    def writing(self) -> AbstractContextManager[LogWriter]: ...

    def publishing(self) -> AbstractContextManager[None]:
        """Held while publishing the log's tiles to an object store: one publisher at a time
        (readers and writers of the log are not blocked)."""
        ...

    def close(self) -> None: ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL, nkey TEXT UNIQUE)",
    "CREATE TABLE IF NOT EXISTS hashes (pos INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL)",
)


def _chunks(items: Sequence, n: int = _MAX_VARS) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class _SqliteView:
    """Reads and writes on one connection; only used inside a transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def size(self) -> int:
        (top,) = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if top is None else top + 1

    def entries(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop))
        return [(idx, bytes(data)) for idx, data in rows]

    def iter_entries(self) -> Iterator[tuple[int, bytes]]:
        for idx, data in self._db.execute("SELECT idx, data FROM entries ORDER BY idx"):
            yield idx, bytes(data)

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        found: dict[int, bytes] = {}
        for chunk in _chunks(list(set(positions))):
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT pos, hash FROM hashes WHERE pos IN ({marks})", chunk))
        try:
            return [bytes(found[p]) for p in positions]
        except KeyError as err:
            raise VerificationFailed(f"ledger storage is inconsistent: tree hash {err.args[0]} is missing") from None

    def iter_hashes(self) -> Iterator[tuple[int, bytes]]:
        for pos, h in self._db.execute("SELECT pos, hash FROM hashes ORDER BY pos"):
            yield pos, bytes(h)

    def find_keys(self, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(list(set(keys))):
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT nkey, idx FROM entries WHERE nkey IN ({marks})", chunk))
        return found

    def iter_keys(self) -> Iterator[tuple[int, str]]:
        yield from self._db.execute("SELECT idx, nkey FROM entries WHERE nkey IS NOT NULL ORDER BY idx")

    def checkpoints(self) -> list[tuple[int, str]]:
        return list(self._db.execute("SELECT size, note FROM checkpoints ORDER BY size"))

    def latest_checkpoint(self) -> tuple[int, str] | None:
        return self._db.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()

    def insert_entries(self, rows: Sequence[tuple[int, bytes, str | None]]) -> None:
        self._db.executemany("INSERT INTO entries (idx, data, nkey) VALUES (?, ?, ?)", rows)

    def insert_hashes(self, rows: Sequence[tuple[int, bytes]]) -> None:
        self._db.executemany("INSERT INTO hashes (pos, hash) VALUES (?, ?)", rows)

    def insert_checkpoint(self, size: int, note: str) -> None:
        self._db.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (size, note))

    def replace_checkpoint(self, size: int, old: str, new: str) -> bool:
        cursor = self._db.execute("UPDATE checkpoints SET note = ? WHERE size = ? AND note = ?", (new, size, old))
        return cursor.rowcount == 1


class SqliteStore:
    """SQLite in WAL mode: readers never block the writer; `BEGIN IMMEDIATE` serialises writers."""

    def __init__(self, db: sqlite3.Connection, origin: str, path: Path) -> None:
        self._db = db
        self._lock = threading.RLock()  # the connection is shared by this process's threads
        self.origin = origin
        self.path = path

    @classmethod
    def open(cls, path: Path, origin: str | None = None, create: bool = True) -> "SqliteStore":
        """Open (or create, with `origin`) a log. An existing log must have the given origin."""
        path = Path(path)
        if not path.exists() and not create:
            raise BadInput(f"no ledger at {path}")
        if not path.exists() and origin is None:
            raise BadInput(f"cannot create a ledger at {path} without an origin")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # A lost commit after a signed checkpoint would look like a rollback: fsync every commit.
            db.execute("PRAGMA synchronous=FULL")
            with _transaction(db, "BEGIN IMMEDIATE"):
                for statement in _SCHEMA:
                    db.execute(statement)
                stored = dict(db.execute("SELECT key, value FROM meta"))
                if not stored:
                    if origin is None:
                        raise BadInput(f"{path} is not an Erasure ledger")
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [("schema", SCHEMA_VERSION), ("origin", origin)],
                    )
                    stored = {"schema": SCHEMA_VERSION, "origin": origin}
        except sqlite3.OperationalError as err:
            raise ServiceError(f"cannot open ledger {path}: {err}") from None
        except sqlite3.DatabaseError as err:
            raise CorruptState(f"ledger {path} is corrupt: {err}") from None
        if stored.get("schema") != SCHEMA_VERSION:
            raise BadInput(f"ledger {path} has schema {stored.get('schema')!r}, expected {SCHEMA_VERSION}")
        if origin is not None and stored.get("origin") != origin:
            raise BadInput(f"ledger {path} has origin {stored.get('origin')!r}, not {origin!r}")
        return cls(db, stored["origin"], path)

    @contextmanager
    def reading(self) -> Iterator[LogReader]:
        with self._lock, _transaction(self._db, "BEGIN"):
            yield _SqliteView(self._db)

    @contextmanager
    def writing(self) -> Iterator[LogWriter]:
        with self._lock, _transaction(self._db, "BEGIN IMMEDIATE"):
            yield _SqliteView(self._db)

    @contextmanager
    def publishing(self) -> Iterator[None]:
        import fcntl  # here, not at the top: `ledger` (the auditor's install) also imports on systems without it

        with open(f"{self.path}.publish.lock", "a") as lock:  # one host: a lock file beside the database
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        self._db.close()


@contextmanager
def sqlite_transaction(db: sqlite3.Connection, begin: str, store: str,
                       inconsistent: str | None = None) -> Iterator[None]:
    """`begin` ... COMMIT, rolled back on any exception; SQLite's errors become one line naming
    `store`: its own corruption errors ("malformed", "not a database") CorruptState, a broken
    constraint VerificationFailed(`inconsistent`) when given, anything else ServiceError."""
    try:
        db.execute(begin)
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.IntegrityError as err:
        if inconsistent is None:
            raise ServiceError(f"{store} error: {err}") from None
        raise VerificationFailed(f"{inconsistent}: {err}") from None
    except sqlite3.Error as err:
        if type(err) is sqlite3.DatabaseError:
            raise CorruptState(f"{store} is corrupt: {err}") from None
        raise ServiceError(f"{store} error: {err}") from None


def _transaction(db: sqlite3.Connection, begin: str):  # type: ignore[no-untyped-def]
    return sqlite_transaction(db, begin, "ledger database",
                              inconsistent="ledger storage is inconsistent (run `erasure ledger verify`)")
