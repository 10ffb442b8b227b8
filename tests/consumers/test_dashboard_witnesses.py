"""The dashboard's ledger section names each witness configured for the log, whether the latest
checkpoint carries its cosignature (verified here with its key), when it cosigned, and how the
last request to it went (a witness down shows its error)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app
from consumers.intake.dashboard import render_overview
from ledger.keys import load_signer
from ledger.log import open_ledger
from ledger.workspace import Workspace
from ledger.witness.collect import add_witness
from tests.ledger.witness_kit import NOW, new_witness, serving


def test_the_ledger_section_shows_each_witnesss_cosignature(workspace: Workspace, tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["keys", "init"]).exit_code == 0
    with open_ledger(workspace, sign=True) as ledger:
        ledger.append("key_event", {"n": 1})
        ledger.checkpoint()
    assert "No witness configured" in render_overview(workspace)

    log_key = load_signer(workspace, "ledger")
    up = new_witness(tmp_path / "w1", {log_key.name: log_key.verifier.vkey}, "witness.example/w1")
    down = new_witness(tmp_path / "w2", {log_key.name: log_key.verifier.vkey}, "witness.example/w2")
    with serving(up) as served:
        add_witness(workspace, served.url, served.vkey)
        add_witness(workspace, "http://127.0.0.1:9/", down.signer.verifier.vkey)  # nothing listens there
        with open_ledger(workspace, sign=True) as ledger:
            ledger.append("key_event", {"n": 2})
            ledger.checkpoint()
    page = render_overview(workspace)
    section = page.split("<h3>Witnesses</h3>", 1)[1]
    rows = section.split("<tr>")[2:]
    assert "witness.example/w1" in rows[0] and "cosigned (verified)" in rows[0]
    assert datetime.fromtimestamp(NOW, UTC).isoformat() in rows[0] and "cosigned size 2" in rows[0]
    assert "witness.example/w2" in rows[1] and "no cosignature" in rows[1] and "failed" in rows[1]
