"""APA's Movie protocol of `erasure bench unlearning --preset seed`: the chronological split, the
epoch choice, APA's per-request cost, S3T's coupon-collector expectations, "n/a (one class)", and
the protocol end to end at tiny scale (`seed-tiny`)."""

from __future__ import annotations

import json
import random
from collections import Counter
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import BadInput
from tests.conftest import make_records
from unlearning.bench.forget import PARTITION_KEY
from unlearning.bench.protocol import (
    best_epochs,
    chronological_data,
    chronological_parts,
    expected_deletions,
    expected_deletions_for,
    select_epochs,
    target_times,
)
from unlearning.bench.report import _fmt_auc
from unlearning.bench.unlearning import METHODS, PRESETS, method_configs
from unlearning.data.movielens import Item, MovieLens, Rating, User
from unlearning.data.partition import Partition
from unlearning.training.config import TrainConfig


def _movielens(users: int = 12, ratings: int = 40, seed: int = 0) -> MovieLens:
    """Random ratings with interleaved timestamps: every user rates throughout the period."""
    rng = random.Random(seed)
    items = {str(i): Item(str(i), f"Movie {i}", "1990", ("Drama",)) for i in range(1, 200)}
    rows = [Rating(str(u), str(i), rng.randint(1, 5), rng.randint(0, 10**6))
            for u in range(1, users + 1) for i in rng.sample(sorted(items), ratings)]
    return MovieLens(rows, items, {str(u): User(str(u), 30, "F", "other", "00000") for u in range(1, users + 1)})


def test_chronological_split_sizes_order_and_determinism():
    data = _movielens()
    when = target_times(data)
    train, valid, test = chronological_parts(data, history=5, window=200)
    assert (len(train), len(valid), len(test)) == (160, 20, 20)
    assert max(when[r.record_id] for r in train) <= min(when[r.record_id] for r in valid)
    assert max(when[r.record_id] for r in valid) <= min(when[r.record_id] for r in test)

    partition = Partition(PARTITION_KEY)
    drawn = chronological_data(5, 200, (40, 10, 20), partition, shards=2, data=data)
    assert (len(drawn.train), len(drawn.valid), len(drawn.test)) == (40, 10, 20) and drawn.explicit_splits
    assert {r.record_id for r in drawn.train} <= {r.record_id for r in train}
    assert {r.record_id for r in drawn.valid} <= {r.record_id for r in valid}
    assert [r.record_id for r in drawn.test] == [r.record_id for r in test]  # the whole part
    assert Counter(partition.shard(r.subject_id, 2) for r in drawn.train) == {0: 20, 1: 20}  # K shards of n/K
    subjects = [{r.subject_id for r in part} for part in (drawn.train, drawn.valid, drawn.test)]
    assert subjects[0] & subjects[2]  # users overlap across the splits
    assert chronological_data(5, 200, (40, 10, 20), partition, shards=2, data=data) == drawn
    with pytest.raises(BadInput, match="too few"):
        chronological_data(5, 200, (162, 10, 20), partition, shards=2, data=data)
    with pytest.raises(BadInput, match="fewer than the window"):
        chronological_parts(data, history=5, window=10_000)


def test_epochs_are_the_best_on_validation_fewer_on_a_tie():
    assert best_epochs([0.5, 1.0, 2.0], [0.61, 0.7, 0.65]) == 1.0
    assert best_epochs([0.5, 1.0, 2.0], [0.7, 0.7, 0.65]) == 0.5
    assert best_epochs([1.0, 2.0], [None, 0.55]) == 2.0
    with pytest.raises(BadInput, match="single class"):
        best_epochs([1.0, 2.0], [None, None])

    records = make_records(subjects=8, per_subject=4)
    config = TrainConfig(base="tiny", lr=0.03, batch_size=4, epochs=1, seed=0, threads=1)
    selection = select_epochs(config, records[:24], records[24:], grid=(2.0, 1.0))
    assert selection["grid"] == [1.0, 2.0] and len(selection["validation_auc"]) == 2
    assert selection["chosen"] == best_epochs(selection["grid"], selection["validation_auc"])


def test_seed_configs_share_one_recipe_and_fit_s3t_groups_in_the_top_layers():
    configs = method_configs(PRESETS["seed"], "smollm2-135m", seed=0, threads=2, precision="fp32", num_layers=30,
                             epochs=0.5)
    assert {c.lora_layers for c in configs.values()} == {"top-4"}
    assert {c.epochs for name, c in configs.items() if not name.startswith("s3t")} == {0.5}
    s3t = configs["s3t-bL"]
    assert (s3t.layers_per_group, s3t.budget, s3t.epochs) == (1, 4, 0.2)  # 4 groups of 1 layer; 2E/(L+1)
    assert all(c.lora_layers == "all" for c in method_configs(PRESETS["cpu"], "tiny", 0, 1, "fp32", 2).values())


