"""`erasure forget` refuses before any effect when it could not finish: no model, no keys. (With no
registry configured it uses the embedded one: tests/unlearning/registry/test_embedded_registry.py.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.log import open_ledger
from unlearning.data.records import RecordStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "5"]


def test_forget_without_keys_changes_nothing(workspace, records, write_jsonl, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=6, per_subject=2)))]).exit_code == 0
    assert runner.invoke(app, ["train", "m", "--method", "sisa", "--shards", "2", "--slices", "1", *TINY]).exit_code == 0
    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]

    unknown = runner.invoke(app, ["forget", "nope", "--subject", subject])
    assert unknown.exit_code == 2 and "no model named 'nope'" in unknown.stderr
    refused = runner.invoke(app, ["forget", "m", "--subject", subject])
    assert refused.exit_code == 2 and "run `erasure keys init`" in refused.stderr, refused.output
    assert len(refused.stderr.strip().splitlines()) == 1
    with RecordStore.open(workspace) as store:
        assert subject in store.subjects("train")  # nothing shredded
    if workspace.ledger_db.exists():
        with open_ledger(workspace) as ledger:
            assert ledger.size == 0 or "request_received" not in ledger.entry(ledger.size - 1).decode()
    assert [p.name for p in (workspace.artifacts / "models" / "m").iterdir()] == ["v1"]


def test_receipts_of_logged_requests_or_one_clear_error(workspace, records, write_jsonl) -> None:
    from ledger.errors import BadInput
    from unlearning.operations.receive import receipts_of, receive

    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=3, per_subject=2)))]).exit_code == 0
    with RecordStore.open(workspace) as store:
        first, second = store.subjects("train")[:2]
    receipts = [receive(workspace, "r1", first), receive(workspace, "r2", second)]
    assert receipts_of(workspace, ["r2", "r1"]) == receipts[::-1]
    with pytest.raises(BadInput, match="requests not received: r3$"):
        receipts_of(workspace, ["r1", "r3"])
