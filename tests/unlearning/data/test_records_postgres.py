"""The encrypted record store on PostgreSQL (the shared deployment), against a real server:
the same behaviour as on SQLite, the data keys in another database (a dump of the records'
database alone is unreadable), erasure destroys the key first, and an unreachable server is one
line (ServiceError), never a traceback."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.errors import BadInput, ErasureError, ServiceError
from ledger.workspace import Workspace
from services.postgres import bin_dir
from unlearning.data.partition import Partition
from unlearning.data.records import PG_KEY_TABLES, PG_TABLES, Provenance, Record, RecordStore

BASE = "ab" * 32
OTHER_BASE = "cd" * 32


@pytest.fixture
def shared(workspace: Workspace, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The test workspace, configured for its own fresh PostgreSQL database (keys: `<name>_keys`)."""
    monkeypatch.setenv("ERASURE_DATABASE_URL", database_url)
    monkeypatch.delenv("ERASURE_KEYS_DATABASE_URL", raising=False)
    return workspace


def _rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute(query, params).fetchall()


def _aad(record_id: str, subject_id: str) -> bytes:
    return json.dumps({"record_id": record_id, "subject_id": subject_id}, separators=(",", ":"),
                      sort_keys=True).encode()


def test_open_picks_postgres_and_keeps_the_keys_in_the_other_database(shared, records):
    keys_url = shared.keys_database_url()
    assert keys_url and keys_url != shared.database_url()
    given = records(subjects=3, per_subject=2)
    with RecordStore.open(shared) as store:
        assert store.ingest(given) == 6
        assert [r.record_id for r in store.records()] == sorted(r.record_id for r in given)
    assert not shared.records_db.exists() and not shared.record_keys_db.exists()  # no SQLite file
    assert len(_rows(shared.database_url(), "SELECT * FROM records")) == 6
    assert _rows(shared.database_url(), "SELECT to_regclass('subject_keys')") == [(None,)]
    assert {s for (s,) in _rows(keys_url, "SELECT subject_id FROM subject_keys")} == {"user0", "user1", "user2"}
    assert _rows(keys_url, "SELECT to_regclass('records')") == [(None,)]
    with RecordStore.open(shared) as again:  # reopened: the tables exist, nothing recreated
        assert len(again.records()) == 6


