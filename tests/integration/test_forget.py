"""Certified unlearning end to end on the tiny model against the real MLflow server:
train → certify → forget → verify → pull, and every way a certified version must fail."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.keys import build_trust, init_keys, write_trust
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.registry.mlflow import Registry, fetch
from unlearning.versions.store import ModelStore

pytestmark = pytest.mark.services
runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3"]


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def trained(workspace: Workspace, records, write_jsonl, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch):
    """A certified, registered SISA model (2 shards x 2 slices) on synthetic records."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert run("data", "ingest", str(write_jsonl(records(subjects=16, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    name = f"rec-{uuid.uuid4().hex[:8]}"
    result = run("train", name, "--method", "sisa", "--shards", "2", "--slices", "2", *TINY, "--json")
    assert result.exit_code == 0, result.output
    registered = json.loads(result.stdout)["registered"]  # train certifies and registers version 1
    assert registered["status"] == "certified" and registered["aliases"] == ["certified"]
    return name


def _victim(workspace: Workspace, name: str) -> tuple[str, set[str]]:
    """A training subject of shard 1, and its commitments."""
    leaves = ModelStore(workspace).get(name, 1).component("shard1-slice1").manifest()
    with RecordStore.open(workspace) as store:
        subject = next(r.subject_id for r in store.records("train") if leaves.contains(r.commitment))
        return subject, {c.hex() for c in store.commitments_of(subject)}


def test_forget_verify_pull_and_idempotence(workspace: Workspace, trained: str, mlflow_uri: str, tmp_path: Path) -> None:
    name = trained
    subject, erased = _victim(workspace, name)

    forgot = run("forget", name, "--subject", subject, "--json")
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    assert out["commitments"] == len(erased)
    assert out["excluded_version"] is not None and out["restored_version"] > out["excluded_version"]
    assert out["purged_versions"] == [1]

    verified = run("verify", f"models:/{name}@certified", "--json", "--state", str(tmp_path / "auditor"))
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["verified"] and report["claim"] == "EXACT"
    assert {c["check"] for c in report["checks"]} >= {"signature", "subjects", "manifests", "non-membership",
                                                      "ledger inclusion", "ledger consistency", "ledger audit",
                                                      "registry binding", "aliases"}

    # the erased commitments are absent from every version still in the registry; v1 is gone with its artifacts
    registry = Registry(mlflow_uri)
    remaining = registry.versions(name)
    assert [r.local_version for r in remaining] == [2, 3]
    assert {r.status for r in remaining} == {"superseded", "certified"}
    for registered in remaining:
        with fetch(registry, registered) as tmp:
            for leaves in (Path(tmp) / "bundle" / "components").glob("*/manifest.leaves"):
                data = leaves.read_bytes()
                held = {data[i:i + 32].hex() for i in range(0, len(data), 32)}
                assert not held & erased
    assert not (workspace.artifacts / "models" / name / "v1").exists()

    # the restored version serves predictions through load_certified
    from unlearning import load_certified

    predictor = load_certified(f"models:/{name}@certified", workspace=workspace)
    assert 0 < predictor.p_yes(['Liked: "Star night (1990)"'])[0] < 1

    # forgetting the same subject again changes nothing
    again = run("forget", name, "--subject", subject, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["restored_version"] is None
    assert [r.version for r in registry.versions(name)] == [r.version for r in remaining]

    # replay audit of a sampled component
    replayed = run("verify", f"models:/{name}@certified", "--replay", "1", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["checks"][-1]["check"] in {"replay", "aliases"}

    pulled = run("pull", f"models:/{name}@certified", "--dest", str(tmp_path / "served"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "served" / "model.json").is_file()


def test_unknown_subject_changes_nothing(workspace: Workspace, trained: str) -> None:
    before = workspace.ledger_db.stat().st_size, len(ModelStore(workspace).versions(trained))
    result = run("forget", trained, "--subject", "nobody")
    assert result.exit_code == 2 and "unknown subject 'nobody'" in result.stderr
    assert (workspace.ledger_db.stat().st_size, len(ModelStore(workspace).versions(trained))) == before


def test_tampered_registered_bundle_fails_verify_and_pull(workspace: Workspace, trained: str, mlflow_uri: str,
                                                          tmp_path: Path) -> None:
    registry = Registry(mlflow_uri)
    registered = registry.resolve(trained, "certified", None)
    # an attacker with write access to the artifact store swaps an adapter file
    evil = tmp_path / "evil" / "components" / "shard0-slice1"
    evil.mkdir(parents=True)
    (evil / "adapter_model.safetensors").write_bytes(b"not the certified weights")
    registry.client.log_artifacts(registered.run_id, str(tmp_path / "evil"), "bundle")

    verified = run("verify", f"models:/{trained}@certified", "--json")
    assert verified.exit_code == 1
    failed = [c for c in json.loads(verified.stdout)["checks"] if not c["ok"]]
    assert failed[0]["check"] == "subjects" and "adapter_model.safetensors" in failed[0]["detail"]

    pulled = run("pull", f"models:/{trained}@certified", "--dest", str(tmp_path / "served"))
    assert pulled.exit_code == 1 and "subjects" in pulled.stderr
    assert not (tmp_path / "served").exists()


def test_unknown_key_and_rolled_back_ledger_fail(workspace: Workspace, trained: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-keys"
    init_keys(other)
    monkeypatch.setenv("ERASURE_KEY_DIR", str(other))
    write_trust(build_trust(Workspace.from_env()), tmp_path / "other-trust.json")
    monkeypatch.delenv("ERASURE_KEY_DIR")
    wrong = run("verify", f"models:/{trained}@certified", "--trust", str(tmp_path / "other-trust.json"), "--json")
    assert wrong.exit_code == 1
    assert json.loads(wrong.stdout)["checks"][0] == {
        "check": "signature", "ok": False, "detail": "DSSE envelope is not signed by any trusted certifier key"}

    state = tmp_path / "auditor"
    assert run("verify", f"models:/{trained}@certified", "--state", str(state)).exit_code == 0

    def roll_back(entries: int) -> None:
        db = sqlite3.connect(workspace.ledger_db)
        size = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        db.execute("DELETE FROM entries WHERE idx >= ?", (size - entries,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (size - entries,))
        db.commit()
        db.close()

    roll_back(1)  # the log forgets its newest entry: the auditor's saved checkpoint catches it
    rolled = run("verify", f"models:/{trained}@certified", "--state", str(state))
    assert rolled.exit_code == 1 and "ledger audit" in rolled.stderr and "entry" in rolled.stderr

    roll_back(3)  # now shorter than the certificate's own checkpoint
    rolled = run("verify", f"models:/{trained}@certified")
    assert rolled.exit_code == 1 and "ledger consistency" in rolled.stderr
