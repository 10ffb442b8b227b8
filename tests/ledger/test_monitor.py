"""`erasure monitor`: it follows a log served as tiles, verifies each new checkpoint and its
consistency from the tiles, and on a split view (two logs with the same origin and key shown to
different parties) exits 1 with both signed checkpoints as evidence — where the witness, shown
the same two logs, refuses the second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from cli.app import app
from ledger.keys import RoleTrust, Trust, WitnessPolicy, write_trust
from ledger.log import Ledger
from ledger.note import Signer, add_signatures, parse_note
from ledger.tiles.publish import publish
from ledger.tiles.serve import make_server
from ledger.witness.client import WitnessClient, WitnessConflict
from ledger.workspace import Workspace
from tests.ledger.witness_kit import new_witness, serving

REPO = Path(__file__).resolve().parents[2]


class Log:
    """A ledger published as tiles to its own directory; entries start with `tag`."""

    def __init__(self, root: Path, signer: Signer, tag: str) -> None:
        self.ledger = Ledger.open(root / f"{tag}.db", signer.name, signer)
        self.tiles = root / f"tiles-{tag}"
        self.tag = tag

    def grow(self, count: int) -> str:
        start = self.ledger.size
        self.ledger.append_many([("key_event", {"n": f"{self.tag}{start + i}"}) for i in range(count)])
        note = self.ledger.checkpoint()
        publish(self.ledger.store, self.tiles)
        return note


@pytest.fixture
def trust_file(tmp_path: Path, signer: Signer, origin: str) -> Path:
    path = tmp_path / "trust.json"
    write_trust(Trust({"ledger": RoleTrust(origin, (signer.verifier.vkey,))}), path)
    return path


def monitor(runner: CliRunner, trust: Path, state: Path, url: str, *options: str):
    return runner.invoke(app, ["monitor", "--log", url, "--trust", str(trust), "--state", str(state), "--once",
                               *options])


def test_follows_a_growing_log_over_http(workspace: Workspace, runner: CliRunner, tmp_path: Path, signer: Signer,
                                         origin: str, trust_file: Path) -> None:
    log = Log(tmp_path, signer, "a")
    log.grow(3)
    server = make_server(log.tiles, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    state = tmp_path / "monitor"
    try:
        first = monitor(runner, trust_file, state, url)
        assert first.exit_code == 0, first.output
        assert first.stdout == f"{origin}: first checkpoint, size 3 (trusted on first use)\n"
        assert monitor(runner, trust_file, state, url).stdout == f"{origin}: size 3, no new checkpoint\n"
        log.grow(300)  # past a full tile: the proof needs hashes of full and partial tiles
        grew = monitor(runner, trust_file, state, url, "--entries", "--json")
        assert grew.exit_code == 0, grew.output
        assert json.loads(grew.stdout) | {"root": None} == {
            "kind": "grew", "origin": origin, "size": 303, "previous_size": 3, "entries_verified": 300,
            "cosigned_by": [], "root": None}
    finally:
        server.shutdown()
        server.server_close()
    down = monitor(runner, trust_file, state, url)
    assert down.exit_code == 2 and down.stderr.startswith(f"erasure: error: cannot fetch {url}checkpoint")


def test_a_split_view_is_caught_by_the_witness_and_by_the_monitor(
        workspace: Workspace, runner: CliRunner, tmp_path: Path, signer: Signer, origin: str) -> None:
    """Log A is shown to auditor 1 (and to the witness), log B — same origin, same key, other
    entries — to auditor 2; the monitor, following what auditor 2 is shown, holds A's checkpoint."""
    a, b = Log(tmp_path, signer, "a"), Log(tmp_path, signer, "b")
    a_note, b_note = a.grow(4), b.grow(4)
    witness = new_witness(tmp_path / "witness", {origin: signer.verifier.vkey})
    with serving(witness) as served:
        client = WitnessClient(served.url, witness.signer.verifier)
        cosigned_a = add_signatures(a_note, [client.add_checkpoint(0, [], a_note)])
        with pytest.raises(WitnessConflict, match="409 Conflict, it last cosigned size 4"):
            client.add_checkpoint(4, [], b_note)  # same size, other root
        assert "another root" in witness.state.refusals(origin)[0].reason
    witness.state.close()
    trust = tmp_path / "trust.json"
    write_trust(Trust({"ledger": RoleTrust(origin, (signer.verifier.vkey,))},
                      WitnessPolicy((served.vkey,), 1)), trust)
    (a.tiles / "checkpoint").write_text(cosigned_a)  # as the log would publish it
    state = tmp_path / "monitor"
    seen = monitor(runner, trust, state, str(a.tiles))
    assert seen.stdout == f"{origin}: first checkpoint, size 4 (trusted on first use), cosigned by witness.example/w1\n"

    forked = monitor(runner, trust, state, str(b.tiles))
    assert forked.exit_code == 1
    evidence = forked.stdout
    assert evidence.startswith(f"fork of {origin}: two signed checkpoints of size 4 with different roots\n"
                               "--- signed checkpoint verified before ---\n")
    assert cosigned_a in evidence and b_note in evidence
    [kept] = state.glob("*.fork-*.txt")
    assert kept.read_text() == evidence
    assert forked.stderr == (f"erasure: error: the log {origin} forked: two signed checkpoints of size 4 with "
                             f"different roots (evidence in {kept})\n")

    b.grow(2)  # later and larger: no consistency proof joins it to A's checkpoint
    later = monitor(runner, trust, state, str(b.tiles), "--json")
    assert later.exit_code == 1
    doc = json.loads(later.stdout)
    assert doc["kind"] == "fork" and doc["before"] == cosigned_a and parse_note(doc["served"]).text.startswith(
        f"{origin}\n6\n")
    assert doc["reason"].startswith("the checkpoint of size 6 is not consistent with the one of size 4 verified "
                                    "before: ")
    a.grow(2)
    assert monitor(runner, trust, state, str(a.tiles)).stdout.startswith(f"{origin}: size 6 (was 4): consistent")


