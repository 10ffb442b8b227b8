"""Model leases on PostgreSQL: the shared deployment's model lock (`lock.model_lock` uses them
when `Workspace.database_url()` is set; the embedded workspace keeps its `flock`).

A lease is one row of `model_leases` (model, holder, epoch, expires_at). All times are the
server's (`now()`), so the clocks of the hosts do not matter.

- Acquire: poll (every `POLL_S`) until the row is free (released) or expired, and take it in
  one statement: holder = us, epoch + 1, expires_at = now() + ttl. Concurrent takers serialise
  on the row; exactly one sees it free.
- Exclusions first: an urgent acquirer (an exclusion) registers itself in
  `model_lease_waiters` while it waits (the registration expires like a lease, and is refreshed
  at every poll, so a killed waiter blocks nobody for long); a non-urgent acquirer (a retrain,
  an approximate update) takes the lease only while no live urgent registration exists for the
  model. An urgent acquirer takes it whenever it is free, and drops its registration in the
  same transaction. So an exclusion waits at most for the holder it found, as with the flock.
- Renewal: a background thread moves expires_at to now() + ttl every ttl/3 while the lease is
  ours and unexpired; once it expired it is lost, even if nobody took it yet (a taker may).
- Release (on leaving `model_lock`): only if the row is still ours (holder and epoch match).
- Fencing: `Lease.check()` raises `LeaseLost` unless the row is still ours and unexpired. The
  lease held by the current thread is in a context variable (`current`); `check_lease(model)`
  is called right before a new version becomes visible (`Draft.commit`, and in `publish` before
  certifying, registering and moving the alias), and the restore journal's writes take the lease
  row `FOR SHARE` in their transaction (`Lease.fence`), so a takeover cannot slip in between. A
  healthy holder renews every ttl/3, so after a passing check at least about 2/3 of the ttl is
  left for the registration that follows; a process stalled longer than that between the check
  and the registry call is the one window left (the registry itself has no epochs).

`LeaseLost` is a `ServiceError`: the consumer loop retries the unit; the retry waits for the
new holder, which settled and finished the work, and finds it done.

psycopg is imported only here, and only when a database URL is configured.
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ledger.errors import LeaseLost, ServiceError
from ledger.workspace import Workspace

DEFAULT_TTL_S = 30.0
POLL_S = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_leases (
    model text PRIMARY KEY,
    holder text,
    epoch bigint NOT NULL,
    expires_at timestamptz
);
CREATE TABLE IF NOT EXISTS model_lease_waiters (
    model text NOT NULL,
    waiter text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (model, waiter)
);
CREATE TABLE IF NOT EXISTS restore_journal (
    model text PRIMARY KEY,
    intent text NOT NULL
);
"""

_ready: set[str] = set()  # database URLs whose tables this process made sure of
_ready_lock = threading.Lock()

# model -> the lease this thread (context) holds on it
current: contextvars.ContextVar[dict[str, "Lease"]] = contextvars.ContextVar("erasure_model_leases", default={})


def lease_ttl_s(ws: Workspace) -> float:
    """`ERASURE_LEASE_TTL_S`, else `[database] lease_ttl_s` in erasure.toml, else 30 s."""
    raw = os.environ.get("ERASURE_LEASE_TTL_S") or ws.config().get("database", {}).get("lease_ttl_s")
    if raw in (None, ""):
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except (TypeError, ValueError):
        ttl = -1.0
    if not ttl > 0:
        from ledger.errors import BadInput

        raise BadInput(f"lease ttl {raw!r} is not a positive number of seconds (ERASURE_LEASE_TTL_S / "
                       "[database] lease_ttl_s)")
    return ttl


