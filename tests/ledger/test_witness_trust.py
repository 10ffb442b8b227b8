"""Trust files that require witness cosignatures (k of n): the file, `erasure ledger verify` on
the database and on the served tiles, and the certificate rule (cosigned, or a prefix of a
witnessed checkpoint)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import TRUST_SCHEMA_WITNESSED, WitnessPolicy, build_trust, read_trust, role_vkey, write_trust
from ledger.log import Ledger, open_ledger
from ledger.note import parse_note
from ledger.witness.policy import check_witnessed, ledger_anchor
from ledger.workspace import Workspace
from tests.ledger.witness_kit import Served, new_witness, serving

ORIGIN = "erasure.local/ledger/v1"


def ok(runner: CliRunner, *args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def served(workspace: Workspace, runner: CliRunner, tmp_path: Path) -> Iterator[Served]:
    """Keys for the workspace, and a witness of its ledger, configured for it."""
    ok(runner, "keys", "init")
    witness = new_witness(tmp_path / "witness", {ORIGIN: role_vkey(workspace, "ledger")})
    with serving(witness) as running:
        ok(runner, "ledger", "witness", "add", running.url, running.vkey)
        yield running
    witness.state.close()


def _append(runner: CliRunner, n: int) -> None:
    ok(runner, "ledger", "append", "--type", "key_event", "--data", json.dumps({"n": n}))


def test_trust_file_with_a_witness_policy(workspace: Workspace, runner: CliRunner, served: Served,
                                          tmp_path: Path) -> None:
    other = new_witness(tmp_path / "other", {}, "witness.example/w2")
    path = tmp_path / "trust.json"
    ok(runner, "keys", "trust", "--witness", served.vkey, "--witness", other.signer.verifier.vkey,
       "--witness-threshold", "1", "--out", str(path))
    doc = json.loads(path.read_text())
    assert doc["schema"] == TRUST_SCHEMA_WITNESSED
    assert doc["witnesses"] == {"threshold": 1, "vkeys": [served.vkey, other.signer.verifier.vkey]}
    assert read_trust(path).witnesses == WitnessPolicy((served.vkey, other.signer.verifier.vkey), 1)
    assert json.loads(ok(runner, "keys", "trust", "--witness", served.vkey).stdout)["witnesses"]["threshold"] == 1
    for args, reason in [(["--witness-threshold", "1"], "needs --witness"),
                         (["--witness", served.vkey, "--witness-threshold", "2"], "outside 1..1"),
                         (["--witness", served.vkey, "--witness", served.vkey], "listed twice"),
                         (["--witness", role_vkey(workspace, "ledger")], "not an Ed25519 cosigner key")]:
        bad = runner.invoke(app, ["keys", "trust", *args])
        assert bad.exit_code == 2 and reason in bad.stderr, bad.output
    # a v1 reader would ignore a policy, so one comes only with v2; v2 needs one
    for schema, witnesses in [("erasure.trust/v1", doc["witnesses"]), (TRUST_SCHEMA_WITNESSED, None),
                              (TRUST_SCHEMA_WITNESSED, {"vkeys": [served.vkey], "threshold": True})]:
        path.write_text(json.dumps({**doc, "schema": schema, "witnesses": witnesses}))
        with pytest.raises(BadInput):
            read_trust(path)


def test_ledger_verify_requires_the_cosignature(workspace: Workspace, runner: CliRunner, served: Served,
                                                tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    write_trust(build_trust(workspace, WitnessPolicy((served.vkey,), 1)), trust)
    verify = ["ledger", "verify", "--trust", str(trust), "--state", str(tmp_path / "auditor")]
    ok(runner, "ledger", "witness", "remove", "witness.example/w1")  # a checkpoint without the witness
    _append(runner, 1)
    ok(runner, "ledger", "checkpoint")
    refused = runner.invoke(app, verify)
    assert refused.exit_code == 1
    assert refused.stderr == ("erasure: error: the newest checkpoint (size 1) carries 0 valid witness cosignatures "
                              "(none); the trust file requires 1 of 1\n")
    ok(runner, "ledger", "witness", "add", served.url, served.vkey)
    ok(runner, "ledger", "checkpoint")  # the same size again: now cosigned
    accepted = ok(runner, *verify)
    assert accepted.stdout.splitlines()[:2] == [f"ok: 1 entries, checkpoint size 1 ({ORIGIN})",
                                                "cosigned by the witnesses witness.example/w1"]
    # the same on the tiles: the served checkpoint must carry the cosignature
    tiles = tmp_path / "tiles"
    ok(runner, "ledger", "publish", "--to", str(tiles))
    served_ok = json.loads(ok(runner, *verify, "--log", str(tiles), "--json").stdout)
    assert served_ok["cosigned_by"] == ["witness.example/w1"] and served_ok["checkpoint_size"] == 1
    text, signatures = (tiles / "checkpoint").read_text().split("\n\n")
    assert len(parse_note(text + "\n\n" + signatures).signatures) == 2
    (tiles / "checkpoint").write_text(text + "\n\n" + signatures.splitlines(keepends=True)[0])  # the log's alone
    stripped = runner.invoke(app, [*verify, "--log", str(tiles)])
    assert stripped.exit_code == 1 and "carries 0 valid witness cosignatures" in stripped.stderr


def test_a_checkpoint_without_cosignatures_counts_as_a_prefix_of_a_witnessed_one(
        workspace: Workspace, runner: CliRunner, served: Served, tmp_path: Path) -> None:
    trust = build_trust(workspace, WitnessPolicy((served.vkey,), 1))
    ok(runner, "ledger", "witness", "remove", "witness.example/w1")
    _append(runner, 1)
    bare = ok(runner, "ledger", "checkpoint").stdout  # signed while the witness was away
    with pytest.raises(VerificationFailed, match=r"^the certified checkpoint carries 0 valid witness cosignatures "
                       r".*, and there is no newer witnessed checkpoint to anchor it to \(give --log URL"):
        check_witnessed(trust, {"the certified checkpoint": bare})
    with open_ledger(workspace, create=False) as log:
        with pytest.raises(VerificationFailed, match="and no anchor: the ledger's newest checkpoint carries 0"):
            check_witnessed(trust, {"the certified checkpoint": bare}, lambda: ledger_anchor(log, trust))
    ok(runner, "ledger", "witness", "add", served.url, served.vkey)
    _append(runner, 2)
    cosigned = ok(runner, "ledger", "checkpoint").stdout
    assert check_witnessed(trust, {"the certified checkpoint": cosigned}) == (
        "the certified checkpoint cosigned by 1 of 1 trusted witnesses (witness.example/w1)")
    with open_ledger(workspace, create=False) as log:
        detail = check_witnessed(trust, {"the certified checkpoint": bare}, lambda: ledger_anchor(log, trust))
    assert detail == ("the certified checkpoint not cosigned as required but prefixes of the ledger's newest "
                      "checkpoint (size 2), cosigned by 1 of 1 trusted witnesses (witness.example/w1)")
    # a checkpoint of another history (same origin and key) is no prefix of the witnessed one
    with Ledger.open(tmp_path / "fork.db", ORIGIN, open_ledger(workspace, sign=True).signer) as fork:
        fork.append("key_event", {"n": "forked"})
        forked = fork.checkpoint()
    with open_ledger(workspace, create=False) as log, pytest.raises(VerificationFailed, match="is not a prefix of"):
        check_witnessed(trust, {"the certified checkpoint": forked}, lambda: ledger_anchor(log, trust))
