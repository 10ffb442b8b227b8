"""`erasure bench ledger` runs and reports every number (performance itself is not tested)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app


def test_bench_ledger_tiny(runner: CliRunner, workspace) -> None:
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "40,7", "--batch", "16", "--proofs", "5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["benchmark"], report["batch"], report["proofs_per_size"]) == ("ledger", 16, 5)
    assert [row["entries"] for row in report["results"]] == [7, 40]
    assert [row["appended"] for row in report["results"]] == [7, 33]
    keys = {"appends_per_s", "append_s", "checkpoint_ms", "inclusion_prove_ms", "inclusion_prove_p99_ms",
            "inclusion_verify_ms", "consistency_prove_ms", "consistency_verify_ms", "audit_s"}
    for row in report["results"]:
        assert keys <= set(row) and all(row[k] > 0 for k in keys)


def test_bench_ledger_bad_sizes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["bench", "ledger", "--sizes", "10,x"])
    assert result.exit_code == 2 and "--sizes" in result.stderr
