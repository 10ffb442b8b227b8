"""Corrupt local state is found before it is used: `erasure check`, serve's start-up check,
and one line with exit 2 (never a traceback, never exit 1) from the commands that meet it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from consumers.serve import Service
from ledger.errors import CorruptState
from unlearning.data.records import RecordStore
from unlearning.operations.check import check_workspace, require_sound
from unlearning.operations.restore import Journal
from unlearning.versions.layout import ADAPTER_FILE, STATE_TENSORS
from unlearning.versions.store import ModelStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "5"]


def damage_pages(path: Path) -> bytes:
    """Overwrite every page after the first with junk (same length); returns the original bytes."""
    original = path.read_bytes()
    page = int.from_bytes(original[16:18], "big")
    path.write_bytes(original[:page] + b"\xab" * (len(original) - page))
    return original


def one_line_exit_2(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("erasure: error:") and "Traceback" not in result.output, lines
    for word in words:
        assert word in lines[0], lines[0]


def test_an_empty_workspace_is_sound(workspace) -> None:
    assert check_workspace(workspace) == [] and require_sound(workspace) == []


def test_each_corrupt_store_is_named_and_refused(workspace, records, write_jsonl, mlflow_uri: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=6, per_subject=2)))]).exit_code == 0
    assert runner.invoke(app, ["train", "m", "--method", "sisa", "--shards", "2", "--slices", "2", *TINY]).exit_code == 0
    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]
    sound = runner.invoke(app, ["check"])
    assert sound.exit_code == 0, sound.output
    stores = {line.split(":")[0] for line in sound.stdout.splitlines()}
    assert stores == {"ledger", "records", "record keys", "keys", "checkpoints"}
    assert sound.stdout.count(": ok") == 3 + 3 + 4  # stores, keys (ledger, certifier, model-signing), checkpoints

    # a truncated checkpoint: found by the check, and never resumed from
    component = ModelStore(workspace).get("m").component("shard0-slice0")
    state = component.path / STATE_TENSORS
    original = state.read_bytes()
    state.write_bytes(original[: len(original) // 2])
    with pytest.raises(CorruptState, match=f"{STATE_TENSORS} is corrupt: sha256 .* is not the .* component.json"):
        component.training_state()
    component.adapter()  # its adapter is intact and still loads
    found = runner.invoke(app, ["check"])
    one_line_exit_2(found, "1 of 10 stores corrupt")
    assert f"checkpoints: {component.path}: checkpoint file {state} is corrupt" in found.stdout
    state.write_bytes(original)
    (component.path / ADAPTER_FILE).unlink()
    with pytest.raises(CorruptState, match=f"{ADAPTER_FILE} is missing"):
        component.adapter()
    (component.path / ADAPTER_FILE).write_bytes(b"")
    with pytest.raises(CorruptState, match="is corrupt"):
        component.adapter()
    ModelStore(workspace).get("m").component("shard0-slice0").path.joinpath(ADAPTER_FILE).unlink()

    # a damaged records.db: check names it, forget and serve say so in one line, exit 2
    original = damage_pages(workspace.records_db)
    found = runner.invoke(app, ["check", "--json"])
    assert found.exit_code == 2
    assert "records" in {f["store"] for f in json.loads(found.stdout) if f["problem"]}
    one_line_exit_2(runner.invoke(app, ["data", "stats"]), "corrupt", "records.db")
    one_line_exit_2(runner.invoke(app, ["forget", "m", "--subject", subject]), "corrupt", "records.db")
    monkeypatch.setenv("ERASURE_KAFKA", "127.0.0.1:9")  # never reached: the check comes first
    one_line_exit_2(runner.invoke(app, ["serve"]), "corrupt store", "records:", "restore the workspace")
    with pytest.raises(CorruptState, match="records"):
        Service(workspace).start()
    workspace.records_db.write_bytes(original)

    # a damaged public key
    certifier = workspace.key_dir / "certifier.pub.pem"
    pem = certifier.read_bytes()
    certifier.write_bytes(pem[:40])
    assert [f.line() for f in check_workspace(workspace) if f.problem and f.store == "keys"] == [
        f"keys: {certifier}: {certifier} is not a PEM public key"]
    certifier.write_bytes(pem)

    # a damaged restore journal (it is written atomically: only a disk fault or a hand does this)
    journal = Journal(workspace, "m")
    journal.path.write_text('{"base": 1, "shar')
    with pytest.raises(CorruptState, match="restore journal .*m.restore.json is unreadable"):
        journal.read()
    assert [f.store for f in check_workspace(workspace) if f.problem] == ["journal", "checkpoints"]
