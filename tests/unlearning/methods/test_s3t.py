"""S3T: stage-wise layer-group training, truncation on deletion, deactivation bit for bit."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import BadInput
from unlearning import methods
from unlearning.data.records import RecordStore
from unlearning.methods.s3t.orders import excluded_aggregation, order_state, stage_id, truncate
from unlearning.operations.build import build_version
from unlearning.training.base_models import load_base
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine
from unlearning.training.layer_groups import active_weights, group_layers, layer_of, require_zero_b, trainable_layers

# The tiny base has 2 layers: 2 slices x 1 layer per group, both cyclic orders.
CONFIG = TrainConfig(method="s3t", base="tiny", shards=1, slices=2, layers_per_group=1, budget=2, epochs=1,
                     lr=1e-2, batch_size=4, lora_dropout=0.1, seed=3)
LAYERS = 2


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def logits(engine: Engine, weights: dict, prompts: list[list[int]]) -> torch.Tensor:
    engine.load_lora(weights)
    engine.model.eval()
    with torch.inference_mode():
        return torch.cat([engine.model(input_ids=torch.tensor([p])).logits[0] for p in prompts])


@pytest.fixture
def trained(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=8, per_subject=4))
        train = store.records("train")
        plan = methods.plan(CONFIG, store.partition, train)
        engine = Engine(load_base("tiny"), CONFIG)
        version = build_version(workspace, store, "s3t", plan, engine)
    return version, plan, train, engine


def test_each_stage_trains_only_its_layer_group(trained):
    version, _, _, engine = trained
    initial = engine.initial_state().lora
    for order in range(2):
        first, second = (version.component(stage_id(0, order, t)).adapter() for t in range(2))
        top, bottom = group_layers(LAYERS, 0, 1), group_layers(LAYERS, 1, 1)
        assert top == {1} and bottom == {0}  # top-down: stage 0 trains the last layer
        for key in initial:
            trained_b = key.endswith("lora_B.weight")
            if layer_of(key) in bottom:  # untouched at stage 0, trained at stage 1
                assert torch.equal(first[key], initial[key])
                assert not trained_b or not torch.equal(second[key], initial[key])
            else:  # trained at stage 0, frozen at stage 1
                assert torch.equal(second[key], first[key])
                assert not trained_b or not torch.equal(first[key], initial[key])
    state = json.loads((version.path / "model.json").read_text())["aggregation"]["s3t"]
    assert state == {"slices": 2, "shards": [{"shard": 0, "orders": [{"order": [0, 1], "valid_prefix": 2},
                                                                      {"order": [1, 0], "valid_prefix": 2}]}]}
    assert version.aggregate == [stage_id(0, 0, 1)]


def test_deletion_deactivates_to_the_stored_stage_bit_for_bit(trained):
    version, plan, train, engine = trained
    slice_of = {r.record_id: s.slice for s in plan.components if s.group == 0 for r in s.records}
    z = next(r for r in train if slice_of.get(r.record_id) == 1)  # slice 1: first in order 1, second in order 0

    state = truncate(version, [z.commitment])
    assert state.shards[0].valid_prefix == (1, 0)  # order 0 keeps stage 0; order 1 is exhausted
    assert state.active_components() == [stage_id(0, 0, 0)] and state.exhausted_shards() == []
    assert order_state(version.meta).shards[0].valid_prefix == (2, 2)  # the version itself is unchanged
    excluded = excluded_aggregation(version, [z.commitment])  # model.json's aggregation for the exclusion version
    assert excluded["components"] == [stage_id(0, 0, 0)] and excluded["s3t"] == state.to_json()
    kept = set(state.retained_components())
    for component in version.components:  # exactly the stages that never saw z are kept
        assert (component.id in kept) == (not component.manifest().contains(z.commitment)), component.id

    stored = version.component(stage_id(0, 0, 0)).adapter()
    final = version.component(stage_id(0, 0, 1)).adapter()
    deactivated = active_weights(final, engine.initial_state().lora, LAYERS, 1, valid_prefix=1)
    assert tensors_equal(deactivated, stored)
    prompts = [engine.base.encode_prompt(r.prompt) for r in train[:3]]
    assert torch.equal(logits(engine, deactivated, prompts), logits(engine, stored, prompts))
    assert not torch.equal(logits(engine, final, prompts), logits(engine, stored, prompts))

    # Deleting a record of slice 0 as well exhausts the shard: it must be retrained.
    y = next(r for r in train if slice_of.get(r.record_id) == 0)
    exhausted = truncate(version, [z.commitment, y.commitment])
    assert exhausted.shards[0].valid_prefix == (0, 0) and exhausted.exhausted_shards() == [0]
    assert exhausted.active_components() == [] and exhausted.retained_components() == []


def test_negative_control_a_module_trained_at_every_stage_breaks_deactivation(trained):
    """Stage 1 of order 0, but with the top layer (standing in for a head or any shared module)
    trainable again: zeroing group 1 no longer gives the stage 0 checkpoint."""
    version, plan, _, engine = trained
    stage0, stage1 = plan.component(stage_id(0, 0, 0)), plan.component(stage_id(0, 0, 1))
    start = replace(version.component(stage0.id).training_state(), optimizer=None, scheduler=None)
    examples = engine.encode(stage1.records)
    with trainable_layers(engine, {0, 1}):
        shared = engine.train(start, examples, stage1.samples, stage1.id).lora
    initial = engine.initial_state().lora
    stored = version.component(stage0.id).adapter()
    assert not tensors_equal(active_weights(shared, initial, LAYERS, 1, valid_prefix=1), stored)
    proper = version.component(stage1.id).adapter()  # trained with only group 1
    assert tensors_equal(active_weights(proper, initial, LAYERS, 1, valid_prefix=1), stored)


def test_retraining_after_a_deletion_resumes_each_order_at_its_affected_stage(workspace, trained):
    version, plan, train, _ = trained
    slice_of = {r.record_id: s.slice for s in plan.components if s.group == 0 for r in s.records}
    z = next(r for r in train if slice_of.get(r.record_id) == 0)
    retained = [r for r in train if r != z]
    with RecordStore.open(workspace) as store:
        replanned = methods.plan(CONFIG, store.partition, retained)
        restored = build_version(workspace, store, "s3t", replanned, Engine(load_base("tiny"), CONFIG), reuse=version)
        scratch = build_version(workspace, store, "scratch", replanned, Engine(load_base("tiny"), CONFIG))
    for new, ref in zip(restored.components, scratch.components, strict=True):
        assert tensors_equal(new.adapter(), ref.adapter()) and new.weights_sha256 == ref.weights_sha256, new.id
        assert not new.manifest().contains(z.commitment)
    # Slice 0 is order 1's second stage: its first stage (slice 1 only) was kept, not retrained.
    kept = restored.component(stage_id(0, 1, 0)).path / "adapter_model.safetensors"
    assert kept.stat().st_ino == (version.component(stage_id(0, 1, 0)).path / "adapter_model.safetensors").stat().st_ino
    assert order_state(restored.meta).shards[0].valid_prefix == (2, 2)


def test_a_nonzero_lora_init_is_refused():
    engine = Engine(load_base("tiny"), CONFIG)
    initial = engine.initial_state().lora
    require_zero_b(initial)
    key = next(k for k in initial if k.endswith("lora_B.weight"))
    with pytest.raises(BadInput, match="B = 0"):
        require_zero_b({**initial, key: torch.ones_like(initial[key])})


def test_cli_train_show_and_bad_options(workspace, records, write_jsonl):
    runner = CliRunner()
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=6, per_subject=3)))]).exit_code == 0
    tiny = ["--base", "tiny", "--epochs", "0.5", "--batch-size", "4"]
    too_deep = runner.invoke(app, ["train", "m", "--method", "s3t", "--slices", "3", *tiny])
    assert too_deep.exit_code == 2 and "exceeds the 2 layers that carry LoRA" in too_deep.stderr
    assert runner.invoke(app, ["train", "m", "--method", "s3t", "--slices", "2", "--budget", "3", *tiny]).exit_code == 2
    assert runner.invoke(app, ["train", "m", "--method", "sisa", "--budget", "2", *tiny]).exit_code == 2
    bad_prior = runner.invoke(app, ["train", "m", "--method", "s3t", "--slices", "2", "--order-selection", "bms",
                                    "--deletion-prior", "0.9,0.3", *tiny])
    assert bad_prior.exit_code == 2 and "deletion-prior" in bad_prior.stderr

    trained = runner.invoke(app, ["train", "m", "--method", "s3t", "--shards", "1", "--slices", "2",
                                  "--order-selection", "bms", "--deletion-prior", "0.8,0.2", "--budget", "1",
                                  *tiny, "--json"])
    assert trained.exit_code == 0, trained.output
    shown = json.loads(runner.invoke(app, ["models", "show", "m", "--json"]).stdout)
    summary = json.loads(trained.stdout)
    assert summary.pop("registered") is None  # no keys or registry in this workspace
    assert shown == summary
    # bms puts the likely-deleted slice 0 last in the single order
    assert shown["s3t_orders"] == [{"shard": 0, "orders": [{"order": [1, 0], "valid_prefix": 2}]}]
    assert shown["aggregate"] == [stage_id(0, 0, 1)]
    assert "valid 2" in runner.invoke(app, ["models", "show", "m"]).stdout
