from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from ledger.log import Ledger
from ledger.note import Signer
from ledger.workspace import Workspace

ORIGIN = "test.erasure.local/ledger/v1"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ERASURE_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE", raising=False)
    return Workspace.from_env()


@pytest.fixture
def origin() -> str:
    return ORIGIN


@pytest.fixture
def signer() -> Signer:
    return Signer(ORIGIN, Ed25519PrivateKey.generate())


@pytest.fixture
def ledger(tmp_path: Path, signer: Signer):
    with Ledger.open(tmp_path / "ledger.db", ORIGIN, signer) as log:
        yield log


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def trusted_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> Workspace:
    """A workspace with its keys (`erasure keys init`, in ERASURE_HOME) and their trust file at
    tmp_path/trust.json, as the ledger's operator hands it to an auditor."""
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ERASURE_KEY_DIR", raising=False)
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE", raising=False)
    from cli.app import app  # here: the CLI imports everything, and most ledger tests need none of it

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["keys", "trust", "--out", str(tmp_path / "trust.json")]).exit_code == 0
    return Workspace.from_env()