def _scenario(store: RecordStore, given: list[Record]) -> list:
    """Every operation of the store, with what it returned (commitments named by record id,
    since their salts are random) or the error it raised."""
    out: list = []
    names: dict[bytes, str] = {}

    def note(label: str, call: Callable[[], object]) -> object:
        try:
            value = call()
        except ErasureError as err:
            out.append((label, type(err).__name__, str(err)))
            return None
        out.append((label, value))
        return value

    def named(commitments) -> list[str]:  # type: ignore[no-untyped-def]
        return sorted(names[c] for c in commitments)

    def refresh() -> list[tuple]:
        stored = store.records()
        names.update({r.commitment: r.record_id for r in stored})
        return [(r.record_id, r.subject_id, r.prompt, r.answer, r.split) for r in stored]

    note("ingest", lambda: store.ingest(given[:10]))
    note("ingest valid", lambda: store.ingest(given[10:12], split="valid"))
    note("duplicate", lambda: store.ingest(given[:1]))
    note("twice", lambda: store.ingest([given[12], given[12]]))
    note("bad split", lambda: store.ingest(given[12:], split="later"))
    note("ingest rest", lambda: store.ingest(given[12:]))
    note("records", refresh)
    for split in (None, "train", "valid", "test"):
        note(f"subjects {split}", lambda s=split: store.subjects(s))
        note(f"records {split}", lambda s=split: [r.record_id for r in store.records(s)])
    note("stats", store.stats)
    by_id = {r.record_id: r for r in store.records()}
    c = {rid: r.commitment for rid, r in by_id.items()}
    note("record", lambda: by_id["rec-0-0"] == store.record("rec-0-0"))
    note("unknown record", lambda: store.record("nope"))
    note("commitments_of", lambda: named(store.commitments_of("user1")))
    note("commitments_of some", lambda: named(store.commitments_of("user1", ["rec-1-0"])))
    note("commitments_of unknown", lambda: store.commitments_of("nobody"))
    note("commitments_of missing", lambda: store.commitments_of("user1", ["rec-2-0"]))
    note("provenance", lambda: store.add_provenance([
        Provenance(c["rec-0-0"], "m", 2, "shard0-slice0", 0, 0, "train"),
        Provenance(c["rec-0-0"], "m", 1, "shard0-slice1", 0, 1, "train"),
        Provenance(c["rec-0-0"], "m", 1, "shard1-slice1", 1, 1, "train"),  # replaces (same model, version)
        Provenance(c["rec-0-1"], "a", 1, "aggregator", -1, -1, "train")]))
    note("provenance read", lambda: [(names[p.commitment], p.model, p.version, p.component, p.shard, p.slice, p.split)
                                     for p in store.provenance([c["rec-0-0"], c["rec-0-1"], c["rec-1-0"]])])
    rows = [(c[rid], seq, f"{rid}/{seq}".encode() * 100) for rid in sorted(c) for seq in ("answer", "prompt")]
    note("activations add", lambda: store.add_activations(BASE, rows))
    note("activations bad", lambda: store.add_activations(BASE, [(c["rec-0-0"], "logits", b"x")]))
    note("activations", lambda: sorted((names[k], s, v) for (k, s), v in store.activations(BASE, c.values()).items()))
    note("activations other", lambda: store.activations(OTHER_BASE, c.values()))
    note("count", lambda: store.count_activations(c.values()))
    note("reprefix", lambda: store.add_activations(OTHER_BASE, rows[:2]))
    note("count after reprefix", lambda: (store.count_activations([c[sorted(c)[0]]]), store.count_activations(c.values())))
    note("rectify", lambda: names.get(store.rectify_record("rec-2-0", answer="Maybe")[0]))
    note("rectify same", lambda: store.rectify_record("rec-2-0", answer="Maybe"))
    note("rectify empty", lambda: store.rectify_record("rec-2-0", prompt=" "))
    note("rectify unknown", lambda: store.rectify_record("nope", answer="x"))
    note("after rectify", lambda: (store.record("rec-2-0").answer, store.count_activations([c["rec-2-0"]])))
    note("records", refresh)
    note("erase_records", lambda: named(store.erase_records("user3", ["rec-3-0"])))
    note("erase_records unknown", lambda: store.erase_records("user3", ["rec-3-0"]))
    note("erase_records last", lambda: named(store.erase_records("user3", ["rec-3-1"])))
    note("erase_subject", lambda: named(store.erase_subject("user1")))
    note("erase_subject again", lambda: store.erase_subject("user1"))
    note("erase_commitments", lambda: store.erase_commitments([c["rec-4-0"], c["rec-4-1"], c["rec-0-1"], b"\0" * 32]))
    note("erase_commitments again", lambda: store.erase_commitments([c["rec-4-0"]]))
    note("erase_subject emptied", lambda: store.erase_subject("user4"))
    note("records", refresh)
    note("stats", store.stats)
    note("activations left", lambda: sorted((names[k], s) for k, s in store.activations(OTHER_BASE, c.values())))
    note("count left", lambda: store.count_activations(c.values()))
    note("ingest again", lambda: store.ingest([given[2]]))  # user1 comes back: a fresh key
    note("records", refresh)
    return out


def test_behaves_as_the_sqlite_store(shared, records, tmp_path):
    given = records(subjects=7, per_subject=2)
    partition = Partition.for_workspace(shared)
    with RecordStore(tmp_path / "records.db", tmp_path / "keys" / "record-keys.db", partition) as embedded:
        expected = _scenario(embedded, given)
    with RecordStore.open(shared) as store:
        got = _scenario(store, given)
    assert len(got) == len(expected) > 40
    for want, have in zip(expected, got):
        assert have == want
    assert [s for (s,) in _rows(shared.keys_database_url(), "SELECT subject_id FROM subject_keys ORDER BY 1")] == [
        "user0", "user1", "user2", "user5", "user6"]


