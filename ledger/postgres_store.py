"""The ledger's `LogStore` on PostgreSQL, for shared deployments (several planners on several hosts).

The same tables and semantics as `SqliteStore`, in the schema `ledger` of the database (the
database also holds the records, the journal and the leases; one log per schema, so a benchmark
can use a schema of its own): `meta` (schema version, origin),
`entries` (index, bytes, unique natural key), `hashes` (stored tree hashes by position),
`checkpoints` (size, signed note).

`writing()` is one transaction that first takes a transaction-scoped advisory lock derived from
the origin, so writers in any process on any host run one at a time and each computes from the
size the previous one committed: appends stay gapless, and a crash (or a lost connection)
rolls the whole batch back. `reading()` is a REPEATABLE READ, READ ONLY transaction: one
snapshot, never blocked by the writer.

psycopg is imported here only: the auditor's base install has no PostgreSQL client.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from ledger.errors import BadInput, CorruptState, ServiceError, VerificationFailed
from ledger.merkle import stored_count
from ledger.store import SCHEMA_VERSION, LogReader, LogWriter

SCHEMA = "ledger"
LOCK_TIMEOUT = "30s"  # as SQLite's busy timeout: a writer waits this long for another, then fails
PUBLISH_LOCK_TIMEOUT = "300s"  # a first publish of a large log takes minutes; later ones, moments
CONNECT_TIMEOUT_S = 10
_PAGE = 5000  # rows per query when iterating the whole log
_INCONSISTENT = "ledger storage is inconsistent (run `erasure ledger verify`)"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _ddl(schema: str) -> tuple[str, ...]:
    return (
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        f"CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {schema}.entries (idx BIGINT PRIMARY KEY CHECK (idx >= 0), data BYTEA NOT NULL,"
        " nkey TEXT UNIQUE)",
        f"CREATE TABLE IF NOT EXISTS {schema}.hashes (pos BIGINT PRIMARY KEY CHECK (pos >= 0), hash BYTEA NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {schema}.checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    )


def _lock_key(label: str) -> int:
    """A signed 64-bit advisory lock key for `label`."""
    return int.from_bytes(hashlib.sha256(f"erasure ledger {label}".encode()).digest()[:8], "big", signed=True)


_CREATE_LOCK = _lock_key("schema")  # creating the tables: concurrent CREATE ... IF NOT EXISTS may collide


def describe(url: str, schema: str = SCHEMA) -> str:
    """The database a URL names, without credentials or options: postgresql://HOST:PORT/DB (with
    the schema when not the default one)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    name = f"postgresql://{host}{port}/{params.get('dbname') or params.get('user') or ''}"
    return name if schema == SCHEMA else f"{name} (schema {schema})"


def _checked(schema: str) -> str:
    if not _NAME.fullmatch(schema):
        raise BadInput(f"bad schema name {schema!r} for the ledger: lower-case letters, digits and _")
    return schema


def _one_line(err: BaseException) -> str:
    return "; ".join(line.strip() for line in str(err).strip().splitlines() if line.strip()) or type(err).__name__


