"""The ledger on PostgreSQL (shared deployments): the same behaviour as on SQLite, checked side by
side on both stores; concurrent writers in separate processes stay gapless; errors as SQLite's.

Runs against a real PostgreSQL server (the session's `postgres_server`, a fresh database per test).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from ledger import merkle
from ledger.audit import audit_log
from ledger.errors import BadInput, ServiceError, VerificationFailed
from ledger.log import Ledger, open_ledger
from ledger.note import Signer, verify_checkpoint
from ledger.postgres_store import PostgresStore, describe
from ledger.proofs import verify_tlog_proof
from ledger.log import log_exists, log_location, open_log_store
from ledger.store import SqliteStore
from ledger.workspace import Workspace


def _open(kind: str, where: str, origin: str | None, create: bool = True):  # type: ignore[no-untyped-def]
    if kind == "sqlite":
        return SqliteStore.open(Path(where), origin, create)
    return PostgresStore.open(where, origin, create)


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def where(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The store's location: a SQLite file, or a fresh PostgreSQL database."""
    return str(tmp_path / "ledger.db") if kind == "sqlite" else request.getfixturevalue("database_url")


@pytest.fixture
def log(kind: str, where: str, origin: str, signer: Signer):  # type: ignore[no-untyped-def]
    with Ledger(_open(kind, where, origin), signer) as ledger:
        yield ledger


