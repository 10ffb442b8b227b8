"""W4 for the influence path on the tiny model: corruption is deterministic and does what it says,
and the benchmark returns one row per model with the reference at distance zero."""

from __future__ import annotations

from dataclasses import replace

from tests.conftest import make_records
from unlearning.bench.influence import corrupt, run_influence_benchmark
from unlearning.methods.influence.solver import SolverSettings
from unlearning.training.config import TrainConfig


def test_corruption_is_deterministic_and_changes_only_what_it_names() -> None:
    train = make_records(subjects=10, per_subject=3)
    flipped = corrupt(train, "rc", 0.1, seed=1)
    assert len(flipped) == 3 and flipped == corrupt(train, "rc", 0.1, seed=1) != corrupt(train, "rc", 0.1, seed=2)
    by_id = {r.record_id: r for r in train}
    assert all(r.answer != by_id[i].answer and r.prompt == by_id[i].prompt for i, r in flipped.items())
    added = corrupt(train, "qm", 0.1, seed=1)
    for i, r in added.items():
        liked = next(line for line in r.prompt.splitlines() if line.startswith("Liked: "))
        before = next(line for line in by_id[i].prompt.splitlines() if line.startswith("Liked: "))
        assert r.answer == by_id[i].answer and liked.startswith(before.replace("Liked: none", "Liked: "))
        assert liked.count('"') == before.count('"') + 2  # one more quoted movie


def test_w4_rows() -> None:
    train = make_records(subjects=8, per_subject=3, seed=0)
    test = [replace(r, record_id=f"t-{r.record_id}", subject_id=f"t-{r.subject_id}")
            for r in make_records(subjects=4, per_subject=3, seed=1)]
    config = TrainConfig(base="tiny", lr=0.03, batch_size=4, epochs=1, seed=3, threads=1)
    rows = run_influence_benchmark(train, test, config, "rc", 0.1, seed=0, solvers=[
        SolverSettings(solver="cg", damping=10.0), SolverSettings(solver="cg", curvature="hessian", damping=0.0)])
    assert [r["model"] for r in rows] == ["corrupted", "retrain", "influence-cg", "influence-cg"]
    corrupted, retrain, update, failed = rows
    assert retrain["distance_to_retrain"] == retrain["distance_to_retrain_corrected"] == 0
    assert corrupted["distance_to_retrain"] > 0 and corrupted["corrupted_records"] == 2
    assert update["relative_residual"] < SolverSettings().tolerance and update["distance_to_retrain"] != corrupted["distance_to_retrain"]
    assert all(0 <= r[k] <= 1 for r in rows[:3] for k in ("auc", "accuracy", "mia_auc"))
    assert "negative curvature" in failed["error"]  # H is indefinite: no damping, no solve on the exact Hessian
