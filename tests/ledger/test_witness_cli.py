"""The ledger collects cosignatures from a witness run as `erasure witness serve` (a process of
its own, with its own keys and state): on every checkpoint, and again once a witness that was
down is back; a witness that is down costs one warning line, never the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.note import parse_cosigner_vkey, parse_note, verified_cosignatures
from ledger.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def ok(runner: CliRunner, *args: str, env: dict[str, str] | None = None):
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


class WitnessProcess:
    """A witness with its own key dir and state, served by `erasure witness serve` when started."""

    def __init__(self, root: Path, runner: CliRunner) -> None:
        self.env = {"ERASURE_HOME": str(root / "home"), "ERASURE_KEY_DIR": str(root / "keys")}
        self.state = str(root / "state")
        row = json.loads(ok(runner, "witness", "init", "--name", "witness.test/w1", "--state", self.state, "--json",
                            env=self.env).stdout)
        self.vkey = row["vkey"]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen([sys.executable, "-c", "from cli.app import main; main()", "witness", "serve",
                                         "--state", self.state, "--port", "0"], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("witness witness.test/w1 serving at http://127.0.0.1:"), line
        self.url = line.split()[4]
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def witness(tmp_path: Path, runner: CliRunner) -> Iterator[WitnessProcess]:
    w = WitnessProcess(tmp_path / "witness", runner)
    yield w
    w.stop()


def _cosigned_by(note: str, vkey: str) -> list[int]:
    return [c.timestamp for c in verified_cosignatures(note, [parse_cosigner_vkey(vkey)])]


def test_checkpoints_carry_the_witness_cosignature(workspace: Workspace, runner: CliRunner,
                                                    witness: WitnessProcess, caplog: pytest.LogCaptureFixture) -> None:
    keys = json.loads(ok(runner, "keys", "init", "--json").stdout)
    origin = keys["ledger"]["vkey"].split("+")[0]
    ok(runner, "witness", "add-log", origin, keys["ledger"]["vkey"], "--state", witness.state, env=witness.env)
    url = witness.start()
    assert ok(runner, "ledger", "witness", "add", url, witness.vkey).stdout == f"added: witness.test/w1 at {url}\n"
    assert "already configured" in ok(runner, "ledger", "witness", "add", url, witness.vkey).stdout

    ok(runner, "ledger", "append", "--type", "key_event", "--data", '{"n":1}')
    first = ok(runner, "ledger", "checkpoint").stdout
    assert len(parse_note(first).signatures) == 2 and _cosigned_by(first, witness.vkey)
    for n in range(2, 4):
        ok(runner, "ledger", "append", "--type", "key_event", "--data", f'{{"n":{n}}}')
    second = json.loads(ok(runner, "ledger", "checkpoint", "--json").stdout)
    assert second["size"] == 3 and _cosigned_by(second["note"], witness.vkey)
    listed = json.loads(ok(runner, "ledger", "witness", "list", "--json").stdout)["witnesses"]
    assert [(w["name"], w["last"]["size"], w["last"]["cosigned"]) for w in listed] == [("witness.test/w1", 3, True)]

    witness.stop()  # down: the checkpoint goes out without its cosignature, with one warning line
    ok(runner, "ledger", "append", "--type", "key_event", "--data", '{"n":4}')
    caplog.clear()
    down = runner.invoke(app, ["ledger", "checkpoint"])
    assert down.exit_code == 0, down.output
    assert len(parse_note(down.stdout).signatures) == 1 and not _cosigned_by(down.stdout, witness.vkey)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"witness witness.test/w1 ({url}) did not cosign the checkpoint of size 4: "
                              "cannot reach witness")
    assert "failed at size 4" in ok(runner, "ledger", "witness", "list").stdout

    witness.start()  # back (on another port): the next checkpoint call gets the missing cosignature
    ok(runner, "ledger", "witness", "add", witness.url, witness.vkey)
    caplog.clear()
    healed = ok(runner, "ledger", "checkpoint")
    assert _cosigned_by(healed.stdout, witness.vkey) and not caplog.records
    assert json.loads(ok(runner, "witness", "logs", "--state", witness.state, "--json",
                         env=witness.env).stdout) == [{"origin": origin, "vkeys": [keys["ledger"]["vkey"]],
                                                      "cosigned_size": 4, "refused": 0}]
    assert ok(runner, "ledger", "witness", "remove", "witness.test/w1").stdout == "removed: witness.test/w1\n"
    assert runner.invoke(app, ["ledger", "witness", "remove", "witness.test/w1"]).exit_code == 2


def test_witness_cli_errors(tmp_path: Path, runner: CliRunner, workspace: Workspace) -> None:
    state = str(tmp_path / "state")
    no_name = runner.invoke(app, ["witness", "vkey", "--state", state])
    assert no_name.exit_code == 2 and "run `erasure witness init`" in no_name.stderr
    ok(runner, "witness", "init", "--name", "witness.test/a", "--state", state)
    renamed = runner.invoke(app, ["witness", "init", "--name", "witness.test/b", "--state", state])
    assert renamed.exit_code == 2 and "cannot cosign as 'witness.test/b'" in renamed.stderr
    wrong = runner.invoke(app, ["witness", "add-log", "log.test/a", "log.test/b+00000000+AQ==", "--state", state])
    assert wrong.exit_code == 2
    bad_url = runner.invoke(app, ["ledger", "witness", "add", "ftp://x", ok(runner, "witness", "vkey", "--state",
                                                                             state).stdout.strip()])
    assert bad_url.exit_code == 2 and "is not http(s)://" in bad_url.stderr
