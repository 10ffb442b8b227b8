"""Workload W4 for the influence path (reference §7.4): corruption, then correction.

A share of the training records is corrupted (rc: the answer flipped, response correction;
qm: a random other movie added to the liked history, query modification), one adapter is
trained on the corrupted data, and each solver's influence update corrects it. The reference
is the exact retrain from the same init on the clean data. `run_influence_benchmark` returns
one JSON row per model (corrupted, retrain, one per solver) for `erasure bench unlearning`.

Columns besides time and solver facts: test AUC and accuracy; mean |P(Yes) − P_retrain(Yes)|
on the test set and on the corrected records; the share of the corrupted adapter's distance to
the retrain on the corrected records' P(Yes) that a model closes (`gap_closed`); AUC on the corrected records with their clean
answers (LLMEraser's forget-set protocol); and a loss-based membership-inference AUC telling
the corrupted records as trained from as many test records (0.5: the corrupted versions look
unseen; higher: the model still remembers them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from ledger.errors import BadInput
from unlearning.data.movielens import _LIKED, history_positivity
from unlearning.data.partition import training_order
from unlearning.data.records import Record
from unlearning.evaluation import gap_closed, metrics, mia_auc
from unlearning.methods.base import samples_for
from unlearning.methods.influence.solver import SolverSettings, influence_update
from unlearning.training.base_models import load_base
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine

CORRUPTIONS = ("rc", "qm")


def corrupt(records: Sequence[Record], kind: str, share: float, seed: int) -> dict[str, Record]:
    """The corrupted versions of `share` of the records, drawn by HMAC(seed, record id)."""
    if kind not in CORRUPTIONS:
        raise BadInput(f"unknown corruption {kind!r} (one of {', '.join(CORRUPTIONS)})")
    chosen = training_order(seed, "bench/w4", records)[:max(1, round(share * len(records)))]
    if kind == "rc":
        return {r.record_id: replace(r, answer="No" if r.answer == "Yes" else "Yes") for r in chosen}
    titles = [line.removeprefix("Target movie: ") for r in records for line in r.prompt.splitlines()
              if line.startswith("Target movie: ")]
    if not titles:
        raise BadInput("query modification needs TALLRec prompts with a 'Target movie:' line")
    out = {}
    for i, r in enumerate(chosen):
        extra = titles[(i * 7919 + seed) % len(titles)]  # any other movie; deterministic per (seed, position)
        lines = [(_LIKED + extra if line == _LIKED + "none" else f"{line}, {extra}") if line.startswith(_LIKED)
                 else line for line in r.prompt.splitlines()]
        out[r.record_id] = replace(r, prompt="\n".join(lines))
    return out


def run_influence_benchmark(train: Sequence[Record], test: Sequence[Record], config: TrainConfig, kind: str = "rc",
                            share: float = 0.10, seed: int = 0,
                            solvers: Sequence[SolverSettings] = (SolverSettings(),)) -> list[dict]:
    """Rows for the corrupted adapter, the exact retrain on clean data and each solver's update."""
    engine = Engine(load_base(config.base), config)
    bad = corrupt(train, kind, share, seed)
    clean = engine.encode(train)
    trained_on = engine.encode([bad.get(r.record_id, r) for r in train])
    old = engine.encode(list(bad.values()))
    new = engine.encode([r for r in train if r.record_id in bad])
    samples = samples_for(config.epochs_fraction, len(train))

    start = time.perf_counter()
    corrupted = engine.train(engine.initial_state(), trained_on, samples, "w4/corrupted").lora
    corrupted_s = time.perf_counter() - start
    start = time.perf_counter()
    retrained = engine.train(engine.initial_state(), clean, samples, "w4/clean").lora
    retrain_s = time.perf_counter() - start

    scored = [r for r in test if r.answer in ("Yes", "No")]
    test_ids = [engine.base.encode_prompt(r.prompt) for r in scored]
    fixed = [r for r in train if r.record_id in bad]
    held_out = scored[:len(old)]

    p_yes = engine.p_yes
    reference = (p_yes(retrained, test_ids), p_yes(retrained, [e.prompt_ids for e in new]))
    before = p_yes(corrupted, [e.prompt_ids for e in new])  # where the gap to the exact correction starts

    def row(model: str, lora: dict, seconds: float, **extra: object) -> dict:
        on_test, on_fixed = p_yes(lora, test_ids), p_yes(lora, [e.prompt_ids for e in new])
        evaluation = metrics([int(r.answer == "Yes") for r in scored], on_test,
                             [history_positivity(r.prompt) for r in scored])
        on_old = p_yes(lora, [e.prompt_ids for e in old])
        on_held_out = p_yes(lora, [engine.base.encode_prompt(r.prompt) for r in held_out])
        return {
            "workload": f"w4-{kind}", "model": model, "seed": seed, "corrupted_records": len(bad),
            "train_records": len(train), "seconds": round(seconds, 3), **extra,
            "auc": evaluation.auc, "accuracy": evaluation.accuracy,
            "distance_to_retrain": _mean_abs(on_test, reference[0]),
            "distance_to_retrain_corrected": _mean_abs(on_fixed, reference[1]),
            "corrected_auc": metrics([int(r.answer == "Yes") for r in fixed], on_fixed, [None] * len(fixed)).auc,
            "gap_closed": gap_closed(before, on_fixed, reference[1]),
            "mia_auc": mia_auc(on_old, list(bad.values()), on_held_out, held_out),
        }

    rows = [row("corrupted", corrupted, corrupted_s), row("retrain", retrained, retrain_s)]
    for settings in solvers:
        try:
            solution = influence_update(engine, corrupted, trained_on, old, new, settings)
        except BadInput as err:  # e.g. negative curvature: a row that says so, not a crash
            rows.append({"workload": f"w4-{kind}", "model": f"influence-{settings.solver}", "seed": seed,
                         "solver": settings.to_json(), "error": str(err)})
            continue
        updated = {k: v + solution.delta[k] for k, v in corrupted.items()}
        rows.append(row(f"influence-{settings.solver}", updated, solution.seconds, solver=settings.to_json(),
                        relative_residual=solution.relative_residual, hvp_examples=solution.hvp_examples))
    return rows


def _mean_abs(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)
