"""`erasure bench ledger` runs and reports every number (performance itself is not tested)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app


def test_bench_ledger_tiny(runner: CliRunner, workspace) -> None:
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "40,7", "--batch", "16", "--proofs", "5",
                                 "--tile-checks", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["benchmark"], report["batch"], report["proofs_per_size"], report["tile_checks_per_size"]) == (
        "ledger", 16, 5, 3)
    assert [row["entries"] for row in report["results"]] == [7, 40]
    assert [row["appended"] for row in report["results"]] == [7, 33]
    keys = {"appends_per_s", "append_s", "checkpoint_ms", "inclusion_prove_ms", "inclusion_prove_p99_ms",
            "inclusion_verify_ms", "consistency_prove_ms", "consistency_verify_ms", "audit_s", "tiles_publish_s",
            "tiles_dir_bytes", "tiles_verify_ms", "tiles_verify_p99_ms", "tiles_requests", "tiles_fetched_bytes"}
    for row in report["results"]:
        assert keys <= set(row) and all(row[k] > 0 for k in keys)


def test_bench_ledger_bad_sizes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "10,x"])
    assert result.exit_code == 2 and "--sizes" in result.stderr


def test_bench_ledger_shared_mode(runner: CliRunner, workspace, database_url: str, monkeypatch) -> None:
    import psycopg

    monkeypatch.setenv("ERASURE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "7,40", "--batch", "16", "--proofs", "5",
                                 "--tile-checks", "3", "--shared", "--single", "5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    shared = report["shared"]
    assert shared["database"].startswith("postgresql://127.0.0.1:") and shared["postgresql"].startswith("15.")
    assert [row["entries"] for row in shared["results"]] == [7, 40]
    assert [row["appended"] for row in shared["results"]] == [7, 33]
    for row, embedded in zip(shared["results"], report["results"]):
        assert row["sqlite_appends_per_s"] == embedded["appends_per_s"]
        assert row["ratio"] == row["appends_per_s"] / embedded["appends_per_s"]
        assert all(row[k] > 0 for k in ("append_s", "checkpoint_ms", "inclusion_prove_ms", "audit_s"))
    assert shared["single"]["appends"] == 5 and shared["single"]["ratio"] > 0
    with psycopg.connect(database_url) as db:  # the benchmark's schema is gone
        assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'erasure_bench_%'").fetchone() == (0,)
    text = runner.invoke(app, ["bench", "ledger", "--sizes", "7", "--batch", "4", "--proofs", "2",
                               "--tile-checks", "1", "--database", database_url, "--single", "2"])
    assert text.exit_code == 0 and "PostgreSQL 15." in text.stdout and "single-entry appends" in text.stdout


def test_bench_ledger_shared_needs_a_database(runner: CliRunner, workspace, monkeypatch) -> None:
    monkeypatch.delenv("ERASURE_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "7", "--shared"])
    assert result.exit_code == 2 and "no database URL" in result.stderr


def test_bench_ledger_tiles_in_the_object_store(runner: CliRunner, workspace, object_store_url: str) -> None:
    from ledger.objects import open_object_store

    result = runner.invoke(app, ["bench", "ledger", "--sizes", "7,300", "--batch", "64", "--proofs", "5",
                                 "--tile-checks", "3", "--object-store", object_store_url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["object_store"]["results"]
    assert [row["entries"] for row in rows] == [7, 300]
    for row, embedded in zip(rows, report["results"]):
        assert row["dir_publish_s"] == embedded["tiles_publish_s"]
        assert row["dir_verify_ms"] == embedded["tiles_verify_ms"]
        assert row["publish_ratio"] == row["publish_s"] / embedded["tiles_publish_s"]
        assert row["verify_ratio"] == row["verify_ms"] / embedded["tiles_verify_ms"]
        assert row["requests"] > 0 and row["fetched_bytes"] > 0
    assert report["object_store"]["url"].startswith(object_store_url.split("?")[0] + "/erasure-bench-")
    assert open_object_store(object_store_url).list() == []  # the scratch prefix is gone
    text = runner.invoke(app, ["bench", "ledger", "--sizes", "7", "--batch", "4", "--proofs", "2",
                               "--tile-checks", "1", "--object-store", object_store_url])
    assert text.exit_code == 0 and "tiles in the object store" in text.stdout