def _dump(url: str) -> tuple[set[str], list[bytes]]:
    """Every table of a database and every byte value in it, read as a thief with the dump would."""
    with psycopg.connect(url) as db:
        tables = {t for (t,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        values = []
        for table in sorted(tables):
            for row in db.execute(f'SELECT * FROM "{table}"'):
                values += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return tables, values


def test_a_dump_of_the_records_database_alone_cannot_be_decrypted(shared, records):
    given = records(subjects=3, per_subject=2)
    with RecordStore.open(shared) as store:
        store.ingest(given)
        store.add_activations(BASE, [(r.commitment, "answer", b"hidden states " * 50) for r in store.records()])
    tables, values = _dump(shared.database_url())
    assert set(PG_TABLES) <= tables and not set(PG_KEY_TABLES) & tables
    keys = dict(_rows(shared.keys_database_url(), "SELECT subject_id, data_key FROM subject_keys"))
    assert len(keys) == 3 and all(len(k) == 32 for k in keys.values())
    blob = b"\n".join(values)
    for key in keys.values():
        assert key not in blob and key.hex().encode() not in blob  # no key anywhere in the records' database
    for record in given:
        assert record.prompt.encode() not in blob and record.answer.encode() not in blob.split(b"\n")
    assert b"hidden states" not in blob

    # pg_dump of the records' database: the ciphertexts are in it, no key is
    pg_dump = bin_dir() / "pg_dump"
    if pg_dump.exists():
        dump = subprocess.run([str(pg_dump), "--data-only", "-d", shared.database_url()], capture_output=True,
                              text=True, check=True, timeout=60).stdout
        assert "COPY public.records" in dump and "subject_keys" not in dump
        assert not any(key.hex() in dump for key in keys.values())
        assert given[0].prompt not in dump

    # the rows open only with the keys from the other database
    for record_id, subject_id, nonce, ciphertext in _rows(
            shared.database_url(), "SELECT record_id, subject_id, nonce, ciphertext FROM records"):
        fields = json.loads(AESGCM(keys[subject_id]).decrypt(nonce, ciphertext, _aad(record_id, subject_id)))
        assert fields["prompt"] == next(r.prompt for r in given if r.record_id == record_id)
        for other in (k for s, k in keys.items() if s != subject_id):
            with pytest.raises(InvalidTag):
                AESGCM(other).decrypt(nonce, ciphertext, _aad(record_id, subject_id))
        with pytest.raises(InvalidTag):
            AESGCM(AESGCM.generate_key(bit_length=256)).decrypt(nonce, ciphertext, _aad(record_id, subject_id))


def test_erase_subject_crypto_shreds_a_copy_taken_before(shared, records):
    """As test_record_store.test_erase_subject_crypto_shreds, on PostgreSQL."""
    with RecordStore.open(shared) as store:
        store.ingest(records(subjects=3, per_subject=4))
        backup = _rows(shared.database_url(), "SELECT record_id, nonce, ciphertext FROM records WHERE subject_id = 'user1'")
        assert len(backup) == 4
        erased = store.erase_subject("user1")
        assert len(erased) == 4 and "user1" not in store.subjects()
        with pytest.raises(BadInput, match="unknown subject"):
            store.erase_subject("user1")
    assert _rows(shared.database_url(), "SELECT * FROM records WHERE subject_id = 'user1'") == []
    keys = _rows(shared.keys_database_url(), "SELECT subject_id, data_key FROM subject_keys")
    assert {s for s, _ in keys} == {"user0", "user2"}
    for record_id, nonce, ciphertext in backup:
        for _, other_key in keys:
            with pytest.raises(InvalidTag):
                AESGCM(other_key).decrypt(nonce, ciphertext, _aad(record_id, "user1"))


class _CutOff(ServiceError):
    pass


def _cut_before_records_commit(store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The records' COMMIT fails (the server gone between the two commits), once."""
    backend = store._db
    real = backend.execute

    def execute(sql, params=()):  # type: ignore[no-untyped-def]
        if sql == "COMMIT":
            monkeypatch.setattr(backend, "execute", real)
            real("ROLLBACK")
            raise _CutOff("record store database unavailable: cut off")
        return real(sql, params)

    monkeypatch.setattr(backend, "execute", execute)


def test_an_erasure_cut_off_between_the_commits_has_already_destroyed_the_key(shared, records, monkeypatch):
    with RecordStore.open(shared) as store:
        store.ingest(records(subjects=2, per_subject=2))
        before = store.commitments_of("user1")
        _cut_before_records_commit(store, monkeypatch)
        with pytest.raises(_CutOff):
            store.erase_subject("user1")
        # the key went first: the rows left behind are unreadable, and reads skip them
        assert _rows(shared.keys_database_url(), "SELECT 1 FROM subject_keys WHERE subject_id = 'user1'") == []
        assert len(_rows(shared.database_url(), "SELECT 1 FROM records WHERE subject_id = 'user1'")) == 2
        assert {r.subject_id for r in store.records()} == {"user0"}
        assert store.erase_subject("user1") == before  # the retry finishes it
        assert store.subjects() == ["user0"]


def test_an_ingest_cut_off_between_the_commits_leaves_only_a_key(shared, records, monkeypatch):
    given = records(subjects=1, per_subject=2)
    with RecordStore.open(shared) as store:
        _cut_before_records_commit(store, monkeypatch)
        with pytest.raises(_CutOff):
            store.ingest(given)
        assert store.records() == [] and store.stats()["records"] == 0
        assert len(_rows(shared.keys_database_url(), "SELECT 1 FROM subject_keys")) == 1  # harmless, reused
        store.ingest(given)
        assert [r.prompt for r in store.records()] == [r.prompt for r in given]
        assert len(_rows(shared.keys_database_url(), "SELECT 1 FROM subject_keys")) == 1


def test_concurrent_writers_share_one_key_per_subject(shared, records):
    given = records(subjects=4, per_subject=6)
    halves = [given[0::2], given[1::2]]  # both write every subject
    errors: list[BaseException] = []

    def write(part: list[Record]) -> None:
        try:
            with RecordStore.open(shared) as store:
                for i in range(0, len(part), 3):
                    store.ingest(part[i:i + 3])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with RecordStore.open(shared) as store:
        assert len(store.records()) == 24
    assert len(_rows(shared.keys_database_url(), "SELECT 1 FROM subject_keys")) == 4


def test_one_database_for_records_and_keys_is_refused(shared, monkeypatch):
    monkeypatch.setenv("ERASURE_KEYS_DATABASE_URL", shared.database_url())
    with pytest.raises(BadInput, match="the data keys must live in another one"):
        RecordStore.open(shared)


def _one_line(err: ErasureError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and "passfile" not in text, text
    return text


def test_an_unreachable_server_is_a_one_line_service_error(workspace, monkeypatch):
    from services.process import free_port

    monkeypatch.setenv("ERASURE_DATABASE_URL", f"postgresql://erasure@127.0.0.1:{free_port()}/erasure")
    with pytest.raises(ServiceError) as err:
        RecordStore.open(workspace)
    assert "record store database postgresql://erasure@127.0.0.1:" in _one_line(err.value)


def test_a_server_that_stops_is_a_one_line_service_error(workspace, tmp_path, records, monkeypatch):
    """A server of its own, stopped under an open store (the session's keeps serving the others)."""
    from services import local as local_services

    ws = workspace
    server = local_services.up(Workspace(tmp_path / "server"), which=("postgres",))["postgres"]
    try:
        monkeypatch.setenv("ERASURE_DATABASE_URL", server.endpoint)
        store = RecordStore.open(ws)
        store.ingest(records(subjects=2, per_subject=1))
        local_services.down(Workspace(tmp_path / "server"))
        for call in (store.records, lambda: store.ingest(records(subjects=3, per_subject=1)[2:]),
                     lambda: store.erase_subject("user0")):
            with pytest.raises(ServiceError) as err:
                call()
            assert "unavailable" in _one_line(err.value)
        store.close()
        with pytest.raises(ServiceError) as err:
            RecordStore.open(ws)
        assert "unavailable" in _one_line(err.value)
    finally:
        local_services.down(Workspace(tmp_path / "server"), purge=True)


def test_connections_killed_by_the_server_are_a_service_error(shared, records, database_url):
    with RecordStore.open(shared) as store:
        store.ingest(records(subjects=1, per_subject=1))
        name = urlsplit(database_url).path.lstrip("/")
        with psycopg.connect(database_url, autocommit=True) as admin:  # both of the store's connections
            killed = admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                                   "WHERE pid <> pg_backend_pid() AND datname IN (%s, %s)",
                                   (name, f"{name}_keys")).fetchall()
        assert killed == [(True,), (True,)]
        with pytest.raises(ServiceError) as err:
            store.records()
        _one_line(err.value)


def test_erasure_check_of_the_shared_record_store(shared, records, monkeypatch):
    from unlearning.operations.check import check_shared_records, check_sqlite

    assert check_shared_records(shared) == []  # nothing created yet: a new deployment, not a fault
    with RecordStore.open(shared) as store:
        store.ingest(records(subjects=1, per_subject=1))
    shared.records_db.touch()  # a stray embedded file is not what the shared workspace uses
    assert check_sqlite(shared) == []
    found = check_shared_records(shared)
    assert [(f.store, f.problem) for f in found] == [("records", None), ("record keys", None)]
    assert all("passfile" not in str(f.path) for f in found)
    assert str(found[1].path).endswith("_keys")

    with psycopg.connect(shared.database_url(), autocommit=True) as db:
        db.execute("ALTER TABLE activations DROP COLUMN nonce")
    with psycopg.connect(shared.keys_database_url(), autocommit=True) as db:
        db.execute("ALTER TABLE subject_keys RENAME TO old_keys")
    assert [f.problem for f in check_shared_records(shared)] == [
        "table activations lacks column nonce", "no table subject_keys"]

    monkeypatch.setenv("ERASURE_KEYS_DATABASE_URL", shared.database_url())
    assert check_shared_records(shared)[1].problem.startswith("the records' own database")

    from services.process import free_port

    monkeypatch.setenv("ERASURE_KEYS_DATABASE_URL", f"postgresql://erasure@127.0.0.1:{free_port()}/k")
    with pytest.raises(ServiceError) as err:
        check_shared_records(shared)
    assert "record keys database" in _one_line(err.value)


def test_the_cli_uses_the_shared_store(shared, records, write_jsonl, monkeypatch):
    from typer.testing import CliRunner

    from cli.app import app
    from services.process import free_port

    runner = CliRunner()
    done = runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=3, per_subject=2))), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"records": 6, "subjects": 3}
    assert len(_rows(shared.database_url(), "SELECT 1 FROM records")) == 6 and not shared.records_db.exists()
    assert json.loads(runner.invoke(app, ["data", "stats", "--json"]).stdout)["subjects"] == 3

    monkeypatch.setenv("ERASURE_DATABASE_URL", f"postgresql://erasure@127.0.0.1:{free_port()}/erasure")
    away = runner.invoke(app, ["data", "stats"])
    lines = away.stderr.strip().splitlines()
    assert away.exit_code == 2 and len(lines) == 1 and "record store database" in lines[0], away.output
    assert "Traceback" not in away.output
