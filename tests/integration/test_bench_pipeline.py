"""`erasure bench pipeline` shared mode: the same workload on the embedded backends (SQLite) and
on the shared ones (PostgreSQL + S3) in one run, side by side (performance itself is not tested)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from cli.app import app
from consumers.bench import describe_object_store, scratch_workspace, shared_backends
from ledger.objects import open_object_store
from services.process import port_free

SHARED_ENV = ("ERASURE_DATABASE_URL", "ERASURE_KEYS_DATABASE_URL", "ERASURE_OBJECT_STORE")


def _port(url: str) -> int:
    return int(url.split("127.0.0.1:", 1)[1].split("/", 1)[0].split(" ", 1)[0])


@pytest.mark.services
def test_bench_pipeline_shared_mode_starts_its_own_backends(kafka_bootstrap: str, mlflow_uri: str,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))  # no database, no object store configured
    monkeypatch.setenv("ERASURE_KAFKA", kafka_bootstrap)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    for name in SHARED_ENV:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["bench", "pipeline", "--requests", "3", "--load", "2", "--rate", "4",
                                      "--window", "0.5", "--executors", "1", "--users", "24", "--shared", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # MLflow's run links went to stderr
    shared, comparison = report["shared"], report["comparison"]
    assert shared["started_here"] == ["postgres", "s3"]
    assert shared["database"].startswith("postgresql://127.0.0.1:") and "erasure_bench_" in shared["database"]
    assert shared["postgresql"].startswith("15.") and report["sqlite"].startswith("3.")
    assert shared["object_store"].startswith("s3://erasure/erasure-bench-") and "credentials" not in shared["object_store"]
    for figures in (report, shared):
        assert figures["planner"]["requests"] == 3 and figures["planner"]["requests_per_s"] > 0
        assert set(figures["latency"]["seconds"]) == {"excluded", "certified", "restored"}
        assert all(cuts["p50"] > 0 for cuts in figures["latency"]["seconds"].values())
    planner = comparison["planner_requests_per_s"]
    assert (planner["embedded"], planner["shared"]) == (report["planner"]["requests_per_s"],
                                                        shared["planner"]["requests_per_s"])
    assert planner["ratio"] == round(planner["shared"] / planner["embedded"], 3)
    restored = comparison["latency_s"]["restored"]["p95"]
    assert restored["shared"] == shared["latency"]["seconds"]["restored"]["p95"] and restored["ratio"] > 0
    assert "model" not in shared and report["model"]["data"].endswith("the first 24 users")
    # what it started is stopped
    assert port_free(_port(shared["database"])) and port_free(_port(shared["object_store"].split(" at ")[1]))


def test_shared_backends_on_given_servers_are_left_as_found(database_url: str, object_store_url: str) -> None:
    with shared_backends(database_url, object_store_url) as backends:
        assert backends.started == ()
        name = backends.database.split("?")[0].rsplit("/", 1)[1]
        assert name.startswith("erasure_bench_")
        with psycopg.connect(database_url) as db:
            present = {n for (n,) in db.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}%",))}
        assert present == {name, f"{name}_keys"}
        with psycopg.connect(backends.database) as db:
            assert db.execute("SELECT current_database()").fetchone() == (name,)
        assert backends.object_store.split("?")[0] == f"{object_store_url.split('?')[0]}/erasure-bench-{name[14:]}"
        open_object_store(backends.object_store).put_if_absent("models/m/v1.json", b"{}")
        beside = open_object_store(object_store_url)
        beside.put_if_absent("kept", b"mine")
    with psycopg.connect(database_url) as db:  # its databases dropped, the given one untouched
        assert db.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{name}%",)).fetchone() == (0,)
    assert beside.list() == ["kept"]  # its prefix is empty, the rest of the store untouched


def test_scratch_workspace_ignores_the_users_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHARED_ENV:
        monkeypatch.setenv(name, f"postgresql://user-{name}")
    with scratch_workspace("127.0.0.1:9", "http://127.0.0.1:9") as ws:  # embedded: SQLite files of its own
        assert (ws.database_url(), ws.keys_database_url(), ws.object_store_url()) == (None, None, None)
        assert not any(name in os.environ for name in SHARED_ENV)
    assert all(os.environ[name] == f"postgresql://user-{name}" for name in SHARED_ENV)


def test_describe_object_store_drops_the_query() -> None:
    url = "s3://erasure/p/erasure-bench-1?endpoint=http://127.0.0.1:9000&credentials=/x/s3-credentials"
    assert describe_object_store(url) == "s3://erasure/p/erasure-bench-1 at http://127.0.0.1:9000"


def test_soak_refuses_the_shared_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "pipeline", "--soak", "1", "--shared"])
    assert result.exit_code == 2 and "--soak takes neither" in result.stderr


def test_help_documents_the_shared_mode() -> None:
    result = CliRunner().invoke(app, ["bench", "pipeline", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert all(flag in result.stdout for flag in ("--shared", "--database", "--object-store", "--users"))
