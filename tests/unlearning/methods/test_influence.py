"""Influence-function updates on the tiny model: the HVP operator, the two solvers, and that the
update moves predictions the way retraining without (or with corrected) records does.

The records put two subjects' answers all on "Yes" (the rule gives about a third Yes), so
removing them shifts what the adapter should predict by far more than the tiny model's
training noise.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ledger.errors import BadInput
from tests.conftest import make_records
from unlearning.data.records import Record
from unlearning.methods.influence.solver import Quadratic, SolverSettings, eager_attention, influence_update, solve_adam
from unlearning.training.base_models import load_base
from unlearning.training.checkpoint import TrainingState
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine

CONFIG = TrainConfig(base="tiny", lr=0.03, batch_size=4, lora_dropout=0.05, seed=3, threads=1)
FORGET = {"user0", "user1"}


@pytest.fixture(scope="module", params=["all", "top-1"])
def setup(request):  # type: ignore[no-untyped-def]
    """Every test twice: LoRA on all layers, and on the top layer from the cached prefix states."""
    records = [Record(r.record_id, r.subject_id, r.prompt, "Yes") if r.subject_id in FORGET else r
               for r in make_records(subjects=8, per_subject=4)]
    engine = Engine(load_base("tiny"), replace(CONFIG, lora_layers=request.param))
    examples = engine.encode(records)
    trained = engine.train(engine.initial_state(), examples, 4 * len(examples), "influence")
    old = [e for r, e in zip(records, examples, strict=True) if r.subject_id in FORGET]
    return engine, records, examples, trained, old


def flat(delta: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([delta[k].reshape(-1) for k in sorted(delta)])


def test_hvp_is_the_derivative_of_the_gradient(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, old = setup
    was_training = engine.model.training
    with eager_attention(engine):
        assert not engine.model.training and engine.base.model.config._attn_implementation == "eager"
        q = Quadratic(engine, trained.lora, examples, damping=0.0)
        v = torch.randn(sum(p.numel() for p in q.params), generator=torch.Generator().manual_seed(0))
        hv = q.product(v, examples[:8])

        def gradient(shift: float) -> torch.Tensor:
            with torch.no_grad():
                for p, x in zip(q.params, torch.split(shift * v, [p.numel() for p in q.params]), strict=True):
                    p.add_(x.view_as(p))
            g = q.token_loss_gradient(examples[:8])
            with torch.no_grad():
                for p, x in zip(q.params, torch.split(shift * v, [p.numel() for p in q.params]), strict=True):
                    p.sub_(x.view_as(p))
            return g / sum(len(e.answer_ids) for e in examples[:8])

        eps = 1e-3
        finite = (gradient(eps) - gradient(-eps)) / (2 * eps)
    # central differences in fp32: agreement to 1 % of the HVP's norm
    assert (hv - finite).norm() / hv.norm() < 1e-2
    assert engine.model.training == was_training and engine.base.model.config._attn_implementation == "sdpa"


def test_adam_reaches_the_conjugate_gradient_solution(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, old = setup
    # damping 1.0 keeps the system well conditioned, so 80 mini-batch steps suffice here
    cg = influence_update(engine, trained.lora, examples, old, [],
                          SolverSettings(solver="cg", curvature="ggn", damping=1.0, steps=100, tolerance=1e-6))
    adam = influence_update(engine, trained.lora, examples, old, [],
                            SolverSettings(solver="adam", curvature="ggn", damping=1.0, steps=80, batch_size=8))
    assert cg.relative_residual < 1e-5
    assert adam.hvp_examples >= 80 * 8 and cg.gradient_examples == len(old)
    distance = (flat(adam.delta) - flat(cg.delta)).norm() / flat(cg.delta).norm()
    assert distance < 0.05, f"Adam is {distance:.3f} (relative) from the CG solution"
    assert adam.relative_residual < 0.05
    report = adam.report()
    assert report["solver"]["damping"] == "1.0" and report["oldExamples"] == len(old)
    assert all(not isinstance(v, float) for v in report.values())  # canonical JSON takes no floats


def test_removal_moves_forget_predictions_towards_a_warm_started_retrain(setup) -> None:  # type: ignore[no-untyped-def]
    engine, records, examples, trained, old = setup
    keep = [e for r, e in zip(records, examples, strict=True) if r.subject_id not in FORGET]
    solution = influence_update(engine, trained.lora, examples, old, [],
                                SolverSettings(solver="cg", curvature="ggn", damping=0.1, steps=100, tolerance=1e-4))
    updated = {k: v + solution.delta[k] for k, v in trained.lora.items()}
    default = influence_update(engine, trained.lora, examples, old, [], SolverSettings())
    by_default = {k: v + default.delta[k] for k, v in trained.lora.items()}
    # what the influence function approximates: training continued from the adapter without the
    # records (full-batch Adam, so the reference carries no mini-batch noise)
    warm = Engine(load_base("tiny"), replace(engine.config, lr=0.01, batch_size=len(keep)))
    start = TrainingState(lora=trained.lora, optimizer=None, scheduler=None, rng=trained.rng, step=0)
    retrained = warm.train(start, keep, 20 * len(keep), "warm-start")

    def p_forget(lora: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tensor(engine.p_yes(lora, [e.prompt_ids for e in old]))

    before, after, reference = p_forget(trained.lora), p_forget(updated), p_forget(retrained.lora)
    assert reference.mean() < before.mean() - 0.05  # the reference really moved
    assert (after - reference).abs().mean() < (before - reference).abs().mean() - 0.01
    assert after.mean() < before.mean()
    # the defaults (factored Fisher, closed form, damping by the rule) close part of the gap too;
    # on this 2-layer model the Yes/No tokens hold under 1 % of the mass, so the rest of the
    # Fisher is one drawn token per example (SmolLM2 at seed scale: docs/benchmarks)
    defaulted = p_forget(by_default)
    assert (defaulted - reference).abs().mean() < (before - reference).abs().mean()
    assert defaulted.mean() < before.mean() - 0.05


def test_response_correction_moves_towards_the_new_answer(setup) -> None:  # type: ignore[no-untyped-def]
    engine, records, examples, trained, old = setup
    record = next(r for r in records if r.subject_id in FORGET)
    corrected = engine.encode([replace(record, answer="No")])
    as_trained = [e for e in examples if e.record_id == record.record_id]
    solution = influence_update(engine, trained.lora, examples, as_trained, corrected,
                                SolverSettings(solver="cg", curvature="ggn", damping=1.0, steps=100, tolerance=1e-4))
    updated = {k: v + solution.delta[k] for k, v in trained.lora.items()}
    before, after = (engine.p_yes(lora, [as_trained[0].prompt_ids])[0] for lora in (trained.lora, updated))
    assert after < before - 1e-3
    assert solution.added == solution.removed == 1


def test_negative_curvature_and_bad_settings_are_refused(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, old = setup
    with pytest.raises(BadInput, match="negative curvature.*use curvature fisher \\(the default\\) or ggn"):  # H is indefinite
        influence_update(engine, trained.lora, examples[:16], old[:4], [],
                         SolverSettings(solver="cg", curvature="hessian", damping=0.0, steps=200))
    with pytest.raises(BadInput, match="unknown solver"):
        SolverSettings(solver="lbfgs")
    with pytest.raises(BadInput, match="unknown curvature"):
        SolverSettings(curvature="kfac")
    with pytest.raises(BadInput, match="direct solver does not take curvature ggn"):
        SolverSettings(curvature="ggn")
    with pytest.raises(BadInput, match="adam solver does not take curvature fisher"):
        SolverSettings(solver="adam")
    with eager_attention(engine):
        q = Quadratic(engine, trained.lora, examples, damping=0.0)
        with pytest.raises(BadInput, match="positive damping"):
            solve_adam(q, q.b(old, []), SolverSettings(solver="adam", curvature="ggn", damping=0.0))


def test_gauss_newton_product_is_jt_hout_j_and_positive_semi_definite(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, _ = setup
    part = examples[:6]
    with eager_attention(engine):
        q = Quadratic(engine, trained.lora, examples, damping=0.0, curvature="ggn")
        v = torch.randn(sum(p.numel() for p in q.params), generator=torch.Generator().manual_seed(1))
        gv = q.product(v, part)

        # explicitly: J·v by central differences of the answer logits, H_out = diag(p) - ppᵀ per
        # answer token, then Jᵀ by an ordinary backward pass; mean over the answer tokens
        def logits(shift: float) -> torch.Tensor:
            with torch.no_grad():
                for p, x in zip(q.params, torch.split(shift * v, [p.numel() for p in q.params]), strict=True):
                    p.add_(x.view_as(p))
                out = engine.answer_logits(part)[0]
                for p, x in zip(q.params, torch.split(shift * v, [p.numel() for p in q.params]), strict=True):
                    p.sub_(x.view_as(p))
            return out

        eps = 1e-3
        jv = (logits(eps) - logits(-eps)) / (2 * eps)
        z, _ = engine.answer_logits(part)
        prob = torch.softmax(z.detach(), dim=-1)
        h_jv = torch.stack([(torch.diag(p) - torch.outer(p, p)) @ row for p, row in zip(prob, jv, strict=True)])
        explicit = q._flat(torch.autograd.grad(z, q.params, grad_outputs=h_jv)) / len(z)

        u = torch.randn(v.shape, generator=torch.Generator().manual_seed(2))
        gu = q.product(u, part)
    assert (gv - explicit).norm() / gv.norm() < 1e-2
    # positive semi-definite and symmetric (where the exact Hessian is indefinite here)
    assert float(v @ gv) > 0 and float(u @ gu) > 0
    assert abs(float(u @ gv) - float(v @ gu)) < 1e-4 * float(gv.norm() * u.norm())


def test_fisher_over_every_token_is_the_gauss_newton_product(setup) -> None:  # type: ignore[no-untyped-def]
    """Σ_y p_y g_y g_yᵀ over the whole vocabulary is Jᵀ H_out J (the identity the factored form rests on)."""
    engine, _, examples, trained, _ = setup
    part = examples[:2]
    with eager_attention(engine):
        ggn = Quadratic(engine, trained.lora, examples, damping=0.0, curvature="ggn")
        vocab = engine.base.model.config.vocab_size
        fisher = Quadratic(engine, trained.lora, examples, damping=0.0, curvature="fisher", sample=part,
                           fisher_tokens=vocab)
        v = torch.randn(sum(p.numel() for p in ggn.params), generator=torch.Generator().manual_seed(3))
        exact, factored = ggn.product(v, part), fisher.product(v)
    assert (exact - factored).norm() / exact.norm() < 1e-4
    assert fisher.fisher_mass > 0.999 and fisher.factors.shape[1] == vocab * len(part)


def test_defaults_solve_the_factored_system_exactly_with_the_stated_damping(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, old = setup
    settings = SolverSettings()
    assert (settings.solver, settings.curvature, settings.damping) == ("direct", "fisher", None)
    solution = influence_update(engine, trained.lora, examples, old, [], settings)
    assert solution.relative_residual < 1e-5 and solution.hvp_examples == 0
    m = len(examples)
    assert settings.curvature_batch >= m  # the sample is the whole training set here
    # per example: a column for each of the top 2 tokens and one drawn from the rest
    assert solution.gradient_examples == len(old) + 3 * m
    # CG on the same factored system reaches the same δ (Woodbury is the closed form of that solve)
    cg = influence_update(engine, trained.lora, examples, old, [],
                          SolverSettings(solver="cg", curvature="fisher", tolerance=1e-7, steps=500))
    assert (flat(cg.delta) - flat(solution.delta)).norm() / flat(solution.delta).norm() < 1e-3
    with eager_attention(engine):  # the rule: a tenth of the curvature along b
        q = Quadratic(engine, trained.lora, examples, damping=0.0, curvature="fisher")
        b = q.b(old, [])
        along = float(b @ q.product(b) / (b @ b))
    assert math.isclose(solution.damping, 0.1 * along, rel_tol=1e-4)
    report = solution.report()
    assert report["damping"] == f"{solution.damping:.3e}" and "2 most likely tokens" in report["residualDefinition"]
    assert 0 < float(report["fisherTokenMass"]) <= 1
    # the same draws on a second run: a solve is a function of its inputs and the seed
    again = influence_update(engine, trained.lora, examples, old, [], settings)
    assert torch.equal(flat(again.delta), flat(solution.delta))


def test_conjugate_gradients_on_the_gauss_newton_matrix_reach_the_gate(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, examples, trained, old = setup
    settings = SolverSettings(solver="cg", curvature="ggn")
    solution = influence_update(engine, trained.lora, examples, old, [], settings)
    assert solution.relative_residual < settings.tolerance * 1.01 < settings.max_residual
    assert "Gauss-Newton" in solution.report()["residualDefinition"]


def test_batched_fisher_columns_are_the_per_column_backward_passes(setup) -> None:  # type: ignore[no-untyped-def]
    """The factored Fisher's columns come from one batched backward per example: bitwise what a
    backward pass per column gives (the claim `fisher_factors` and the README make)."""
    engine, _, examples, trained, _ = setup
    with eager_attention(engine):
        q = Quadratic(engine, trained.lora, examples, damping=0.0, curvature="ggn")
        batched, _ = q.fisher_factors(examples[:3])
        columns = []
        draws = torch.Generator().manual_seed(q.seed)  # the same draws, in the same order
        for e in examples[:3]:
            log_p = torch.log_softmax(engine.answer_logits([e])[0], dim=-1)
            p = log_p.detach().exp().double()
            for t in range(len(p)):
                top = p[t].topk(q.fisher_tokens).indices.tolist()
                tail = p[t].clone()
                tail[top] = 0
                terms = [(y, float(p[t, y])) for y in top]
                terms.append((int(torch.multinomial(tail / float(tail.sum()), 1, generator=draws)), float(tail.sum())))
                for y, weight in terms:
                    grad = q._flat(torch.autograd.grad(-log_p[t, y], q.params, retain_graph=True))
                    columns.append(grad * math.sqrt(weight / 3))
    assert torch.equal(batched, torch.stack(columns, dim=1))
