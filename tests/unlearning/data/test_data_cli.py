"""`erasure data ingest | stats | subjects`, including bad input files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_ingest_stats_and_subjects(workspace, records, write_jsonl):
    given = records(subjects=30, per_subject=2)
    result = run("data", "ingest", str(write_jsonl(given)), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"records": 60, "subjects": 30}

    stats = json.loads(run("data", "stats", "--json").stdout)
    assert stats["records"] == 60 and stats["subjects"] == 30
    assert sum(s["records"] for s in stats["splits"].values()) == 60

    everyone = json.loads(run("data", "subjects", "--json").stdout)
    assert everyone == sorted({r.subject_id for r in given})
    held_out = json.loads(run("data", "subjects", "--split", "test", "--json").stdout)
    assert set(held_out) < set(everyone) and len(held_out) == stats["splits"]["test"]["subjects"]
    assert "records, 30 subjects" in run("data", "stats").stdout


BAD_FILES = {
    "not json": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}', "{oops"],
    "missing field": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}',
                      '{"record_id": "b", "subject_id": "s", "prompt": "p"}'],
    "unknown field": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}',
                      '{"record_id": "b", "subject_id": "s", "prompt": "p", "answer": "No", "extra": 1}'],
    "not a string": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}',
                     '{"record_id": "b", "subject_id": 7, "prompt": "p", "answer": "No"}'],
    "not an object": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}', '["b"]'],
    "duplicate id": ['{"record_id": "a", "subject_id": "s", "prompt": "p", "answer": "Yes"}',
                     '{"record_id": "a", "subject_id": "t", "prompt": "q", "answer": "No"}'],
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_exit_2_and_ingest_nothing(workspace, write_jsonl, case):
    result = run("data", "ingest", str(write_jsonl(BAD_FILES[case])))
    assert result.exit_code == 2
    assert result.stderr.startswith("erasure: error:") and len(result.stderr.strip().splitlines()) == 1
    if case != "duplicate id":
        assert "line 2" in result.stderr
    assert json.loads(run("data", "stats", "--json").stdout)["records"] == 0


def test_ingest_usage_errors(workspace, tmp_path):
    assert run("data", "ingest").exit_code == 2
    assert run("data", "ingest", str(tmp_path / "x.jsonl"), "--movielens").exit_code == 2
    missing = run("data", "ingest", str(tmp_path / "missing.jsonl"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    assert run("data", "subjects", "--split", "bogus").exit_code == 2


@pytest.mark.assets
def test_ingest_packaged_movielens(workspace):
    result = run("data", "ingest", "--movielens", "--max-users", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"records": 60, "subjects": 20}
    assert json.loads(run("data", "subjects", "--json").stdout) == sorted(str(u) for u in range(1, 21))
    again = run("data", "ingest", "--movielens", "--max-users", "20")
    assert again.exit_code == 2 and "already in the store" in again.stderr


def test_cli_and_record_store_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, cli.app, unlearning.data.records, unlearning.versions.store, unlearning.methods.sisa; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
