"""`erasure admin migrate`: an embedded workspace (ledger.db, records.db + record-keys.db, versions
under artifacts/, the embedded MLflow registry) moves into the shared backends (PostgreSQL, the S3
server, an MLflow server), proves the ledger's size and root unchanged, and afterwards every
command runs on the shared backends from erasure.toml alone. Rerunning is a no-op; a target
holding another ledger is refused before anything is written."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.keys import build_trust, init_keys, write_trust
from ledger.log import Ledger, open_ledger
from ledger.merkle import stored_count
from ledger.postgres_store import PostgresStore
from ledger.store import SqliteStore
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.registry.mlflow import Registry
from unlearning.versions.layout import MODEL_JSON, SYNCED_MARK
from unlearning.versions.store import ModelStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3"]
SHARED_ENV = ("ERASURE_DATABASE_URL", "ERASURE_KEYS_DATABASE_URL", "ERASURE_OBJECT_STORE", "MLFLOW_TRACKING_URI",
              "MLFLOW_REGISTRY_URI")


def run(*args: str):
    return runner.invoke(app, list(args))


def _embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shared backend configured by the environment: the workspace's embedded stores."""
    for key in SHARED_ENV:
        monkeypatch.setenv(key, "")  # so that whatever was there comes back after the test
        monkeypatch.delenv(key)


