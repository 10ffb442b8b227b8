"""The embedded registry: with no MLflow endpoint configured (no MLFLOW_TRACKING_URI, no
erasure.toml, no dev.json) `train`, `forget`, `verify` and `pull` use the MLflow store inside
ERASURE_HOME in-process (`mlflow.db` + `mlflow-artifacts/`), and no server is started."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.registry.mlflow import Registry, fetch

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3"]


def run(*args: str):
    return runner.invoke(app, list(args))


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split() if (task / "children").exists() else []
        children += [int(k) for k in kids]
    return children + [d for c in children for d in _descendants(c)]


def _listening_inodes() -> set[str]:
    """Socket inodes in state LISTEN (TCP and TCP6), machine-wide."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found.add(fields[9])
    return found


def _serving() -> tuple[set[int], set[str]]:
    """This process's descendants, and the listening sockets this process and they hold."""
    mine = [os.getpid(), *_descendants(os.getpid())]
    listening, held = _listening_inodes(), set()
    for pid in mine:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                held.add(f"{pid}:{target[8:-1]}")
    return set(mine[1:]), held


def _nothing_serves(before: tuple[set[int], set[str]]) -> None:
    """No process this test started runs an MLflow server, and nothing new listens on a port
    (the session's own Kafka and MLflow, started before the test, are not this test's)."""
    children, held = _serving()
    for pid in children - before[0]:
        with_cmd = Path(f"/proc/{pid}/cmdline")
        if with_cmd.exists():
            assert b"mlflow" not in with_cmd.read_bytes(), with_cmd.read_bytes()
    assert not held - before[1], f"new listening sockets: {sorted(held - before[1])}"


def _unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(key, "")  # so that whatever was there comes back after the test
        monkeypatch.delenv(key)


def test_train_forget_verify_pull_with_no_service(workspace: Workspace, records, write_jsonl, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _unconfigured(monkeypatch)
    monkeypatch.chdir(tmp_path)  # MLflow's own default would put ./mlruns here
    assert not workspace.config_file.exists() and not workspace.dev_state.exists()
    assert workspace.mlflow_uri() == f"sqlite:///{workspace.mlflow_db}"
    before = _serving()

    assert run("data", "ingest", str(write_jsonl(records(subjects=8, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    trained = run("train", "m", "--method", "sisa", "--shards", "2", "--slices", "1", *TINY, "--json")
    assert trained.exit_code == 0, trained.output
    registered = json.loads(trained.stdout)["registered"]  # certified and registered as version 1
    assert registered["version"] == 1 and registered["status"] == "certified"
    assert registered["aliases"] == ["certified"]
    assert f"registry: embedded ({workspace.mlflow_db})" in trained.stderr
    assert workspace.mlflow_db.is_file() and any(workspace.mlflow_artifacts.rglob("certificate*"))

    status = run("dev", "status", "--json")
    assert json.loads(status.stdout)["registry"] == {"uri": workspace.mlflow_uri(), "embedded": True}
    assert f"registry embedded ({workspace.mlflow_db})" in run("dev", "status").stdout

    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]
        erased = {c.hex() for c in store.commitments_of(subject)}
    forgot = run("forget", "m", "--subject", subject, "--json")
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    assert out["excluded_version"] is not None and out["restored_version"] > out["excluded_version"]
    assert out["purged_versions"] == [1]

    registry = Registry.for_workspace(workspace)
    remaining = registry.versions("m")
    assert [(r.local_version, r.status) for r in remaining] == [(2, "superseded"), (3, "certified")]
    assert registry.resolve("m", "certified", None).local_version == 3
    for version in remaining:  # the registered bundles are files under the workspace, without the erased records
        assert version.source.startswith(workspace.mlflow_artifacts.as_uri())
        with fetch(registry, version) as tmp:
            manifests = list((Path(tmp) / "bundle" / "components").glob("*/manifest.leaves"))
            assert manifests
            for leaves in manifests:
                data = leaves.read_bytes()
                assert not {data[i:i + 32].hex() for i in range(0, len(data), 32)} & erased

    verified = run("verify", "models:/m@certified", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["verified"] and report["claim"] == "EXACT"
    assert {"registry binding", "aliases"} <= {c["check"] for c in report["checks"]}

    pulled = run("pull", "models:/m@certified", "--dest", str(tmp_path / "served"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "served" / "model.json").is_file()

    assert not workspace.dev_state.exists() and not (tmp_path / "mlruns").exists()
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow exports it; Registry takes it back
    _nothing_serves(before)


def test_versions_a_dev_server_registered_are_read_from_the_same_files(workspace: Workspace, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`erasure dev up`'s server fronts this store: its versions' artifact URIs are
    `mlflow-artifacts:/PATH`, files at PATH under mlflow-artifacts/; the embedded registry reads,
    writes and deletes them there."""
    _unconfigured(monkeypatch)
    monkeypatch.chdir(tmp_path)
    registry = Registry.for_workspace(workspace)
    assert registry.artifacts == workspace.mlflow_artifacts
    client = registry.client
    run = client.create_run(client.create_experiment("erasure/served", artifact_location="mlflow-artifacts:/7"))
    assert run.info.artifact_uri == f"mlflow-artifacts:/7/{run.info.run_id}/artifacts"  # as the server made it
    served = workspace.mlflow_artifacts / "7" / run.info.run_id / "artifacts" / "bundle"
    served.mkdir(parents=True)
    (served / "model.json").write_text("{}")
    client.create_registered_model("served")
    version = client.create_model_version("served", f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id)
    with fetch(registry, registry.get("served", int(version.version))) as tmp:
        assert (Path(tmp) / "bundle" / "model.json").read_text() == "{}"

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(registry._local(run.info.artifact_uri)).delete_artifacts("bundle")  # as purge does
    assert not served.exists() and not (tmp_path / "mlruns").exists()
    assert registry._local("file:///elsewhere/x") == "file:///elsewhere/x"
    assert Registry("http://127.0.0.1:1")._local("mlflow-artifacts:/7/x") == "mlflow-artifacts:/7/x"


def test_forget_refuses_a_model_registered_in_another_registry(workspace: Workspace, records, write_jsonl,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained and registered while another registry was configured, then none is: forgetting
    against the embedded store would leave the versions holding the data in the other one, so
    `forget` refuses before any effect and names the way out."""
    _unconfigured(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert run("data", "ingest", str(write_jsonl(records(subjects=6, per_subject=2)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    trained = run("train", "m", "--method", "sisa", "--shards", "2", "--slices", "1", *TINY, "--json")
    assert trained.exit_code == 0 and json.loads(trained.stdout)["registered"]["version"] == 1, trained.output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    with RecordStore.open(workspace) as store:
        subject = store.subjects("train")[0]
    refused = run("forget", "m", "--subject", subject)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip() == (f"erasure: error: m v1 is registered (registry version 1) in another MLflow "
                                      f"registry, not in the embedded one ({workspace.mlflow_db}): set "
                                      "MLFLOW_TRACKING_URI to that registry's server")
    with RecordStore.open(workspace) as store:
        assert subject in store.subjects("train")  # nothing shredded
    assert Registry.for_workspace(workspace).versions("m") == []