def connect(url: str) -> Any:
    """An autocommit connection to the shared database, its tables created on first use;
    an unreachable server is a `ServiceError` (transient for the services)."""
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as err:
        raise ServiceError(f"the shared database is unreachable: {_first_line(err)}") from None
    try:
        if url not in _ready:
            with _ready_lock:
                if url not in _ready:
                    with conn.transaction():  # concurrent CREATE ... IF NOT EXISTS may collide
                        conn.execute("SELECT pg_advisory_xact_lock(hashtext('erasure.lease-schema'))")
                        conn.execute(SCHEMA)
                    _ready.add(url)
    except psycopg.OperationalError as err:
        conn.close()
        raise ServiceError(f"the shared database failed: {_first_line(err)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@contextmanager
def database_errors() -> Iterator[None]:
    """psycopg's connection failures as `ServiceError` (one line)."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as err:
        raise ServiceError(f"the shared database failed: {_first_line(err)}") from None


class Lease:
    """One holding of a model's lease (epoch `epoch` by `holder`)."""

    def __init__(self, url: str, model: str, holder: str, epoch: int, ttl_s: float, conn: Any) -> None:
        self.url, self.model, self.holder, self.epoch, self.ttl_s = url, model, holder, epoch, ttl_s
        self._conn = conn  # check / release / fence (the renewer has its own)
        self._conn_lock = threading.Lock()
        self._stop = threading.Event()
        self._lost: str | None = None  # why, once the renewer found the lease gone
        self._renewer: threading.Thread | None = None
        self._released = False

    # --- fencing
    def check(self) -> None:
        """Raise `LeaseLost` unless the lease is still ours (holder, epoch) and unexpired, by the
        database's clock."""
        if self._released:
            self._verify(None)
        with self._conn_lock, database_errors():
            row = self._conn.execute(
                "SELECT holder, epoch, expires_at > now() FROM model_leases WHERE model = %s",
                (self.model,)).fetchone()
        self._verify(row)

    @contextmanager
    def fence(self, conn: Any) -> Iterator[None]:
        """A transaction on `conn` in which the lease row is locked `FOR SHARE` after checking it
        is ours: nobody takes the lease over until the transaction ends (writes in it are fenced)."""
        with database_errors(), conn.transaction():
            row = conn.execute(
                "SELECT holder, epoch, expires_at > now() FROM model_leases WHERE model = %s FOR SHARE",
                (self.model,)).fetchone()
            self._verify(row)
            yield

    def _verify(self, row: tuple | None) -> None:
        if row is not None and row[0] == self.holder and row[1] == self.epoch and row[2]:
            return
        if row is None or row[0] is None:
            now = "released"
        elif row[0] == self.holder and row[1] == self.epoch:
            now = "expired (not renewed within its ttl)"
        else:
            now = f"taken over by {row[0]} (epoch {row[1]})"
        self._lost = self._lost or now
        raise LeaseLost(f"lease on model {self.model} (epoch {self.epoch}, {self.holder}) lost: {now}; "
                        "nothing is published, the work is retried")

    @property
    def lost(self) -> str | None:
        """Why the renewer found the lease gone, if it did (`check` asks the database)."""
        return self._lost

    # --- renewal
    def start_renewal(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.model}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    if conn is None or conn.closed:
                        conn = connect(self.url)
                    if not self.renew(conn):
                        return
                except Exception:  # the database away for a moment: try again; check() decides
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()

    def renew(self, conn: Any | None = None) -> bool:
        """Move the expiry to now() + ttl if the lease is still ours and unexpired; False (and
        `lost` set) if it is not."""
        if conn is None:
            with self._conn_lock:
                return self._renew_on(self._conn)
        return self._renew_on(conn)

    def _renew_on(self, conn: Any) -> bool:
        cur = conn.execute(
            "UPDATE model_leases SET expires_at = now() + make_interval(secs => %s) "
            "WHERE model = %s AND holder = %s AND epoch = %s AND expires_at > now()",
            (self.ttl_s, self.model, self.holder, self.epoch))
        if cur.rowcount != 1:
            self._lost = self._lost or "not renewed in time"
            return False
        return True

    def stop_renewal(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=15)

    # --- release
    def release(self) -> None:
        """Free the row if it is still ours (a lease taken over stays the new holder's)."""
        self.stop_renewal()
        self._released = True
        try:
            with self._conn_lock:
                self._conn.execute(
                    "UPDATE model_leases SET holder = NULL, expires_at = NULL "
                    "WHERE model = %s AND holder = %s AND epoch = %s",
                    (self.model, self.holder, self.epoch))
        except Exception:  # the database away: the lease expires after its ttl instead
            pass
        finally:
            self._conn.close()


def new_holder() -> str:
    """Unique per acquisition: host, process, and a random part (two threads are two holders)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_TAKE = """
INSERT INTO model_leases (model, holder, epoch, expires_at)
SELECT %(model)s, %(holder)s, 1, now() + make_interval(secs => %(ttl)s)
WHERE %(urgent)s OR NOT EXISTS (
    SELECT 1 FROM model_lease_waiters WHERE model = %(model)s AND expires_at > now())
ON CONFLICT (model) DO UPDATE
    SET holder = EXCLUDED.holder, epoch = model_leases.epoch + 1, expires_at = EXCLUDED.expires_at
    WHERE model_leases.holder IS NULL OR model_leases.expires_at <= now()
RETURNING epoch
"""


def acquire(url: str, model: str, urgent: bool = False, ttl_s: float = DEFAULT_TTL_S,
            poll_s: float = POLL_S) -> Lease:
    """Wait for the model's lease and take it (renewal started)."""
    conn = connect(url)
    holder = new_holder()
    try:
        with database_errors():
            while True:
                with conn.transaction():
                    if urgent:  # registered (or refreshed) for the non-urgent ones to see
                        conn.execute(
                            "INSERT INTO model_lease_waiters (model, waiter, expires_at) "
                            "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                            "ON CONFLICT (model, waiter) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                            (model, holder, ttl_s))
                with conn.transaction():
                    row = conn.execute(_TAKE, {"model": model, "holder": holder, "ttl": ttl_s,
                                               "urgent": urgent}).fetchone()
                    if row is not None and urgent:
                        conn.execute("DELETE FROM model_lease_waiters WHERE model = %s AND waiter = %s",
                                     (model, holder))
                if row is not None:
                    break
                time.sleep(poll_s)
    except BaseException:
        if urgent and not conn.closed:
            try:
                conn.execute("DELETE FROM model_lease_waiters WHERE model = %s AND waiter = %s", (model, holder))
            except Exception:
                pass  # it expires
        conn.close()
        raise
    lease = Lease(url, model, holder, row[0], ttl_s, conn)
    lease.start_renewal()
    return lease


@contextmanager
def held(ws: Workspace, url: str, model: str, urgent: bool = False) -> Iterator[Lease]:
    """Hold the model's lease for the block (the current lease of the context meanwhile)."""
    lease = acquire(url, model, urgent=urgent, ttl_s=lease_ttl_s(ws))
    token = current.set({**current.get(), model: lease})
    try:
        yield lease
    finally:
        current.reset(token)
        lease.release()


def current_lease(model: str) -> Lease | None:
    return current.get().get(model)


def check_lease(model: str) -> None:
    """Right before a new version of `model` becomes visible: `LeaseLost` if this context holds
    the model's lease and it is no longer ours. Nothing to check without a lease (the embedded
    workspace's flock cannot be lost while its process lives; a caller outside `model_lock`)."""
    lease = current_lease(model)
    if lease is not None:
        lease.check()
