"""The real MLflow server: artifacts, registered versions, aliases, downloads over HTTP."""

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.services


def test_register_alias_and_download_over_http(mlflow_uri: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    experiment = client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    # served artifacts: the client talks HTTP to the server, never to its disk
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "adapter.bin").write_bytes(b"\x00\x01weights")
    client.log_artifacts(run.info.run_id, str(bundle), artifact_path="bundle")
    client.set_terminated(run.info.run_id)

    name = f"model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "certified", version.version)
    assert client.get_model_version_by_alias(name, "certified").version == version.version

    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    out = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@certified", dst_path=str(tmp_path / "dl"))
    assert (Path(out) / "adapter.bin").read_bytes() == b"\x00\x01weights"
