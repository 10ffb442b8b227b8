"""The approximate update off the exact path, without a registry: its inputs are read up front
(the version that held the records may be purged meanwhile), it is solved without a lock, and it
is built onto the newest exact version only if the model has not moved on."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from cli.app import app
from ledger import entries
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations import steps
from unlearning.operations.approximate import build, hold, latest_exact, moved_on, solve
from unlearning.operations.context import Context
from unlearning.operations.exclude import exclude
from unlearning.operations.receive import receive
from unlearning.operations.restore import restore
from unlearning.versions.store import ModelStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "3", "--threads", "1"]


def _subjects_of(ws: Workspace, name: str, component: str) -> list[str]:
    leaves = set(ModelStore(ws).get(name, 1).component(component).manifest().leaves)
    with RecordStore.open(ws) as store:
        return sorted({r.subject_id for r in store.records("train") if r.commitment in leaves})


def test_held_update_is_built_onto_the_exclusion_unless_the_model_moved_on(workspace, records, write_jsonl) -> None:
    ws, name = workspace, "m"
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=8, per_subject=3)))]).exit_code == 0
    trained = runner.invoke(app, ["train", name, "--method", "sisa", "--shards", "2", "--slices", "1", *TINY])
    assert trained.exit_code == 0, trained.output
    v1 = ModelStore(ws).get(name, 1)
    shard = max((0, 1), key=lambda s: len(_subjects_of(ws, name, f"shard{s}-slice0")))  # the keyed split is uneven
    cid, kept = f"shard{shard}-slice0", f"shard{1 - shard}-slice0"
    subject, other = _subjects_of(ws, name, cid)[:2]
    with RecordStore.open(ws) as store:
        old = [r for r in store.records("train") if r.subject_id == subject]
    receipt = receive(ws, "r1", subject, model=name)  # shreds the records: only `old` holds them now
    assert steps.plan(Context(ws), [("r1", [name], receipt)]) == {"r1": {name: [shard]}}

    held = hold(v1, old)
    assert held is not None and list(held.adapters) == [cid]
    v2 = exclude(ws, v1, [receipt])  # the exclusion comes first; a purge of v1 takes nothing the update needs
    assert v2 is not None and v2.aggregate == [kept]
    moved = ws.home / "v1-moved-away"
    shutil.move(v1.path, moved)
    update = solve(ws, held, old, [], [receipt], SolverSettings())
    assert moved_on(ws, update, v2) is None  # exclusions only since v1

    approx = build(ws, update, v2)
    shutil.move(moved, v1.path)
    version = approx.version
    assert version.meta.parent_version == 2 and version.meta.operation.updated == [cid]
    assert [c.id for c in version.components] == ["shard0-slice0", "shard1-slice0"]
    assert version.aggregate == ["shard0-slice0", "shard1-slice0"]  # the dropped shard served again, updated
    before, after = v1.component(cid), version.component(cid)
    assert before.weights_sha256 != after.weights_sha256 and before.manifest_root == after.manifest_root
    assert version.component(kept).weights_sha256 == v2.component(kept).weights_sha256
    assert approx.approximation["updated"][cid]["fromWeightsSha256"] == before.weights_sha256
    assert latest_exact(ws, name).version == 2
    with open_ledger(ws) as ledger:
        built = entries.read(ledger, entries.version_built_key(name, version.version))
    assert built["parent_version"] == 2 and built["aggregate"] == version.aggregate

    # another erasure in the same adapter: the update would serve its records again
    receipt2 = receive(ws, "r2", other, model=name)
    reason = moved_on(ws, update, v2)
    assert reason is not None and f"component {cid}" in reason and "erased since v1" in reason

    # a retrain since v1: the newest exact version serves an adapter v1 did not
    v3 = restore(ws, v2, [receipt, receipt2], shards={shard})
    reason = moved_on(ws, update, v3)
    assert reason == (f"the model moved on: v{v3.version} serves {cid} as v1, whose adapters the update "
                      "moved, did not")

    # the request restored: the exact version came first
    with open_ledger(ws) as ledger:
        ledger.append_many([entries.request_restored("r1", name, shard, v3.version, 9, "ab" * 32, [], "test")])
    assert moved_on(ws, update, v2) == f"the exact version came first: r1 is restored on {name}"


def test_hold_reads_nothing_when_no_served_adapter_saw_the_records(workspace, records, write_jsonl) -> None:
    ws, name = workspace, "m"
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=6, per_subject=2)))]).exit_code == 0
    trained = runner.invoke(app, ["train", name, "--method", "sisa", "--shards", "2", "--slices", "1", *TINY])
    assert trained.exit_code == 0, trained.output
    subject = next(s for c in ("shard0-slice0", "shard1-slice0") for s in _subjects_of(ws, name, c))
    with RecordStore.open(ws) as store:
        old = [r for r in store.records("train") if r.subject_id == subject]
    receipt = receive(ws, "r1", subject, model=name)
    excluded = exclude(ws, ModelStore(ws).get(name, 1), [receipt])
    assert excluded is not None and hold(excluded, old) is None
    pending = steps.hold(Context(ws), name, receipt, old, [])
    assert pending.held is None and pending.reason == ("no served adapter was trained on "
                                                       "the records")
