"""Forgetting with every method (retrain, APA, S3T) on the tiny model, certified and verified
against the real MLflow server. SISA is covered in depth by test_forget.py."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.versions.store import ModelStore

pytestmark = pytest.mark.services
runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3"]
METHODS = {
    "retrain": [],
    "apa": ["--shards", "2", "--neighbours", "4"],
    "s3t": ["--shards", "2", "--slices", "2", "--layers-per-group", "1", "--budget", "2"],
}


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("method", list(METHODS))
def test_forget_and_verify(method: str, workspace: Workspace, records, write_jsonl, mlflow_uri: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert run("data", "ingest", str(write_jsonl(records(subjects=16, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    name = f"{method}-{uuid.uuid4().hex[:8]}"
    trained = run("train", name, "--method", method, *METHODS[method], *TINY, "--json")
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["registered"]["aliases"] == ["certified"]

    first = ModelStore(workspace).get(name, 1)
    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]
        erased = set(store.commitments_of(subject))

    forgot = run("forget", name, "--subject", subject, "--json")
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    assert out["purged_versions"] == [1]
    if method == "retrain":  # one adapter: nothing servable without it, so straight to the retrain
        assert out["excluded_version"] is None and out["restored_version"] is not None
    else:
        assert out["excluded_version"] is not None
    if method == "apa":
        assert out["restored_version"] is not None

    verified = run("verify", f"models:/{name}@certified", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["verified"]
    assert ("aggregator binding" in {c["check"] for c in report["checks"]}) == (method == "apa")

    newest = ModelStore(workspace).get(name)
    assert newest.version > first.version
    for component in newest.components:
        manifest = component.manifest()
        assert not any(manifest.contains(c) for c in erased), component.id
    if method == "s3t":
        served = newest.meta.aggregation.components
        assert served and all(cid in {c.id for c in newest.components} for cid in served)


def test_forget_a_validation_subject_of_apa(workspace: Workspace, records, write_jsonl, mlflow_uri: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject whose records only APA's aggregator holds (its validation pool): the exclusion
    rewrites the aggregator without them, which restores the model; no adapter is retrained."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert run("data", "ingest", str(write_jsonl(records(subjects=16, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    name = f"apa-{uuid.uuid4().hex[:8]}"
    assert run("train", name, "--method", "apa", *METHODS["apa"], *TINY).exit_code == 0
    first = ModelStore(workspace).get(name, 1)
    with RecordStore.open(workspace) as store:
        subject = store.subjects("valid")[0]
        erased = set(store.commitments_of(subject))
    assert any(first.component("aggregator").manifest().contains(c) for c in erased)
    adapters = {c.id: c.weights_sha256 for c in first.components if c.meta.kind == "adapter"}

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # registered at the server, which is not configured now: the
    refused = run("forget", name, "--subject", subject)  # embedded registry refuses, before any effect
    assert refused.exit_code == 2 and "in another MLflow registry" in refused.stderr
    with RecordStore.open(workspace) as store:
        assert subject in store.subjects("valid")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)

    forgot = run("forget", name, "--subject", subject, "--json")
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    assert out["excluded_version"] is not None and out["restored_version"] is None and out["purged_versions"] == [1]
    newest = ModelStore(workspace).get(name)
    assert not any(c.manifest().contains(e) for c in newest.components for e in erased)
    assert {c.id: c.weights_sha256 for c in newest.components if c.meta.kind == "adapter"} == adapters
    verified = run("verify", f"models:/{name}@certified", "--json")
    assert verified.exit_code == 0, verified.output
    status = json.loads(run("status", out["request_id"], "--json").stdout)
    assert status["stage"] == "restored" and status["models"][name]["shards"] == [-1]
    assert status["models"][name]["restored"]["-1"]["version"] == out["excluded_version"]
    # erasure forget logs a deadline by policy too (GDPR Art. 17 unless --legal-basis), met here
    assert status["deadline_policy"]["policy"] == "GDPR Art. 17" and status["deadline_met"] is True