def test_coupon_collector_expectations_by_hand():
    # m = 2 shards, L = 2 slices, B' = 1: a shard dies when its one first-position slice is hit
    # (probability 1/L per deletion): E[first] = L = 2; every shard: mL·H_m = 4 · 3/2 = 6.
    assert expected_deletions(2, 2, 1) == (Fraction(2), Fraction(6))
    # B' = 2: both slices of a shard must be hit. From one slice hit in shard A: 1/4 finishes A,
    # 1/4 repeats, 1/2 opens B; from one in each: 1/2 finishes, 1/2 repeats (2 more on average).
    # E = 1 + E(1,0), E(1,0) = 1 + E(1,0)/4 + E(1,1)/2, E(1,1) = 2  =>  E(1,0) = 8/3, E = 11/3.
    assert expected_deletions(2, 2, 2) == (Fraction(11, 3), 4 * (1 + Fraction(1, 2) + Fraction(1, 3) + Fraction(1, 4)))
    # the reference's table (§4b): m = L = 4: SISA 33.3, S3T B' = L 54.1
    assert expected_deletions(4, 4, 1)[1] == Fraction(100, 3)
    assert round(float(expected_deletions(4, 4, 4)[1]), 1) == 54.1
    # unequal slices (numerically): equal shares give the formula back; two shards of one first
    # slice each, hit with 1/4 and 1/2: first = 1/(1/4 + 1/2) = 4/3, every = 4 + 2 - 4/3 = 14/3
    for m, length, b in ((2, 2, 2), (4, 4, 1), (4, 4, 4)):
        sized = expected_deletions_for([[1 / (m * length)] * b] * m)
        assert sized == pytest.approx(tuple(map(float, expected_deletions(m, length, b))), rel=1e-5)
    assert expected_deletions_for([[0.25], [0.5]]) == pytest.approx((4 / 3, 14 / 3), rel=1e-5)


def test_an_auc_of_a_single_class_reads_n_a():
    assert _fmt_auc(None) == "n/a (one class)" and _fmt_auc(0.75) == "0.750"


@pytest.mark.assets
def test_seed_protocol_end_to_end_at_tiny_scale(tmp_path):
    out = tmp_path / "seed-tiny"
    result = CliRunner().invoke(app, ["bench", "unlearning", "--preset", "seed-tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    preset = PRESETS["seed-tiny"]
    assert data["complete"] and data["data"]["protocol"] == "chronological"
    assert (data["data"]["train"], data["data"]["valid"], data["data"]["test"]) == preset.sizes

    selection = data["epoch_selection"]
    assert selection["grid"] == list(preset.epoch_grid) and data["settings"]["epochs"] == selection["chosen"]

    rows = data["rows"]
    steps = {"train": 1, "w1": preset.sequential, "w2": 1, "w3": preset.subjects}
    assert Counter((r["method"], r["workload"]) for r in rows) == {
        (m, w): n for m in METHODS for w, n in steps.items() if m != "influence" or w in ("train", "w3")}
    train = {r["method"]: r for r in rows if r["workload"] == "train"}
    # APA's per-request cost: one sub-model retrained; retrain's is the whole model
    assert all(train[m]["one_submodel_s"] > 0 for m in METHODS if m != "influence")
    assert train["influence"]["one_submodel_s"] is None
    assert all((train[m]["validation_column_s"] or 0) > 0 for m in ("apa-d", "apa-nd"))  # recomputed with the adapter
    assert all(train[m]["validation_column_s"] is None for m in METHODS if not m.startswith("apa"))
    assert train["retrain"]["one_submodel_s"] <= train["retrain"]["train_s"]
    assert all(r["requests"] >= 1 for r in rows if r["workload"] != "train")
    # APA(D) and APA(ND) share training and unlearning: the same cost columns, each its own scores
    for d, nd in zip(*([r for r in rows if r["method"] == m] for m in ("apa-d", "apa-nd")), strict=True):
        assert {k: d[k] for k in ("workload", "step", "unlearn_s", "train_s", "grad_samples", "exact_retrained")} == \
            {k: nd[k] for k in ("workload", "step", "unlearn_s", "train_s", "grad_samples", "exact_retrained")}

    for method in ("s3t-b1", "s3t-bL"):
        simulation = data["s3t_deletions"][method]
        formula_first, formula_all = expected_deletions(simulation["shards"], simulation["slices"],
                                                        simulation["first_position_slices"])
        assert simulation["formula_all"] == pytest.approx(float(formula_all))
        assert simulation["sized_first"] <= simulation["sized_all"]
        assert 0 < simulation["measured_first"] <= simulation["measured_all"]
    assert data["equal_time"]["all"]["samples"] > 0 and data["equal_time"]["top"]["lora_layers"] == "top-2"

    summary = (out / "summary.md").read_text()
    for section in ("## Epoch selection", "## Unlearning cost per request, two ways", "## S3T deletion capacity",
                    "## Top-N cached layers vs all layers at equal wall-clock", "## Targets"):
        assert section in summary
    assert "n/a (one class)" in summary  # W1's forget set: one record, one label
    targets = summary.split("## Targets")[1].split("\n## ")[0]
    verdicts = [line.rsplit("|", 2)[1].strip() for line in targets.splitlines() if line.startswith("| ")][1:]
    assert len(verdicts) == 12 and set(verdicts) <= {"met", "MISSED", "n/a"}