def _status(request_id: str) -> dict:
    shown = run("status", request_id, "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    report.pop("time_left_s", None)  # the clock moves on
    return report


def test_migrate_an_embedded_workspace_with_a_certified_model_and_an_erasure(
        workspace: Workspace, records, write_jsonl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        database_url: str, object_store_url: str, mlflow_uri: str) -> None:
    _embedded(monkeypatch)
    monkeypatch.chdir(tmp_path)  # MLflow's own default would put ./mlruns here
    name = f"mig{uuid.uuid4().hex[:8]}"  # the session's MLflow server is shared by the tests

    assert run("data", "ingest", str(write_jsonl(records(subjects=8, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    trained = run("train", name, "--method", "sisa", "--shards", "2", "--slices", "1", *TINY, "--json")
    assert trained.exit_code == 0, trained.output
    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]
    forgot = run("forget", name, "--subject", subject, "--json")
    assert forgot.exit_code == 0, forgot.output
    request_id = json.loads(forgot.stdout)["request_id"]
    embedded = Registry.for_workspace(workspace)
    assert [(r.version, r.status) for r in embedded.versions(name)] == [(2, "superseded"), (3, "certified")]

    status_before = _status(request_id)
    with RecordStore.open(workspace) as store:
        records_before, stats_before = store.records(), store.stats()
    with open_ledger(workspace, create=False) as ledger:
        size, root = ledger.size, ledger.root()
    local_versions = ModelStore(workspace).versions(name)
    write_trust(build_trust(workspace), tmp_path / "trust.json")

    migrated = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url,
                   "--mlflow", mlflow_uri, "--json")
    assert migrated.exit_code == 0, migrated.output
    proof = json.loads(migrated.stdout)
    for step in ("ledger", "records", "versions", "registry", "config"):
        assert f"{step}: " in migrated.stderr  # one line per step
    ledger_proof = proof["ledger"]
    assert ledger_proof["identical"] and ledger_proof["before"] == ledger_proof["after"] == ledger_proof["final"]
    assert ledger_proof["after"]["size"] == size == ledger_proof["entries_copied"]
    assert ledger_proof["after"]["root"] == ledger_proof["after"]["root_from_entries"] == root.hex()
    assert proof["records"]["counts"] == proof["records"]["target_counts"]
    assert proof["records"]["counts"]["records"] == stats_before["records"]
    assert proof["records"]["decrypted_sample"] > 0
    assert sorted(proof["versions"]["uploaded"]) == sorted(f"{name}/v{n}" for n in local_versions)
    assert proof["versions"]["bundles_uploaded"]
    assert proof["registry"]["copied"] == {name: [2, 3]}  # v1 was purged: its number stays a gap
    assert proof["config"]["added"].keys() == {"database", "object_store", "mlflow"}
    assert str(workspace.ledger_db) in proof["stale"]
    # what a later erasure would not reach is gone: the data keys and the embedded registry
    assert set(proof["retired"]) >= {str(workspace.record_keys_db), str(workspace.records_db),
                                     str(workspace.mlflow_db), str(workspace.mlflow_artifacts)}
    assert not workspace.record_keys_db.exists() and not workspace.records_db.exists()
    assert not workspace.mlflow_db.exists()
    assert not workspace.mlflow_artifacts.exists()

    # from now on erasure.toml alone points every command at the shared backends
    assert workspace.database_url() == database_url and workspace.object_store_url() == object_store_url
    assert workspace.mlflow_uri() == mlflow_uri
    toml = workspace.config_file.read_text()

    verified = run("verify", f"models:/{name}@certified", "--trust", str(tmp_path / "trust.json"), "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["verified"] and report["claim"] == "EXACT"
    assert {"registry binding", "aliases"} <= {c["check"] for c in report["checks"]}
    assert _status(request_id) == status_before
    with RecordStore.open(workspace) as store:  # now PostgreSQL
        assert type(store._db).__name__ == "_PostgresBackend"
        assert store.records() == records_before and store.stats() == stats_before
    shared = PostgresStore.open(database_url, create=False)
    try:
        assert Ledger(shared).size == size and Ledger(shared).root() == root
    finally:
        shared.close()
    for number in local_versions:
        assert (workspace.artifacts / "models" / name / f"v{number}" / SYNCED_MARK).exists()

    # another host: the same settings and key directory, nothing else, reads the versions from the store
    other = Workspace(tmp_path / "other-host")
    other.home.mkdir()
    shutil.copy(workspace.config_file, other.config_file)
    monkeypatch.setenv("ERASURE_HOME", str(other.home))
    monkeypatch.setenv("ERASURE_KEY_DIR", str(workspace.key_dir))
    fetched = ModelStore(Workspace.from_env()).get(name)
    assert fetched.version == local_versions[-1]
    assert (fetched.path / MODEL_JSON).read_bytes() == \
        (workspace.artifacts / "models" / name / f"v{fetched.version}" / MODEL_JSON).read_bytes()
    monkeypatch.setenv("ERASURE_HOME", str(workspace.home))
    monkeypatch.delenv("ERASURE_KEY_DIR")

    again = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url,
                "--mlflow", mlflow_uri, "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["ledger"]["entries_copied"] == 0 and second["ledger"]["checkpoints_copied"] == 0
    assert second["ledger"]["after"]["size"] == size
    assert "no embedded record store" in second["records"]["skipped"] and second["retired"] == []
    assert second["versions"]["uploaded"] == [] and second["versions"]["bundles_uploaded"] == []
    assert sorted(second["versions"]["already_there"]) == sorted(proof["versions"]["uploaded"])
    assert "skipped" in second["registry"]  # the embedded registry is gone: the server is the registry
    assert second["config"]["added"] == {} and workspace.config_file.read_text() == toml


def _log(ws: Workspace, n: int, tag: str) -> tuple[int, bytes]:
    with open_ledger(ws, sign=True) as ledger:
        ledger.append_many([("test_entry", {"i": i, "tag": tag}, f"{tag}-{i}") for i in range(n)])
        ledger.checkpoint()
        return ledger.size, ledger.root()


def _copy_prefix(ledger_db: Path, url: str, n: int) -> None:
    """The first `n` entries (keys, tree hashes, no checkpoint) of a ledger.db into an empty database
    ledger: what another workspace's migration, or one cut short, leaves there."""
    source = SqliteStore.open(ledger_db, create=False)
    target = PostgresStore.open(url, source.origin)
    try:
        with source.reading() as src, target.writing() as dst:
            keys = dict(src.iter_keys())
            dst.insert_entries([(i, data, keys.get(i)) for i, data in src.entries(0, n)])
            dst.insert_hashes([(p, h) for p, h in src.iter_hashes() if p < stored_count(n)])
    finally:
        target.close()
        source.close()


def _empty_ledger(url: str) -> None:
    import psycopg

    with psycopg.connect(url) as db:
        db.execute("TRUNCATE ledger.entries, ledger.hashes, ledger.checkpoints")


def test_another_ledger_in_the_target_is_refused_and_a_prefix_is_completed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, object_store_url: str) -> None:
    _embedded(monkeypatch)
    monkeypatch.delenv("ERASURE_KEY_DIR", raising=False)
    mine, theirs = Workspace(tmp_path / "mine"), Workspace(tmp_path / "theirs")
    for ws in (mine, theirs):
        init_keys(ws.key_dir)
    size, root = _log(mine, 5, "mine")
    _log(theirs, 3, "theirs")  # the same (default) origin, other entries
    _copy_prefix(theirs.ledger_db, database_url, 3)  # the database holds the other workspace's ledger

    monkeypatch.setenv("ERASURE_HOME", str(mine.home))
    refused = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url)
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds another ledger: entry 0 differs: nothing migrated" in lines[0], refused.output
    assert not mine.config_file.exists()
    shared = PostgresStore.open(database_url, create=False)
    try:
        assert Ledger(shared).size == 3  # nothing written there either
    finally:
        shared.close()

    # erasure.toml naming another database: refused before anything is written, too
    mine.config_file.write_text('[database]\nurl = "postgresql://someone@elsewhere/db"\n')
    conflict = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url)
    assert conflict.exit_code == 2 and "already configured for another database" in conflict.stderr
    assert len(conflict.stderr.strip().splitlines()) == 1
    mine.config_file.unlink()

    # an interrupted copy (a prefix of this ledger, without its checkpoint) is completed
    _empty_ledger(database_url)
    _copy_prefix(mine.ledger_db, database_url, 2)
    done = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url, "--json")
    assert done.exit_code == 0, done.output
    proof = json.loads(done.stdout)
    assert proof["ledger"]["entries_copied"] == 3 and proof["ledger"]["checkpoints_copied"] == 1
    assert proof["ledger"]["after"]["size"] == size and proof["ledger"]["after"]["root"] == root.hex()
    assert proof["records"].get("skipped") and proof["registry"].get("skipped")
    assert mine.config()["database"]["url"] == database_url
    assert mine.config()["object_store"]["url"] == object_store_url and "mlflow" not in mine.config()

    words = run("admin", "migrate", "--database", database_url, "--object-store", object_store_url)
    assert words.exit_code == 0, words.output  # run again, in words: nothing left to do
    lines = words.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == ["ledger", "records", "versions", "registry", "config"]
    assert lines[0].startswith("ledger: 0 entries copied")
    assert f"proof: ledger size {size} root {root.hex()} in ledger.db" in lines
    assert f"now a stale backup, no longer used: {mine.ledger_db}" in words.stdout