def test_older_forged_and_tampered(workspace: Workspace, runner: CliRunner, tmp_path: Path, signer: Signer,
                                   origin: str, trust_file: Path) -> None:
    log = Log(tmp_path, signer, "a")
    log.grow(2)
    stale = shutil.copytree(log.tiles, tmp_path / "stale")
    log.grow(2)
    state = tmp_path / "monitor"
    assert monitor(runner, trust_file, state, str(log.tiles)).exit_code == 0
    older = monitor(runner, trust_file, state, str(stale))
    assert older.exit_code == 0 and "older than the size 4 verified before" in older.stdout
    assert "size 4 (was 4)" not in monitor(runner, trust_file, state, str(log.tiles)).stdout

    impostor = Log(tmp_path / "impostor", Signer(origin, Ed25519PrivateKey.generate()), "x")
    impostor.tiles.parent.mkdir(exist_ok=True)
    impostor.grow(5)
    forged = monitor(runner, trust_file, state, str(impostor.tiles))
    assert forged.exit_code == 1 and "not signed by a trusted key" in forged.stderr
    log.grow(1)
    tile = next((log.tiles / "tile" / "0").glob("000.p/*"))
    tile.write_bytes(bytes(32) + tile.read_bytes()[32:])
    tampered = monitor(runner, trust_file, state, str(log.tiles))
    assert tampered.exit_code == 1 and "do not hash to its signed root" in tampered.stderr
    assert not list(state.glob("*.fork-*"))  # neither is a fork: no two signed checkpoints disagree


def test_the_loop_follows_until_a_fork(tmp_path: Path, signer: Signer, origin: str, trust_file: Path) -> None:
    a, b = Log(tmp_path, signer, "a"), Log(tmp_path, signer, "b")
    a.grow(1)
    b.grow(3)
    served = tmp_path / "served"

    def serve(tiles: Path) -> None:  # swap what the one URL serves, atomically: the monitor polls meanwhile
        snapshot = shutil.copytree(tiles, tmp_path / f"snapshot-{len(list(tmp_path.glob('snapshot-*')))}")
        (tmp_path / "next").symlink_to(snapshot, target_is_directory=True)
        os.replace(tmp_path / "next", served)

    serve(a.tiles)
    process = subprocess.Popen([sys.executable, "-c", "from cli.app import main; main()", "monitor", "--log",
                                str(served), "--trust", str(trust_file), "--state", str(tmp_path / "m"), "--interval",
                                "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "ERASURE_HOME": str(tmp_path / "home")})
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"{origin}: first checkpoint, size 1 (trusted on first use)\n"
        a.grow(2)
        serve(a.tiles)
        assert process.stdout.readline() == f"{origin}: size 3 (was 1): consistent\n"
        serve(b.tiles)  # the same URL now serves another history
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 1
    assert out.startswith(f"fork of {origin}: two signed checkpoints of size 3 with different roots\n")
    assert err.endswith("(evidence in " + str(next((tmp_path / "m").glob("*.fork-*.txt"))) + ")\n")
