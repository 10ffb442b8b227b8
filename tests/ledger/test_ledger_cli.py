"""`erasure keys` and `erasure ledger` in-process: output formats and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.keys import private_key_path
from ledger.workspace import Workspace

VECTORS = Path(__file__).parents[1] / "data" / "rfc6962-inclusion"


def ok(runner: CliRunner, *args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def keyed(workspace: Workspace, runner: CliRunner) -> Workspace:
    ok(runner, "keys", "init")
    return workspace


def test_keys_init_vkey_trust(workspace: Workspace, runner: CliRunner, tmp_path: Path) -> None:
    rows = json.loads(ok(runner, "keys", "init", "--json").stdout)
    assert rows["ledger"]["created"] and rows["certifier"]["created"]
    assert stat.S_IMODE(private_key_path(workspace.key_dir, "ledger").stat().st_mode) == 0o600
    assert "kept existing" in ok(runner, "keys", "init").stdout
    vkey = ok(runner, "keys", "vkey").stdout.strip()
    assert vkey == rows["ledger"]["vkey"] and vkey.startswith("erasure.local/ledger/v1+")
    assert ok(runner, "keys", "vkey", "--role", "certifier").stdout.strip() == rows["certifier"]["vkey"]
    trust = json.loads(ok(runner, "keys", "trust").stdout)
    assert trust["roles"]["certifier"]["vkeys"] == [rows["certifier"]["vkey"]]
    ok(runner, "keys", "trust", "--out", str(tmp_path / "trust.json"))
    assert json.loads((tmp_path / "trust.json").read_text()) == trust
    bad = runner.invoke(app, ["keys", "vkey", "--role", "auditor"])
    assert bad.exit_code == 2 and "unknown key role" in bad.stderr


def test_private_key_never_printed(workspace: Workspace, runner: CliRunner) -> None:
    outputs = [ok(runner, "keys", "init", "--json").output, ok(runner, "keys", "trust").output]
    key_body = private_key_path(workspace.key_dir, "ledger").read_text().splitlines()[1]
    assert all("PRIVATE" not in out and key_body not in out for out in outputs)


def test_append_show_checkpoint(keyed: Workspace, runner: CliRunner) -> None:
    assert ok(runner, "ledger", "append", "--type", "key_event", "--data", '{"role":"ledger"}').stdout.strip() == "0"
    first = json.loads(ok(runner, "ledger", "append", "--type", "request_received", "--data", '{"id":"r"}', "--key", "r", "--json").stdout)
    again = json.loads(ok(runner, "ledger", "append", "--type", "request_received", "--data", '{"id":"r"}', "--key", "r", "--json").stdout)
    assert first == again == {"index": 1}
    lines = ok(runner, "ledger", "show").stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith('1\t{"at":')
    shown = json.loads(ok(runner, "ledger", "show", "--from", "1", "--limit", "5", "--json").stdout)
    assert [row["index"] for row in shown] == [1] and shown[0]["entry"]["type"] == "request_received"
    note = ok(runner, "ledger", "checkpoint").stdout
    assert note.startswith("erasure.local/ledger/v1\n2\n")
    as_json = json.loads(ok(runner, "ledger", "checkpoint", "--json").stdout)
    assert as_json["size"] == 2 and as_json["note"] == note


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--type", "x", "--data", "{"], "not valid JSON"),
        (["--type", "x", "--data", '{"f": 0.5}'], "floats"),
        (["--type", "x", "--data", "[1]"], "JSON object"),
        (["--type", "X Y"], "entry type"),
    ],
)
def test_append_bad_input(keyed: Workspace, runner: CliRunner, args: list[str], reason: str) -> None:
    result = runner.invoke(app, ["ledger", "append", *args])
    assert result.exit_code == 2 and reason in result.stderr and result.stderr.startswith("erasure: error:")


def test_commands_without_keys_or_log(workspace: Workspace, runner: CliRunner) -> None:
    for args, reason in [
        (["ledger", "checkpoint"], "erasure keys init"),
        (["ledger", "show"], "no ledger"),
        (["ledger", "prove", "0"], "no ledger"),
        (["ledger", "verify"], "erasure keys init"),
        (["keys", "vkey"], "erasure keys init"),
    ]:
        result = runner.invoke(app, args)
        assert (result.exit_code, reason in result.stderr) == (2, True), (args, result.output)


def test_prove_consistency_and_check_proof(keyed: Workspace, runner: CliRunner, tmp_path: Path) -> None:
    for i in range(11):
        ok(runner, "ledger", "append", "--type", "e", "--data", json.dumps({"i": i}))
    inclusion = json.loads(ok(runner, "ledger", "prove", "6", "--size", "9").stdout)
    assert set(inclusion) == {"leafIdx", "treeSize", "root", "leafHash", "proof"}
    assert (inclusion["leafIdx"], inclusion["treeSize"], len(inclusion["proof"])) == (6, 9, 4)
    consistency = json.loads(ok(runner, "ledger", "consistency", "3", "11").stdout)
    assert set(consistency) == {"size1", "size2", "root1", "root2", "proof"}
    assert consistency["root2"] == json.loads(ok(runner, "ledger", "prove", "0").stdout)["root"]

    files = {"inc.json": inclusion, "cons.json": consistency}
    bad = dict(inclusion, leafIdx=5)
    files["bad.json"] = bad
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
    good = [str(tmp_path / "inc.json"), str(tmp_path / "cons.json"), str(VECTORS / "1_happy-path.json")]
    assert ok(runner, "ledger", "check-proof", *good).stdout.count(": ok: valid") == 3

    result = runner.invoke(app, ["ledger", "check-proof", "--json", *good, str(tmp_path / "bad.json")])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [row["valid"] for row in rows] == [True, True, True, False]
    assert rows[3] == {"file": str(tmp_path / "bad.json"), "valid": False, "reason": "inclusion proof does not lead to the root"}

    (tmp_path / "junk.json").write_text("{not json")
    result = runner.invoke(app, ["ledger", "check-proof", str(tmp_path / "bad.json"), str(tmp_path / "junk.json")])
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    assert runner.invoke(app, ["ledger", "check-proof", str(tmp_path / "missing.json")]).exit_code == 2
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert runner.invoke(app, ["ledger", "check-proof", str(tmp_path / "other.json")]).exit_code == 2

    assert runner.invoke(app, ["ledger", "prove", "11"]).exit_code == 2
    assert runner.invoke(app, ["ledger", "consistency", "5", "3"]).exit_code == 2


def test_check_proof_runs_every_vector(runner: CliRunner) -> None:
    files = sorted(VECTORS.glob("*.json"))
    result = runner.invoke(app, ["ledger", "check-proof", "--json", *map(str, files)])
    assert result.exit_code == 1
    valid = {Path(row["file"]).name: row["valid"] for row in json.loads(result.stdout)}
    assert valid == {f.name: not json.loads(f.read_text())["wantErr"] for f in files}


def test_verify_and_verify_checkpoint(keyed: Workspace, runner: CliRunner, tmp_path: Path) -> None:
    ok(runner, "ledger", "append", "--type", "e")
    empty_log = runner.invoke(app, ["ledger", "verify"])
    assert empty_log.exit_code == 1 and "no signed checkpoint" in empty_log.stderr
    note = tmp_path / "checkpoint"
    note.write_text(ok(runner, "ledger", "checkpoint").stdout)
    ok(runner, "keys", "trust", "--out", str(tmp_path / "trust.json"))
    state = tmp_path / "auditor"
    report = json.loads(ok(runner, "ledger", "verify", "--trust", str(tmp_path / "trust.json"), "--state", str(state), "--json").stdout)
    assert report == {"origin": "erasure.local/ledger/v1", "entries": 1, "checkpoint_size": 1, "checkpoints": 1,
                      "previous_size": None, "unsigned_entries": 0}
    assert len(list(state.glob("*.checkpoint"))) == 1
    ok(runner, "ledger", "append", "--type", "e")
    text = ok(runner, "ledger", "verify", "--trust", str(tmp_path / "trust.json"), "--state", str(state)).stdout
    assert "1 entries are not covered by a checkpoint yet" in text

    vkey = ok(runner, "keys", "vkey").stdout.strip()
    shown = json.loads(ok(runner, "ledger", "verify-checkpoint", str(note), "--vkey", vkey, "--json").stdout)
    assert shown["size"] == 1 and shown["origin"] == "erasure.local/ledger/v1"
    ok(runner, "ledger", "verify-checkpoint", str(note), "--vkey", vkey, "--origin", "erasure.local/ledger/v1")
    certifier = ok(runner, "keys", "vkey", "--role", "certifier").stdout.strip()
    for args, code, reason in [
        (["--vkey", certifier], 1, "not signed by a trusted key"),
        (["--vkey", vkey, "--origin", "other.example/log"], 1, "origin"),
        (["--vkey", "garbage"], 2, "verifier key"),
    ]:
        result = runner.invoke(app, ["ledger", "verify-checkpoint", str(note), *args])
        assert (result.exit_code, reason in result.stderr) == (code, True), result.output
    note.write_text(note.read_text().replace("\n\n", "\n"))
    result = runner.invoke(app, ["ledger", "verify-checkpoint", str(note), "--vkey", vkey])
    assert result.exit_code == 1 and "no blank line" in result.stderr
    missing = runner.invoke(app, ["ledger", "verify-checkpoint", str(tmp_path / "nope"), "--vkey", vkey])
    assert missing.exit_code == 2


def test_verify_copied_database_with_trust_only(keyed: Workspace, runner: CliRunner, tmp_path: Path) -> None:
    """An auditor with a copy of the database and the trust file, without any key."""
    ok(runner, "ledger", "append", "--type", "e")
    ok(runner, "ledger", "checkpoint")
    ok(runner, "keys", "trust", "--out", str(tmp_path / "trust.json"))
    shutil.copy(keyed.ledger_db, tmp_path / "copy.db")
    shutil.rmtree(keyed.key_dir)
    result = ok(runner, "ledger", "verify", "--db", str(tmp_path / "copy.db"), "--trust", str(tmp_path / "trust.json"),
                "--state", str(tmp_path / "state"))
    assert result.stdout.startswith("ok: 1 entries")