def _sql(url: str, statement: str, params: tuple = ()) -> None:
    """Tamper with the database behind the store's back."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(statement, params)


# --- the same behaviour on both stores --------------------------------------------------------------------


def test_appends_dedup_and_reopen(kind: str, where: str, log: Ledger, origin: str) -> None:
    first = log.append("request_received", {"request_id": "r-1"}, natural_key="r-1")
    batch = log.append_many([("request_received", {"request_id": "r-2"}, "r-2"),
                             ("request_received", {"request_id": "r-1"}, "r-1"),
                             ("request_received", {"request_id": "r-2"}, "r-2"), ("plan", {"n": 1})])
    assert (first, batch, log.size) == (0, [1, 0, 1, 2], 3)
    assert log.find("r-2") == 1 and log.find("nope") is None
    assert json.loads(log.entry(2))["type"] == "plan"
    assert log.entries(1) == [(1, log.entry(1)), (2, log.entry(2))]
    with Ledger(_open(kind, where, origin)) as reopened:  # a restarted consumer still knows the keys
        assert reopened.append("request_received", {"request_id": "r-1"}, "r-1") == 0
        assert reopened.size == 3
    with pytest.raises(BadInput, match="no entry 3"):
        log.entry(3)


def test_proofs_match_the_in_memory_tree(log: Ledger) -> None:
    log.append_many([("e", {"i": i}) for i in range(13)])
    log.append_many([("e", {"i": i}) for i in range(13, 29)])
    with log.store.reading() as view:
        assert [pos for pos, _ in view.iter_hashes()] == list(range(merkle.stored_count(29)))
        assert [i for i, _ in view.iter_entries()] == list(range(29))
    hashes = [merkle.leaf_hash(data) for _, data in log.entries()]
    for size in (1, 2, 7, 8, 16, 17, 29):
        assert log.root(size) == merkle.root(hashes[:size])
        for index in range(0, size, 3):
            assert log.inclusion_proof(index, size) == merkle.inclusion_proof(hashes[:size], index)
        for old in range(size + 1):
            merkle.verify_consistency(old, size, log.consistency_proof(old, size), log.root(old), log.root(size))
    with pytest.raises(BadInput):
        log.inclusion_proof(29)


def test_checkpoints_tlog_proofs_and_audit(log: Ledger, signer: Signer, origin: str) -> None:
    log.append_many([("e", {"i": i}) for i in range(5)])
    note = log.checkpoint()
    assert verify_checkpoint(note, [signer.verifier], origin).size == 5
    assert log.checkpoint() == note == log.latest_checkpoint()
    log.append_many([("e", {"i": i}) for i in range(5, 10)])
    proof = log.tlog_proof(7)
    assert verify_tlog_proof(proof, log.entry(7), [signer.verifier], origin).size == 10
    latest = log.latest_checkpoint()
    with log.store.writing() as view:  # cosignatures replace a note only if it is still the one read
        assert view.replace_checkpoint(10, latest, latest)
        assert not view.replace_checkpoint(10, "another note", "x")
    with log.store.reading() as view:
        assert [size for size, _ in view.checkpoints()] == [5, 10]
    report = audit_log(log.store, [signer.verifier], origin)
    assert (report.entries, report.checkpoints, report.checkpoint_size) == (10, 2, 10)


class Crash(Exception):
    pass


def test_crash_inside_an_append_leaves_nothing(kind: str, log: Ledger, signer: Signer, origin: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log.append_many([("e", {"i": i}) for i in range(3)])
    log.checkpoint()

    def crash(self, rows):  # type: ignore[no-untyped-def]
        raise Crash  # the entries are written, their hashes are not

    view = "ledger.store._SqliteView" if kind == "sqlite" else "ledger.postgres_store._PostgresView"
    monkeypatch.setattr(f"{view}.insert_hashes", crash)
    with pytest.raises(Crash):
        log.append_many([("e", {"i": i}) for i in range(3, 10)])
    monkeypatch.undo()
    assert log.size == 3
    assert audit_log(log.store, [signer.verifier], origin).entries == 3
    assert log.append("e", {"i": 3}) == 3


def test_a_broken_constraint_is_inconsistent_storage(log: Ledger) -> None:
    log.append("e", {}, "k")
    with pytest.raises(VerificationFailed, match=r"^ledger storage is inconsistent \(run `erasure ledger verify`\)"):
        with log.store.writing() as view:
            view.insert_entries([(0, b"{}", None)])
    with pytest.raises(VerificationFailed, match="ledger storage is inconsistent"):
        with log.store.writing() as view:
            view.insert_entries([(1, b"{}", "k")])
    with log.store.reading() as view:
        with pytest.raises(VerificationFailed, match="tree hash 5 is missing"):
            view.read_hashes([0, 5])
    assert log.size == 1


def test_open_checks_origin_and_creation(kind: str, where: str, origin: str, signer: Signer) -> None:
    with pytest.raises(BadInput, match="no ledger"):
        _open(kind, where, origin, create=False)
    with pytest.raises(BadInput, match="without an origin"):
        _open(kind, where, None)
    _open(kind, where, origin).close()
    store = _open(kind, where, None, create=False)  # an existing log: its origin from storage
    assert store.origin == origin
    store.close()
    with pytest.raises(BadInput, match=f"has origin '{origin}', not 'someone.else/log'"):
        _open(kind, where, "someone.else/log")
    with pytest.raises(BadInput, match="not named after"):
        Ledger(_open(kind, where, origin), Signer("someone.else/log", signer.private_key))


# --- PostgreSQL only --------------------------------------------------------------------------------------


def test_schema_mismatch_and_tampering(database_url: str, origin: str, signer: Signer) -> None:
    with Ledger(PostgresStore.open(database_url, origin), signer) as log:
        log.append_many([("e", {"i": i}) for i in range(6)])
        log.checkpoint()
        assert log.store.quick_check() is None
        log.append("e", {"i": 6})
        hashes = [merkle.leaf_hash(data) for _, data in log.entries()]
        hashes[2] = merkle.leaf_hash(b"forged")
        forged = merkle.MemoryTree(hashes)
        for level, index in [(0, 2), (1, 1), (2, 0)]:  # rewrite history below the signed checkpoint
            _sql(database_url, "UPDATE ledger.hashes SET hash = %s WHERE pos = %s",
                 (forged.read([(level, index)])[0], merkle.stored_index(level, index)))
        with pytest.raises(VerificationFailed, match="refusing to sign a checkpoint of size 7: not consistent"):
            log.checkpoint()
        _sql(database_url, "DELETE FROM ledger.entries WHERE idx >= 4")
        with pytest.raises(VerificationFailed, match="shorter than its last checkpoint"):
            log.checkpoint()
        _sql(database_url, "DELETE FROM ledger.entries WHERE idx = 1")
        assert log.store.quick_check() == "1 of the entries below 4 are missing"
    _sql(database_url, "UPDATE ledger.meta SET value = '2' WHERE key = 'schema'")
    with pytest.raises(BadInput, match="has schema '2', expected 1"):
        PostgresStore.open(database_url, origin)


def test_names_the_database_without_credentials(database_url: str, origin: str) -> None:
    where = describe(database_url)
    assert where.startswith("postgresql://127.0.0.1:") and "passfile" not in where and "erasure@" not in where
    with pytest.raises(BadInput, match=f"no ledger in {where}$"):
        PostgresStore.open(database_url, origin, create=False)
    other = PostgresStore.open(database_url, "other.example/log", schema="other_log")  # one log per schema
    try:
        assert other.where == f"{where} (schema other_log)"
        assert not PostgresStore.exists(database_url) and PostgresStore.exists(database_url, "other_log")
    finally:
        other.close()
    with pytest.raises(BadInput, match="bad schema name"):
        PostgresStore.open(database_url, origin, schema="x; DROP TABLE y")


def test_lost_connection_is_a_service_error_then_reconnects(database_url: str, origin: str) -> None:
    with Ledger(PostgresStore.open(database_url, origin)) as log:
        log.append("e", {"i": 0})
        pid = log.store._db.info.backend_pid
        _sql(database_url, "SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ServiceError) as lost:
            log.append("e", {"i": 1})
        message = str(lost.value)
        assert message.startswith(f"ledger database {describe(database_url)} error: ") and "\n" not in message
        assert log.append("e", {"i": 1}) == 1  # the next transaction reconnects
        assert log.size == 2


def test_a_writer_waits_for_the_lock_then_times_out(database_url: str, origin: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ledger.postgres_store.LOCK_TIMEOUT", "300ms")
    with Ledger(PostgresStore.open(database_url, origin)) as log, psycopg.connect(database_url) as other:
        log.append("e", {"i": 0})
        other.execute("SELECT pg_advisory_xact_lock(%s)", (log.store._writer_lock,))  # another writer, stalled
        with pytest.raises(ServiceError, match="ledger database .* error: canceling statement due to lock timeout"):
            log.append("e", {"i": 1})
        assert log.size == 1  # reading needs no lock
        other.rollback()
        assert log.append("e", {"i": 1}) == 1  # the connection is usable again


def test_server_stopped_is_a_service_error(tmp_path: Path, origin: str) -> None:
    from services import local as local_services

    ws = Workspace(tmp_path / "own-server")
    url = local_services.up(ws, which=("postgres",))["postgres"].endpoint
    try:
        log = Ledger(PostgresStore.open(url, origin))
        log.append("e", {})
    finally:
        local_services.down(ws)
    try:
        with pytest.raises(ServiceError) as stopped:
            log.append("e", {})
        assert str(stopped.value).startswith(f"ledger database {describe(url)} error: ")
        with pytest.raises(ServiceError) as refused:
            PostgresStore.open(url, origin)
        assert str(refused.value).startswith(f"cannot open ledger database {describe(url)}: ")
        for err in (stopped.value, refused.value):
            assert "\n" not in str(err) and "passfile" not in str(err)
    finally:
        log.close()
        local_services.down(ws, purge=True)


_WRITER = """
import sys
from ledger.log import Ledger
from ledger.postgres_store import PostgresStore
url, origin, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with Ledger(PostgresStore.open(url, origin)) as log:
    print("ready", flush=True)
    sys.stdin.readline()  # all four start together
    done, sizes = 0, [1, 5, 2, 9, 3]
    while done < count:
        batch = [("e", {"w": name, "i": i}, f"{name}-{i}") for i in range(done, min(count, done + sizes[done % 5]))]
        if done:  # a redelivered entry inside each later batch: logged once
            batch.append(("e", {"w": name, "i": done - 1}, f"{name}-{done - 1}"))
        log.append_many(batch)
        done += len(batch) - (1 if done else 0)
