"""OpenSSF model signing interop end to end: a version certified on the tiny model and registered in
the real MLflow server is pulled, and `model_signing` (the consumers' own tool, its Python API and
its CLI) verifies the pulled bundle with the key `erasure keys model-signing` prints, and refuses
it once one adapter byte changes; our own verify keeps passing on the untouched bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import model_signing
import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.workspace import Workspace

pytestmark = pytest.mark.services
runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3"]


def run(*args: str):
    return runner.invoke(app, list(args))


def _library(bundle: Path, public_key: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(bundle, bundle / "model.sig")


def _cli(bundle: Path, public_key: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(bundle),
                           "--signature", str(bundle / "model.sig"), "--public_key", str(public_key)],
                          capture_output=True, text=True, timeout=120)


def test_model_signing_verifies_a_pulled_certified_bundle(workspace: Workspace, records, write_jsonl, mlflow_uri: str,
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert run("data", "ingest", str(write_jsonl(records(subjects=8, per_subject=3)))).exit_code == 0
    keys = run("keys", "init", "--json")
    assert keys.exit_code == 0 and json.loads(keys.stdout)["model-signing"]["created"]
    name = f"sig-{uuid.uuid4().hex[:8]}"
    trained = run("train", name, "--method", "sisa", "--shards", "2", "--slices", "1", *TINY, "--json")
    assert trained.exit_code == 0, trained.output
    public_key = tmp_path / "model-signing.pub.pem"
    assert run("keys", "model-signing", "--out", str(public_key)).exit_code == 0
    assert public_key.read_text() == run("keys", "model-signing").stdout

    dest = tmp_path / "pulled"
    pulled = run("pull", f"models:/{name}@certified", "--dest", str(dest), "--json")
    assert pulled.exit_code == 0, pulled.output
    signature_check = next(c for c in json.loads(pulled.stdout)["checks"] if c["check"] == "model signature")
    assert signature_check["ok"] and "covers the" in signature_check["detail"]
    assert (dest / "model.sig").is_file() and (dest / "attestation" / "certificate.dsse.json").is_file()

    _library(dest, public_key)
    cli = _cli(dest, public_key)
    assert cli.returncode == 0 and "Verification succeeded" in cli.stdout, cli.stderr

    changed = shutil.copytree(dest, tmp_path / "changed")
    adapter = changed / "components" / "shard0-slice0" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Signature mismatch") as refused:
        _library(changed, public_key)
    assert "shard0-slice0/adapter_model.safetensors" in str(refused.value)
    cli = _cli(changed, public_key)
    assert cli.returncode == 1 and "Verification failed" in cli.stderr

    ours = run("verify", str(dest), "--json")  # the untouched bundle: our certificate still verifies
    assert ours.exit_code == 0, ours.output
    assert {"signature", "subjects", "model signature", "ledger consistency"} <= {
        c["check"] for c in json.loads(ours.stdout)["checks"]}
    theirs = run("verify", str(changed), "--json")
    assert theirs.exit_code == 1 and "adapter_model.safetensors" in theirs.stderr
