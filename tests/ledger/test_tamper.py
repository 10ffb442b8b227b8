"""`erasure ledger verify` against a tampered SQLite file: exit 1 naming what is wrong."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger import merkle
from ledger.keys import init_keys
from ledger.log import open_ledger
from ledger.workspace import Workspace

N = 12


@pytest.fixture
def audited(workspace: Workspace, runner: CliRunner) -> Path:
    """A signed log of N entries, verified once so the auditor state holds its checkpoint."""
    init_keys(workspace.key_dir)
    with open_ledger(workspace, sign=True) as ledger:
        ledger.append_many([("request_received", {"request_id": f"r-{i}"}, f"r-{i}") for i in range(N - 2)])
        ledger.checkpoint()
        ledger.append_many([("plan", {"i": i}) for i in range(2)])
        ledger.checkpoint()
    result = runner.invoke(app, ["ledger", "verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint_size"] == N
    return workspace.ledger_db


def tamper(db_path: Path, *statements: tuple[str, tuple]) -> None:
    db = sqlite3.connect(db_path)
    with db:
        for sql, args in statements:
            db.execute(sql, args)
    db.close()


def verify(runner: CliRunner, *args: str):
    return runner.invoke(app, ["ledger", "verify", *args])


def entry(db_path: Path, index: int) -> bytes:
    db = sqlite3.connect(db_path)
    (data,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
    db.close()
    return data


def test_untouched_log_verifies_again(audited: Path, runner: CliRunner) -> None:
    result = verify(runner)
    assert result.exit_code == 0
    assert f"{N} entries" in result.stdout and f"checkpoint of size {N} verified before" in result.stdout


def test_changed_entry(audited: Path, runner: CliRunner) -> None:
    changed = entry(audited, 5).replace(b"r-5", b"r-X")
    tamper(audited, ("UPDATE entries SET data = ? WHERE idx = 5", (changed,)))
    result = verify(runner)
    assert result.exit_code == 1
    assert "entry 5: its bytes do not match the stored leaf hash" in result.stderr


def test_removed_entry(audited: Path, runner: CliRunner) -> None:
    tamper(audited, ("DELETE FROM entries WHERE idx = 3", ()))
    result = verify(runner)
    assert result.exit_code == 1 and "entry 3 is missing" in result.stderr


def test_swapped_entries(audited: Path, runner: CliRunner) -> None:
    a, b = entry(audited, 2), entry(audited, 7)
    tamper(
        audited,
        ("UPDATE entries SET data = ? WHERE idx = 2", (b,)),
        ("UPDATE entries SET data = ? WHERE idx = 7", (a,)),
    )
    result = verify(runner)
    assert result.exit_code == 1 and "entry 2:" in result.stderr


def test_rewritten_tree_breaks_the_signed_root(audited: Path, runner: CliRunner) -> None:
    """Entries and their stored hashes rewritten together: the checkpoint no longer matches."""
    changed = entry(audited, 9).replace(b"r-9", b"r-Y")
    db = sqlite3.connect(audited)
    rows = db.execute("SELECT idx, data FROM entries ORDER BY idx")
    leaves = [merkle.leaf_hash(changed if i == 9 else d) for i, d in rows]
    db.close()
    tree = merkle.MemoryTree(leaves)
    updates = [("UPDATE entries SET data = ? WHERE idx = 9", (changed,))]
    for level, index in [(0, 9), (1, 4), (2, 2)]:
        new_hash = tree.read([(level, index)])[0]
        updates.append(("UPDATE hashes SET hash = ? WHERE pos = ?", (new_hash, merkle.stored_index(level, index))))
    tamper(audited, *updates)
    result = verify(runner)
    assert result.exit_code == 1
    assert "checkpoint of size 10: its root does not match the entries 0..9" in result.stderr


def test_rollback_detected_by_the_auditor_state(audited: Path, runner: CliRunner) -> None:
    tamper(
        audited,
        ("DELETE FROM entries WHERE idx >= ?", (N - 2,)),
        ("DELETE FROM hashes WHERE pos >= ?", (merkle.stored_count(N - 2),)),
        ("DELETE FROM checkpoints WHERE size = ?", (N,)),
    )
    # Internally consistent: an auditor without history accepts it ...
    assert verify(runner, "--state", str(audited.parent / "fresh-auditor")).exit_code == 0
    # ... the auditor who saw size N does not.
    result = verify(runner)
    assert result.exit_code == 1
    assert f"log rolled back: its newest checkpoint has size {N - 2}, but a checkpoint of size {N}" in result.stderr


def test_removed_tail_under_a_signed_checkpoint(audited: Path, runner: CliRunner) -> None:
    tamper(audited, ("DELETE FROM entries WHERE idx >= ?", (N - 1,)))
    result = verify(runner)
    assert result.exit_code == 1 and f"entry {N - 1} is missing" in result.stderr


def test_bad_checkpoint_signature(audited: Path, runner: CliRunner) -> None:
    db = sqlite3.connect(audited)
    (note,) = db.execute("SELECT note FROM checkpoints WHERE size = ?", (N,)).fetchone()
    db.close()
    text, signature = note.split("\n\n")
    forged = text.replace(f"\n{N}\n", f"\n{N + 1}\n") + "\n\n" + signature
    tamper(audited, ("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, N)))
    result = verify(runner)
    assert result.exit_code == 1
    assert f"checkpoint of size {N}: invalid signature" in result.stderr


def test_checkpoint_signed_by_another_key(audited: Path, runner: CliRunner, workspace: Workspace, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    assert runner.invoke(app, ["keys", "trust", "--out", str(trust)]).exit_code == 0
    for name in ("ledger.key.pem", "ledger.pub.pem"):
        (workspace.key_dir / name).unlink()
    init_keys(workspace.key_dir)  # a new ledger key the auditor does not trust
    with open_ledger(workspace, sign=True) as ledger:
        ledger.append("plan", {"i": 99})
        ledger.checkpoint()
    result = verify(runner, "--trust", str(trust))
    assert result.exit_code == 1
    assert f"checkpoint of size {N + 1}: note is not signed by a trusted key" in result.stderr


def test_non_canonical_entry(audited: Path, runner: CliRunner) -> None:
    spaced = json.dumps(json.loads(entry(audited, 0)), indent=1).encode()
    tamper(
        audited,
        ("UPDATE entries SET data = ? WHERE idx = 0", (spaced,)),
        ("UPDATE hashes SET hash = ? WHERE pos = 0", (merkle.leaf_hash(spaced),)),
    )
    result = verify(runner)
    assert result.exit_code == 1 and "entry 0: not canonical JSON" in result.stderr
