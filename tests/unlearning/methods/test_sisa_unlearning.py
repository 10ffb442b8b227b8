"""SISA unlearning is exact: resuming from the last clean checkpoint equals training from scratch."""

from __future__ import annotations

import json

import torch

from ledger.log import open_ledger
from unlearning import methods
from unlearning.data.records import RecordStore
from unlearning.operations.build import build_version
from unlearning.training.base_models import load_base
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine

CONFIG = TrainConfig(method="sisa", base="tiny", shards=2, slices=3, epochs=2, lr=1e-2, batch_size=3,
                     warmup_steps=5, lora_dropout=0.1, seed=1)


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unlearning_one_record_by_resuming_equals_training_from_scratch(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=12, per_subject=4))
        train = store.records("train")
        plan = methods.plan(CONFIG, store.partition, train)
        v1 = build_version(workspace, store, "m", plan, Engine(load_base("tiny"), CONFIG))

        # The record to forget: one that enters training in slice 1 or later of its shard.
        entry = {}
        for spec in plan.components:
            for r in spec.records:
                entry.setdefault(r.record_id, spec)
        z = next(r for r in train if entry[r.record_id].slice >= 1)
        shard, slice_ = entry[z.record_id].shard, entry[z.record_id].slice
        assert [(p.model, p.version, p.component) for p in store.provenance([z.commitment])] == [
            ("m", 1, methods.component_id(shard, slice_))]

        retained = [r for r in train if r != z]
        plan_without_z = methods.plan(CONFIG, store.partition, retained)
        unlearned = build_version(workspace, store, "m", plan_without_z, Engine(load_base("tiny"), CONFIG),
                                  reuse=v1)
        scratch = build_version(workspace, store, "scratch", plan_without_z,
                                Engine(load_base("tiny"), CONFIG))

    assert unlearned.version == 2 and unlearned.meta.parent_version == 1
    for old, new, ref in zip(v1.components, unlearned.components, scratch.components, strict=True):
        affected = old.meta.shard == shard and old.meta.slice >= slice_
        # Components before the erased record's slice (and other shards) are the old files, untouched.
        assert (new.path.joinpath("adapter_model.safetensors").stat().st_ino
                == old.path.joinpath("adapter_model.safetensors").stat().st_ino) != affected
        assert (new.weights_sha256 != old.weights_sha256) == affected
        # Every component, reused or retrained, equals the from-scratch run bit for bit.
        assert tensors_equal(new.adapter(), ref.adapter()), new.id
        new_state, ref_state = new.training_state(), ref.training_state()
        for p, q in zip(new_state.optimizer["state"].values(), ref_state.optimizer["state"].values(), strict=True):
            assert all(torch.equal(p[k], q[k]) for k in p)
        assert torch.equal(new_state.rng["cpu"], ref_state.rng["cpu"]) and new_state.step == ref_state.step
        assert new.weights_sha256 == ref.weights_sha256 and new.manifest_root == ref.manifest_root
        # The erased record is in no manifest of the new version, and was in the affected old ones.
        assert not new.manifest().contains(z.commitment)
        assert old.manifest().contains(z.commitment) == affected

    with open_ledger(workspace) as ledger:
        entries = [json.loads(e) for _, e in ledger.entries()]
    trained_v2 = [e["component"] for e in entries if e["type"] == "component_trained" and e["model"] == "m"
                  and e["version"] == 2]
    assert trained_v2 == [methods.component_id(shard, s) for s in range(slice_, CONFIG.slices)]
    assert [e["version"] for e in entries if e["type"] == "version_built" and e["model"] == "m"] == [1, 2]
    assert all("subject" not in json.dumps(e) and "user" not in json.dumps(e) for e in entries)
