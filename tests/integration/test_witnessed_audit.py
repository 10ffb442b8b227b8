"""The auditor's flow with a trust file that requires a witness, on the base install: a
certificate whose checkpoints the witness cosigned verifies; one signed while the witness was
away is refused alone, and verifies against the served log once the witness cosigned a later
checkpoint; a trust file naming a witness that never cosigned refuses both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.keys import role_vkey
from ledger.workspace import Workspace
from tests.conftest import make_records, with_fixed_partition_key
from tests.integration.test_auditor_install import _BASE_INSTALL, REPO, TINY
from tests.ledger.witness_kit import new_witness, serving
from unlearning.data.records import RecordStore
from unlearning.operations.build import train_model
from unlearning.operations.certify import certify
from unlearning.training.config import TrainConfig

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def verify(bundle: Path, trust: Path, home: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`erasure verify BUNDLE --trust TRUST --json` on a base install with ERASURE_HOME=home."""
    env = {k: v for k, v in os.environ.items() if k not in ("ERASURE_KEY_DIR", "MLFLOW_TRACKING_URI")}
    return subprocess.run([sys.executable, "-c", _BASE_INSTALL, "verify", str(bundle), "--trust", str(trust), "--json",
                           *options], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**env, "ERASURE_HOME": str(home)})


def _checks(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {c["check"]: c["detail"] for c in json.loads(result.stdout)["checks"]}


def test_verify_with_a_required_witness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ERASURE_KEY_DIR", raising=False)
    ws = with_fixed_partition_key(Workspace.from_env())
    with RecordStore.open(ws) as store:
        store.ingest(make_records(subjects=8, per_subject=3))
    ok("keys", "init")
    witness = new_witness(tmp_path / "witness", {"erasure.local/ledger/v1": role_vkey(ws, "ledger")})
    stranger = new_witness(tmp_path / "stranger", {}, "witness.example/w2")  # never asked to cosign
    trust, strict = tmp_path / "trust.json", tmp_path / "strict.json"
    with serving(witness) as served:
        ok("ledger", "witness", "add", served.url, served.vkey)
        ok("keys", "trust", "--witness", served.vkey, "--out", str(trust))
        ok("keys", "trust", "--witness", served.vkey, "--witness", stranger.signer.verifier.vkey, "--out", str(strict))
        version = train_model(ws, "recs", TrainConfig(method="retrain", **TINY))
        first = certify(ws, version, [])
        cosigned = shutil.copytree(first, tmp_path / "cosigned")

        result = verify(cosigned, trust, ws.home)  # where the ledger is
        assert result.returncode == 0, result.stdout + result.stderr
        assert _checks(result)["witnesses"] == ("the certified checkpoint and the tlog-proof's checkpoint cosigned by "
                                                "1 of 1 trusted witnesses (witness.example/w1)")
        refused = verify(cosigned, strict, ws.home)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        assert refused.stderr.startswith("erasure: error: witnesses: the certified checkpoint carries 1 valid "
                                         "witness cosignatures (witness.example/w1); the trust file requires 2 of 2")

        ok("ledger", "witness", "remove", "witness.example/w1")  # the witness is away: certified again
        shutil.rmtree(first)
        bare = certify(ws, version, [])  # its certificate_issued entry is in a checkpoint nobody cosigned
        elsewhere = tmp_path / "auditor"  # no ledger.db: the bundle, the trust file, the log's URL
        alone = verify(bare, trust, elsewhere)
        assert alone.returncode == 1
        assert alone.stderr == ("erasure: error: witnesses: the tlog-proof's checkpoint carries 0 valid witness "
                                "cosignatures (none); the trust file requires 1 of 1, and there is no newer witnessed "
                                "checkpoint to anchor it to (give --log URL, or verify where the ledger is)\n")

        ok("ledger", "witness", "add", served.url, served.vkey)  # back: the next checkpoint is cosigned
        ok("ledger", "checkpoint")
        tiles = tmp_path / "tiles"
        ok("ledger", "publish", "--to", str(tiles))
        anchored = verify(bare, trust, elsewhere, "--log", str(tiles), "--state", str(elsewhere / "state"))
        assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        assert _checks(anchored)["witnesses"].startswith(
            "the tlog-proof's checkpoint not cosigned as required but prefixes of the "
            f"checkpoint served at {tiles}/ (size ")
    witness.state.close()
    stranger.state.close()