"""


def test_four_concurrent_writers_leave_a_gapless_verifiable_log(database_url: str, origin: str,
                                                                 signer: Signer) -> None:
    count, names = 120, ["a", "b", "c", "d"]
    PostgresStore.open(database_url, origin).close()  # created before the race, as `erasure dev up` does
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, database_url, origin, name, str(count)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for name in names]
    try:
        assert [w.stdout.readline().strip() for w in writers] == ["ready"] * 4
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        assert [w.wait(timeout=120) for w in writers] == [0] * 4
    finally:
        for w in writers:
            w.kill()
    with Ledger(PostgresStore.open(database_url, origin), signer) as log:
        assert log.size == 4 * count
        rows = log.entries()
        assert [i for i, _ in rows] == list(range(4 * count))  # gapless
        written = Counter((e["w"], e["i"]) for e in (json.loads(data) for _, data in rows))
        assert written == Counter({(name, i): 1 for name in names for i in range(count)})  # each exactly once
        assert log.root() == merkle.root([merkle.leaf_hash(data) for _, data in rows])
        assert log.store.quick_check() is None
        log.checkpoint()
        report = audit_log(log.store, [signer.verifier], origin)  # what `erasure ledger verify` runs
        assert (report.entries, report.checkpoint_size) == (4 * count, 4 * count)
        runs = sum(1 for a, b in zip(rows, rows[1:]) if json.loads(a[1])["w"] != json.loads(b[1])["w"])
        print(f"{runs + 1} runs of one writer's batches in the log")


def test_the_workspace_ledger_follows_the_database_url(workspace: Workspace, database_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert not log_exists(workspace) and log_location(workspace) == str(workspace.ledger_db)
    monkeypatch.setenv("ERASURE_DATABASE_URL", database_url)
    assert not log_exists(workspace) and log_location(workspace) == describe(database_url)
    with open_ledger(workspace) as ledger:
        assert isinstance(ledger.store, PostgresStore)
        ledger.append("request_received", {"request_id": "r-1"}, "r-1")
    assert log_exists(workspace) and not workspace.ledger_db.exists()
    store = PostgresStore.open(database_url, create=False)  # a fresh store, another connection
    try:
        with store.reading() as view:
            assert view.find_keys(["r-1"]) == {"r-1": 0} and view.size() == 1
    finally:
        store.close()
    with Ledger(open_log_store(workspace, create=False)) as again:
        assert again.find("r-1") == 0
    monkeypatch.delenv("ERASURE_DATABASE_URL")
    with pytest.raises(BadInput, match="no ledger at"):
        open_ledger(workspace, create=False)
