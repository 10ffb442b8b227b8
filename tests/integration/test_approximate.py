"""The approximate path against the real MLflow server, on the tiny model: an influence update
is certified APPROXIMATE, verifies, is refused by consumers unless they allow it, never gets
the `certified` alias, and is superseded (then purged) by the exact path; rectification
replaces a record's commitment and retrains its shard exactly."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import VerificationFailed
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning import load_certified
from unlearning.data.records import RecordStore
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.approximate import influence_version, latest_exact
from unlearning.operations.build import replay_component
from unlearning.operations import steps
from unlearning.operations.certify import bundle_dir, certified_predicate
from unlearning.operations.context import Context
from unlearning.operations.exclude import exclude
from unlearning.operations.publish import publish
from unlearning.operations.purge import purge
from unlearning.operations.receive import receive
from unlearning.registry.mlflow import Registry
from unlearning.versions.store import ModelStore

pytestmark = pytest.mark.services
runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3", "--threads", "1"]
# The defaults (the factored Fisher, solved in closed form, damping from its scale) publish: the
# Hessian of this one-epoch adapter has eigenvalues down to about -6, the Fisher has none below 0.


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def trained(workspace: Workspace, records, write_jsonl, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A certified, registered SISA model (2 shards x 2 slices) on synthetic records."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert run("data", "ingest", str(write_jsonl(records(subjects=12, per_subject=3)))).exit_code == 0
    assert run("keys", "init").exit_code == 0
    name = f"approx-{uuid.uuid4().hex[:8]}"
    result = run("train", name, "--method", "sisa", "--shards", "2", "--slices", "2", *TINY)
    assert result.exit_code == 0, result.output
    from unlearning.operations.publish import register_trained

    register_trained(workspace, ModelStore(workspace).get(name, 1))
    return name


def _ledger_entries(ws: Workspace, kind: str) -> list[dict]:
    with open_ledger(ws) as ledger:
        return [e for e in (json.loads(data) for _, data in ledger.entries()) if e["type"] == kind]


def _train_subject(ws: Workspace, name: str, component: str) -> str:
    leaves = set(ModelStore(ws).get(name, 1).component(component).manifest().leaves)
    with RecordStore.open(ws) as store:
        return next(r.subject_id for r in store.records("train") if r.commitment in leaves)


def test_approximate_version_is_flagged_refused_and_superseded(workspace: Workspace, trained: str,
                                                               tmp_path: Path) -> None:
    name, ws = trained, workspace
    current = ModelStore(ws).get(name, 1)
    subject = _train_subject(ws, name, "shard1-slice1")
    with RecordStore.open(ws) as store:
        held = [r for r in store.records("train") if r.subject_id == subject]
    receipt = receive(ws, "approx-request", subject, model=name)
    update = influence_version(ws, current, held, [], [receipt], SolverSettings())
    assert update is not None and list(update.solutions) == ["shard1-slice1"]
    registry = Registry.for_workspace(ws)
    approx = publish(ws, registry, update.version, [], parent=current, approximation=update.approximation)
    assert approx.status == "approximate" and approx.aliases == ()
    assert registry.resolve(name, "certified", None).local_version == 1  # the alias did not move
    assert latest_exact(ws, name).version == 1  # later work never starts from the approximate version

    # the updated adapter changed, its manifest did not (it was trained on the records)
    before, after = current.component("shard1-slice1"), update.version.component("shard1-slice1")
    assert before.weights_sha256 != after.weights_sha256 and before.manifest_root == after.manifest_root
    assert update.version.component("shard0-slice1").weights_sha256 == current.component("shard0-slice1").weights_sha256

    # the exact path: the exclusion takes the alias and supersedes the approximate version
    excluded = publish(ws, registry, exclude(ws, current, [receipt]), [receipt], parent=current)
    assert "certified" in excluded.aliases
    assert registry.get(name, approx.version).status == "superseded"
    superseded = _ledger_entries(ws, "version_superseded")
    assert [(e["registry_version"], e["by_registry_version"]) for e in superseded] == [(approx.version, excluded.version)]
    # verifiable now; before the exclusion the alias pointed at v1, which holds the records, so every
    # verify failed its alias check
    checked = run("verify", f"models:/{name}/{approx.version}", "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["verified"] and report["claim"] == "APPROXIMATE"
    assert {"signature", "subjects", "manifests", "non-membership", "ledger inclusion", "registry binding",
            "aliases"} <= {c["check"] for c in report["checks"]}
    text = run("verify", f"models:/{name}/{approx.version}")
    assert text.exit_code == 0 and "claim APPROXIMATE" in text.stdout and "not shown to be free" in text.stdout
    assert "measured when made: shard1-slice1: old records' P(Yes)" in text.stdout

    predicate = certified_predicate(bundle_dir(ws, name, update.version.version), ws)
    assert predicate.claim == "APPROXIMATE" and predicate.erasures == []  # no non-membership claimed for them
    actions = {c.id: c.action for c in predicate.components}
    assert actions.pop("shard1-slice1") == "updated" and set(actions.values()) == {"kept"}
    assert predicate.removed == update.left_out  # an unserved checkpoint that saw the records is left out
    assert predicate.approximation["requests"][0]["requestId"] == "approx-request"
    assert float(predicate.approximation["updated"]["shard1-slice1"]["relativeResidual"]) < SolverSettings().tolerance
    # what the update did, measured when it was made: the old records' P(Yes) moved, and their
    # membership-inference AUC against held-out records, before and after
    measured = predicate.approximation["updated"]["shard1-slice1"]["measured"]
    assert measured["oldRecords"] == len(held) and measured["heldOutRecords"] > 0
    assert measured["oldPYesOriginal"] != measured["oldPYesUpdated"]
    assert all(0 <= float(measured[f"miaAuc{s}"]) <= 1 for s in ("Original", "Updated"))
    assert "cannot be measured here" in predicate.approximation["measuredDefinition"]
    assert "Fisher" in predicate.approximation["method"]

    refused = run("pull", f"models:/{name}/{approx.version}", "--dest", str(tmp_path / "refused"))
    assert refused.exit_code == 1 and "--allow-approximate" in refused.stderr
    assert not (tmp_path / "refused").exists()
    allowed = run("pull", f"models:/{name}/{approx.version}", "--dest", str(tmp_path / "allowed"), "--allow-approximate")
    assert allowed.exit_code == 0 and "(APPROXIMATE)" in allowed.stdout
    with pytest.raises(VerificationFailed, match="APPROXIMATE"):
        load_certified(f"models:/{name}/{approx.version}", workspace=ws)
    assert 0 < load_certified(f"models:/{name}/{approx.version}", workspace=ws,
                              allow_approximate=True).p_yes([held[0].prompt])[0] < 1

    # the purge removes it with the version it was computed from: both saw the records
    assert purge(ws, registry, name, [receipt]) == [1, update.version.version]
    assert approx.version not in {r.version for r in registry.versions(name)}
    assert all(e["to_version"] != approx.version for e in _ledger_entries(ws, "alias_moved"))


def test_rectification_replaces_the_commitment_and_retrains_exactly(workspace: Workspace, trained: str) -> None:
    name, ws = trained, workspace
    with RecordStore.open(ws) as store:
        record = next(r for r in store.records("train"))
    corrected = "No" if record.answer == "Yes" else "Yes"

    done = run("rectify", name, "--record", record.record_id, "--answer", corrected, "--approximate", "--json")
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["excluded_version"] < out["approximate_version"] < out["restored_version"]  # the exclusion first
    assert set(out["approximation"]) and all(float(r["relativeResidual"]) < SolverSettings().tolerance
                                         for r in out["approximation"].values())

    with RecordStore.open(ws) as store:
        now = store.record(record.record_id)
    assert now.answer == corrected and now.prompt == record.prompt and now.commitment != record.commitment
    received = [e for e in _ledger_entries(ws, "request_received") if e["request_id"] == out["request_id"]]
    assert [(e["kind"], e["commitments"], e["fields"]) for e in received] == [
        ("rectify_record", [record.commitment.hex()], ["answer"])]
    superseded = _ledger_entries(ws, "version_superseded")
    assert [e["registry_version"] for e in superseded] == [out["approximate_version"]]

    # the retrained shard holds the new commitment, not the old, and equals a from-scratch run
    restored = latest_exact(ws, name)
    changed = [c for c in restored.components if c.manifest().contains(now.commitment)]
    assert changed and not any(c.manifest().contains(record.commitment) for c in restored.components)
    replay = replay_component(ws, restored, changed[-1].id)
    assert replay.equal and replay.missing_records == 0
    assert run("verify", f"models:/{name}@certified").exit_code == 0

    again = run("rectify", name, "--record", record.record_id, "--answer", corrected, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["restored_version"] is None  # the same request: nothing left to do
    unknown = run("rectify", name, "--record", "no-such-record", "--answer", "Yes")
    assert unknown.exit_code == 2 and "unknown record 'no-such-record'" in unknown.stderr
    nothing = run("rectify", name, "--record", record.record_id)
    assert nothing.exit_code == 2 and "nothing to rectify" in nothing.stderr
    received = len(_ledger_entries(ws, "request_received"))
    too_long = run("rectify", name, "--record", record.record_id, "--prompt", "movie " * 3000)
    assert too_long.exit_code == 2 and "more than max_length" in too_long.stderr
    assert len(_ledger_entries(ws, "request_received")) == received  # rejected before any effect
    with RecordStore.open(ws) as store:
        assert store.record(record.record_id) == now

    # an erasure through the CLI takes the same path: exclusion, approximate update, retrain
    subject = next(s for s in _subjects(ws) if s != record.subject_id)
    forgot = run("forget", name, "--subject", subject, "--approximate", "--json")
    assert forgot.exit_code == 0, forgot.output
    erased = json.loads(forgot.stdout)
    assert erased["approximate_version"] is not None and erased["approximate_error"] is None
    assert erased["excluded_version"] < erased["approximate_version"] < erased["restored_version"]
    [excluded] = [e for e in _ledger_entries(ws, "request_excluded") if e["request_id"] == erased["request_id"]]
    [approximated] = [e for e in _ledger_entries(ws, "request_approximated") if e["request_id"] == erased["request_id"]]
    [built] = [e for e in _ledger_entries(ws, "version_built") if e["version"] == approximated["version"]]
    assert built["parent_version"] == excluded["version"]  # built onto the exclusion, after it
    registry = Registry.for_workspace(ws)
    assert registry.resolve(name, "certified", None).version == erased["restored_version"]
    assert all(r.status in {"certified", "superseded"} for r in registry.versions(name))


def test_an_update_the_retrain_overtook_is_not_published(workspace: Workspace, trained: str) -> None:
    """Off the exact path: the update is solved from what was held before the exclusion purged the
    version, and skipped (with the reason logged) once the request is restored."""
    name, ws = trained, workspace
    ctx = Context(ws)
    subject = _train_subject(ws, name, "shard0-slice1")
    with RecordStore.open(ws) as store:
        held = [r for r in store.records("train") if r.subject_id == subject]
    receipt = receive(ws, "overtaken", subject, model=name)
    shards = steps.plan(ctx, [("overtaken", [name], receipt)])["overtaken"][name]
    pending = steps.hold(ctx, name, receipt, held, [])
    assert pending.held is not None and pending.held.version.version == 1
    assert steps.exclude_requests(ctx, name, ["overtaken"]).purged == [1]  # what the update needs is held
    assert steps.restore_requests(ctx, name, shards, ["overtaken"]).registered is not None
    versions = ModelStore(ws).versions(name)

    result = steps.approximate(ctx, pending, SolverSettings())
    reason = f"the exact version came first: overtaken is restored on {name}"
    assert result.registered is None and result.error == reason
    assert ModelStore(ws).versions(name) == versions
    [logged] = [e for e in _ledger_entries(ws, "request_approximated") if e["request_id"] == "overtaken"]
    assert logged["reason"] == f"no approximate update: {reason}" and logged.get("registry_version") is None


def _subjects(ws: Workspace) -> list[str]:
    with RecordStore.open(ws) as store:
        return store.subjects("train")