class _PostgresView:
    """Reads and writes on one connection; only used inside a transaction."""

    def __init__(self, db: psycopg.Connection, schema: str) -> None:
        self._db = db
        self._entries, self._hashes, self._checkpoints = (f"{schema}.{t}" for t in ("entries", "hashes", "checkpoints"))

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._db.execute(query, params).fetchall()

    def size(self) -> int:
        (top,) = self._db.execute(f"SELECT max(idx) FROM {self._entries}").fetchone()
        return 0 if top is None else top + 1

    def entries(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        rows = self._rows(f"SELECT idx, data FROM {self._entries} WHERE idx >= %s AND idx < %s ORDER BY idx",
                          (start, stop))
        return [(idx, bytes(data)) for idx, data in rows]

    def iter_entries(self) -> Iterator[tuple[int, bytes]]:
        start = 0
        while rows := self._rows(f"SELECT idx, data FROM {self._entries} WHERE idx >= %s ORDER BY idx LIMIT {_PAGE}",
                                 (start,)):
            for idx, data in rows:
                yield idx, bytes(data)
            start = rows[-1][0] + 1

    def read_hashes(self, positions: Sequence[int]) -> list[bytes]:
        found = dict(self._rows(f"SELECT pos, hash FROM {self._hashes} WHERE pos = ANY(%s)", (list(set(positions)),)))
        try:
            return [bytes(found[p]) for p in positions]
        except KeyError as err:
            raise VerificationFailed(f"ledger storage is inconsistent: tree hash {err.args[0]} is missing") from None

    def iter_hashes(self) -> Iterator[tuple[int, bytes]]:
        start = 0
        while rows := self._rows(f"SELECT pos, hash FROM {self._hashes} WHERE pos >= %s ORDER BY pos LIMIT {_PAGE}",
                                 (start,)):
            for pos, h in rows:
                yield pos, bytes(h)
            start = rows[-1][0] + 1

    def find_keys(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        return dict(self._rows(f"SELECT nkey, idx FROM {self._entries} WHERE nkey = ANY(%s)", (list(set(keys)),)))

    def iter_keys(self) -> Iterator[tuple[int, str]]:
        start = 0
        while rows := self._rows(f"SELECT idx, nkey FROM {self._entries} WHERE idx >= %s AND nkey IS NOT NULL"
                                 f" ORDER BY idx LIMIT {_PAGE}", (start,)):
            yield from ((idx, nkey) for idx, nkey in rows)
            start = rows[-1][0] + 1

    def checkpoints(self) -> list[tuple[int, str]]:
        return [(size, note) for size, note in self._rows(f"SELECT size, note FROM {self._checkpoints} ORDER BY size")]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        row = self._db.execute(f"SELECT size, note FROM {self._checkpoints} ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1])

    def insert_entries(self, rows: Sequence[tuple[int, bytes, str | None]]) -> None:
        if rows:
            with self._db.cursor() as cur:
                cur.executemany(f"INSERT INTO {self._entries} (idx, data, nkey) VALUES (%s, %s, %s)", rows)

    def insert_hashes(self, rows: Sequence[tuple[int, bytes]]) -> None:
        if rows:
            with self._db.cursor() as cur:
                cur.executemany(f"INSERT INTO {self._hashes} (pos, hash) VALUES (%s, %s)", rows)

    def insert_checkpoint(self, size: int, note: str) -> None:
        self._db.execute(f"INSERT INTO {self._checkpoints} (size, note) VALUES (%s, %s)", (size, note))

    def replace_checkpoint(self, size: int, old: str, new: str) -> bool:
        cursor = self._db.execute(f"UPDATE {self._checkpoints} SET note = %s WHERE size = %s AND note = %s",
                                  (new, size, old))
        return cursor.rowcount == 1


class PostgresStore:
    """One connection per store, shared by this process's threads under a lock (as `SqliteStore`);
    a connection the server dropped is replaced at the next transaction."""

    def __init__(self, db: psycopg.Connection, origin: str, url: str, schema: str = SCHEMA) -> None:
        self._db = db
        self._lock = threading.RLock()
        self._closed = False
        self.origin = origin
        self.url = url
        self.schema = schema
        self.where = describe(url, schema)
        self._writer_lock = _lock_key(f"log {schema} {origin}")
        self._publish_lock = _lock_key(f"publish {schema} {origin}")

    @classmethod
    def open(cls, url: str, origin: str | None = None, create: bool = True, schema: str = SCHEMA) -> "PostgresStore":
        """Open (or create, with `origin`) the log in the database `url` names (in its `schema`: one
        log per schema). An existing log must have the given origin."""
        where = describe(url, _checked(schema))
        db = _connect(url, where)
        try:
            with _transaction(db, "BEGIN", where):
                present = db.execute("SELECT to_regclass(%s)", (f"{schema}.meta",)).fetchone()[0] is not None
                if not present and not create:
                    raise BadInput(f"no ledger in {where}")
                if not present and origin is None:
                    raise BadInput(f"cannot create a ledger in {where} without an origin")
                if not present:
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                    for statement in _ddl(schema):
                        db.execute(statement)
                stored = dict(db.execute(f"SELECT key, value FROM {schema}.meta").fetchall())
                if not stored:
                    if origin is None:
                        raise BadInput(f"{where} is not an Erasure ledger")
                    db.execute(f"INSERT INTO {schema}.meta (key, value) VALUES ('schema', %s), ('origin', %s)"
                               " ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION, origin))
                    stored = dict(db.execute(f"SELECT key, value FROM {schema}.meta").fetchall())
            if stored.get("schema") != SCHEMA_VERSION:
                raise BadInput(f"ledger {where} has schema {stored.get('schema')!r}, expected {SCHEMA_VERSION}")
            if origin is not None and stored.get("origin") != origin:
                raise BadInput(f"ledger {where} has origin {stored.get('origin')!r}, not {origin!r}")
        except BaseException:
            db.close()
            raise
        return cls(db, stored["origin"], url, schema)

    @staticmethod
    def exists(url: str, schema: str = SCHEMA) -> bool:
        """Whether the database holds a ledger (ServiceError when the server does not answer)."""
        where = describe(url, _checked(schema))
        db = _connect(url, where)
        try:
            with _transaction(db, "BEGIN", where):
                return db.execute("SELECT to_regclass(%s)", (f"{schema}.meta",)).fetchone()[0] is not None
        finally:
            db.close()

    def _connection(self) -> psycopg.Connection:
        if self._closed:
            raise ServiceError(f"ledger database {self.where} is closed")
        if self._db.broken or self._db.closed:
            self._db = _connect(self.url, self.where)
        return self._db

    @contextmanager
    def reading(self) -> Iterator[LogReader]:
        with self._lock:
            db = self._connection()
            with _transaction(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", self.where):
                yield _PostgresView(db, self.schema)

    @contextmanager
    def writing(self) -> Iterator[LogWriter]:
        with self._lock:
            db = self._connection()
            # One round trip: begin, bound the wait, wait for the other writers (a literal int key).
            begin = (f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; "
                     f"SELECT pg_advisory_xact_lock({int(self._writer_lock)})")
            with _transaction(db, begin, self.where):
                yield _PostgresView(db, self.schema)

    @contextmanager
    def publishing(self) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own, so publishers on every host
        take turns (the lock goes with the connection if the process dies)."""
        db = _connect(self.url, self.where)
        try:
            try:
                db.execute(f"SET lock_timeout = '{PUBLISH_LOCK_TIMEOUT}'")
                db.execute("SELECT pg_advisory_lock(%s)", (self._publish_lock,))
            except psycopg.Error as err:
                raise ServiceError(f"ledger database {self.where}: cannot take the publishing lock: "
                                   f"{_one_line(err)}") from None
            yield
        finally:
            db.close()  # releases the lock

    def quick_check(self) -> str | None:
        """None if the entries and stored tree hashes are gapless and no checkpoint is past the
        end (counts only, no hashing: `erasure ledger verify` recomputes everything), else the problem."""
        with self._lock:
            db = self._connection()
            with _transaction(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", self.where):
                count = "SELECT count(*), coalesce(max({0}) + 1, 0) FROM {1}.{2}"
                entries, top = db.execute(count.format("idx", self.schema, "entries")).fetchone()
                hashes, last = db.execute(count.format("pos", self.schema, "hashes")).fetchone()
                (signed,) = db.execute(f"SELECT coalesce(max(size), 0) FROM {self.schema}.checkpoints").fetchone()
        if entries != top:
            return f"{top - entries} of the entries below {top} are missing"
        if hashes != stored_count(top) or last != hashes:
            return f"{hashes} tree hashes stored (up to position {last - 1}), {stored_count(top)} expected"
        if signed > top:
            return f"a checkpoint of size {signed} is past the {top} entries"
        return None

    def server_version(self) -> str:
        """The server's PostgreSQL version, e.g. "15.14"."""
        with self._lock:
            number = self._connection().info.server_version
        return f"{number // 10000}.{number % 10000}"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


def _connect(url: str, where: str) -> psycopg.Connection:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise BadInput(f"bad database URL for the ledger: {_one_line(err)}") from None
    options: dict[str, Any] = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return psycopg.connect(url, autocommit=True, **options)
    except psycopg.Error as err:
        raise ServiceError(f"cannot open ledger database {where}: {_one_line(err)}") from None


@contextmanager
def _transaction(db: psycopg.Connection, begin: str, where: str) -> Iterator[None]:
    """`begin` ... COMMIT, rolled back on any exception; PostgreSQL's errors become one line naming
    the store, mapped as `ledger.store.sqlite_transaction` maps SQLite's: a broken constraint
    VerificationFailed, data corruption CorruptState, anything else (the server gone, a lock
    timeout) ServiceError."""
    store = f"ledger database {where}"
    try:
        try:
            db.execute(begin)  # `begin` may also wait for the writers' lock, and time out
            yield
        except BaseException:
            if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    db.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # the connection is gone: the server rolled back; report the first error
            raise
        db.execute("COMMIT")
    except psycopg.errors.IntegrityError as err:
        raise VerificationFailed(f"{_INCONSISTENT}: {_one_line(err)}") from None
    except (psycopg.errors.DataCorrupted, psycopg.errors.IndexCorrupted) as err:
        raise CorruptState(f"{store} is corrupt: {_one_line(err)}") from None
    except psycopg.Error as err:
        raise ServiceError(f"{store} error: {_one_line(err)}") from None
