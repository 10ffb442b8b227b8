"""The training engine: exact resume from saved checkpoints, answer-only loss, scoring."""

from __future__ import annotations

import pytest
import torch

from ledger.errors import BadInput
from unlearning.training.base_models import load_base
from unlearning.training.checkpoint import TrainingState
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine

# Dropout on and a warm-up that spans the interruption: RNG and scheduler state both matter.
CONFIG = TrainConfig(base="tiny", lr=1e-2, batch_size=4, warmup_steps=6, lora_dropout=0.1, seed=3)


@pytest.fixture
def engine() -> Engine:
    return Engine(load_base("tiny"), CONFIG)


def assert_states_equal(a: TrainingState, b: TrainingState) -> None:
    assert a.lora.keys() == b.lora.keys() and all(torch.equal(a.lora[k], b.lora[k]) for k in a.lora)
    for p, q in zip(a.optimizer["state"].values(), b.optimizer["state"].values(), strict=True):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert a.scheduler == b.scheduler and a.step == b.step
    assert torch.equal(a.rng["cpu"], b.rng["cpu"])


def test_resumed_training_equals_uninterrupted(engine, records, tmp_path):
    examples = engine.encode(records(subjects=4, per_subject=5))
    # Uninterrupted: one component continuing straight into the next, in memory.
    first = engine.train(engine.initial_state(), examples[:8], 12, "a")
    uninterrupted = engine.train(first, examples, 30, "b")
    # Interrupted: save after the first component, load in a fresh engine, continue.
    first.save(tmp_path / "ckpt")
    fresh = Engine(load_base("tiny"), CONFIG)
    resumed = fresh.train(TrainingState.load(tmp_path / "ckpt"), examples, 30, "b")
    assert_states_equal(uninterrupted, resumed)
    assert resumed.step == 3 + 8
    assert not torch.equal(uninterrupted.rng["cpu"], first.rng["cpu"])  # dropout consumed RNG
    # Continuing from `first` again (it must not have been mutated by the first continuation).
    assert_states_equal(uninterrupted, engine.train(first, examples, 30, "b"))


def test_training_learns_the_answer_rule(engine, records):
    data = engine.encode(records(subjects=8, per_subject=6))
    labels = [e.answer_ids[0] == engine.base.yes_id for e in data]
    prompts = [e.prompt_ids for e in data]

    def mean_log_likelihood(state):
        p = engine.p_yes(state.lora, prompts)
        return sum(torch.log(torch.tensor(pi if y else 1 - pi)) for pi, y in zip(p, labels, strict=True)) / len(p)

    start = engine.initial_state()
    trained = engine.train(start, data, 6 * len(data), "learn")
    assert mean_log_likelihood(trained) > mean_log_likelihood(start) + 0.05


def test_scores_do_not_depend_on_padding(engine, records):
    prompts = [e.prompt_ids for e in engine.encode(records(subjects=2, per_subject=3))]
    lora = engine.train(engine.initial_state(), engine.encode(records(subjects=2, per_subject=3)), 8, "x").lora
    batched = engine.p_yes(lora, prompts, batch_size=6)
    single = [engine.p_yes(lora, [p])[0] for p in prompts]
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    assert torch.allclose(torch.tensor(batched), torch.tensor(single), atol=1e-5)
    assert all(0 < p < 1 for p in batched)


def test_initial_state_is_the_seeded_init(engine):
    state = engine.initial_state()
    assert all(torch.equal(state.lora[k], v) for k, v in Engine(load_base("tiny"), CONFIG).initial_state().lora.items())
    other = Engine(load_base("tiny"), TrainConfig(base="tiny", seed=4)).initial_state()
    a_keys = [k for k in state.lora if "lora_A" in k]
    assert a_keys and not torch.equal(state.lora[a_keys[0]], other.lora[a_keys[0]])
    assert all(not v.any() for k, v in state.lora.items() if "lora_B" in k)  # B starts at zero


def test_too_long_records_are_rejected_before_training(records):
    engine = Engine(load_base("tiny"), TrainConfig(base="tiny", max_length=16))
    with pytest.raises(BadInput, match="more than max_length 16"):
        engine.encode(records(subjects=1, per_subject=1))
