"""Influence-function updates of a trained LoRA adapter (LLMEraser-style, design §5 `influence`).

For an adapter Θ̂ trained on D, removing or correcting the samples S_old (replacing them with
S_new, empty for a removal) moves the minimiser of the empirical risk R by, to first order,

    δ = (C + λI)⁻¹ b,   b = (1/n) (Σ_{z ∈ S_old} ∇L(z; Θ̂) − Σ_{z ∈ S_new} ∇L(z; Θ̂)),

with C the curvature of R at Θ̂ and λ a damping term. R is the engine's loss on the whole set:
the token-mean answer cross-entropy, so L(z) sums z's answer-token losses and n counts D's
answer tokens; with single-token answers (TALLRec's Yes/No) n = |D|.

The curvature (`SolverSettings.curvature`):

- `fisher` (default): the Gauss–Newton matrix in factored form. For the softmax cross-entropy,
  H_out = diag(p) − ppᵀ = Σ_y p_y (e_y − p)(e_y − p)ᵀ, so Jᵀ H_out J = Σ_y p_y g_y g_yᵀ with
  g_y = ∇(−log p_y): the model's own (true) Fisher. The sum over y is taken exactly over the
  `fisher_tokens` most likely tokens at each answer position (Yes and No for TALLRec, which hold
  most of a tuned model's mass: reported as `fisherTokenMass`) and estimated without bias over
  the rest by one token drawn from them. C = G Gᵀ with one column √(weight / T)·g_y per
  (answer token, y) of the sample, T answer tokens: one backward pass per column. PSD by
  construction, and the damped system is solved in closed form (`direct`).
- `ggn`: the whole Gauss–Newton matrix Jᵀ H_out J as a matrix-free product (J the Jacobian of
  the answer logits in the LoRA parameters, H_out = diag(p) − ppᵀ the cross-entropy's Hessian in
  the logits), for `cg`. Positive semi-definite like `fisher`, so (C + λI) is positive definite
  for any λ > 0 and conjugate gradients converge; each product costs about three backward
  passes per example, and CG takes tens of products. The true Hessian of an adapter that has not
  converged is indefinite (eigenvalues −5.6…13.2 measured on a SISA shard): there the quadratic
  is unbounded below and no solver can meet a residual gate.
- `hessian`: the exact Hessian (Pearlmutter's double back-propagation), kept as an option.

Every product is exact for its C, never a surrogate with a detached C·δ (the released LLMEraser
code's variant, whose fixed point is (½H + λI)⁻¹b). C is the mean over a fixed sample of D
(`curvature_batch` examples drawn by the seed; all of D when None), so the sample, not |D|,
sets the price of a solve.

Damping (`damping=None`, the default): λ = `DAMPING_RATIO` × bᵀCb / bᵀb, a tenth of the
curvature along the update's own direction. It scales with the adapter's loss (no setting that
fits one model and breaks another) and caps the condition number of the system in that
direction at 11.

Three solvers:

- `direct` (default, `fisher` only): Woodbury's identity, (λI + GGᵀ)⁻¹b = (b − G(λI + GᵀG)⁻¹Gᵀb)/λ,
  a solve in the M×M Gram matrix of the M columns (float64): exact up to rounding, no iterations,
  and its whole cost is the M backward passes that build G;
- `cg`: conjugate gradients from δ = 0 on the sampled curvature until the relative
  residual is below `tolerance` or after `steps` products;
- `adam` (the paper's): Adam on F(δ) = ½ δᵀ(C + λI)δ − bᵀδ, each step's C·δ on a fresh
  mini-batch of `batch_size` examples of D.

The relative residual ‖(C + λI)δ − b‖ / ‖b‖ is measured on the curvature sample (the system
solved; δ = 0 leaves 1). Gradients are taken in evaluation mode (no LoRA dropout) on the fixed
prompts, with eager attention (PyTorch has no double backward for the fused CPU attention kernels).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from ledger.errors import BadInput
from unlearning.training.engine import Engine, Example

SOLVERS = ("direct", "cg", "adam")
CURVATURE_NAMES = {"fisher": "Fisher (Gauss-Newton) matrix",
                    "ggn": "Gauss-Newton matrix", "hessian": "Hessian"}
CURVATURES = tuple(CURVATURE_NAMES)
DAMPING_RATIO = 0.1  # damping=None: λ = DAMPING_RATIO × bᵀCb / bᵀb


@dataclass(frozen=True)
class SolverSettings:
    solver: str = "direct"
    curvature: str = "fisher"
    damping: float | None = None  # λ; None: DAMPING_RATIO × the curvature along b
    steps: int = 50  # CG products at most, or Adam steps
    curvature_batch: int | None = 64  # examples of D the curvature is averaged over (None: all of D)
    fisher_tokens: int = 2  # fisher: the most likely tokens y kept per answer position
    # Adam: the step size as a fraction of the RMS coordinate of b/λ (the largest δ can be
    # when C is positive semi-definite), so one setting fits adapters of any gradient scale
    lr: float = 1.0
    batch_size: int = 16  # examples per mini-batch product (Adam)
    tolerance: float = 1e-3  # CG: stop once the relative residual is below this
    seed: int = 0  # the curvature sample and Adam's mini-batches
    # a solve that leaves more than this relative residual (δ = 0 leaves 1) is not an update
    max_residual: float = 0.5

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise BadInput(f"unknown solver {self.solver!r} (one of {', '.join(SOLVERS)})")
        if self.curvature not in CURVATURES:
            raise BadInput(f"unknown curvature {self.curvature!r} (one of {', '.join(CURVATURES)})")
        if (self.solver == "direct") != (self.curvature == "fisher") and self.solver != "cg":
            raise BadInput(f"the {self.solver} solver does not take curvature {self.curvature}: direct solves the "
                           "factored fisher (the default); adam takes ggn or hessian; cg takes any")
        if ((self.damping is not None and self.damping < 0) or self.steps < 1 or self.lr <= 0 or self.batch_size < 1
                or self.tolerance <= 0 or self.max_residual <= 0 or self.fisher_tokens < 1
                or (self.curvature_batch is not None and self.curvature_batch < 1)):
            raise BadInput("damping must be >= 0; steps, lr, batch_size, curvature_batch, fisher_tokens, tolerance "
                           "and max_residual must be positive")

    def to_json(self) -> dict:
        """Float-free (certificates are canonical JSON): numbers that may be fractional as strings."""
        return {k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Solution:
    delta: dict[str, torch.Tensor]  # peft adapter key -> δ, same shapes as the adapter
    relative_residual: float  # ‖(C + λI)δ − b‖ / ‖b‖, C over the curvature sample
    damping: float  # λ as used (the rule's value when settings.damping is None)
    curvature_examples: int  # examples C is averaged over
    fisher_mass: float | None  # fisher: mean probability of the kept tokens (1: C is the exact GGN)
    b_norm: float
    delta_norm: float
    hvp_examples: int  # examples through a double-backward pass (hardware-neutral cost)
    gradient_examples: int  # examples through a single backward pass (for b)
    seconds: float
    settings: SolverSettings
    trained: int  # |D|
    removed: int  # |S_old|
    added: int  # |S_new|

    def report(self) -> dict:
        """The solver facts a certificate states (float-free: decimals as strings)."""
        return {
            "solver": self.settings.to_json(),
            "relativeResidual": f"{self.relative_residual:.3e}",
            "residualDefinition": (f"||(C + damping I) delta - b|| / ||b||, C the {CURVATURE_NAMES[self.settings.curvature]} "
                                   + (f" over the {self.settings.fisher_tokens} most likely tokens per answer position"
                                      if self.settings.curvature == "fisher" else "")
                                   + f", averaged over {self.curvature_examples} of the {self.trained} trained examples"),
            "damping": f"{self.damping:.3e}",
            **({"fisherTokenMass": f"{self.fisher_mass:.4f}"} if self.fisher_mass is not None else {}),
            "bNorm": f"{self.b_norm:.3e}",
            "deltaNorm": f"{self.delta_norm:.3e}",
            "hvpExamples": self.hvp_examples,
            "gradientExamples": self.gradient_examples,
            "seconds": f"{self.seconds:.3f}",
            "trainedExamples": self.trained,
            "oldExamples": self.removed,
            "newExamples": self.added,
        }


@contextmanager
def eager_attention(engine: Engine) -> Iterator[None]:
    """Eager attention and evaluation mode for the duration (both restored afterwards)."""
    model = engine.base.model
    before, training = model.config._attn_implementation, engine.model.training
    model.set_attn_implementation("eager")
    engine.model.eval()
    try:
        yield
    finally:
        model.set_attn_implementation(before)
        engine.model.train(training)


class Quadratic:
    """F(δ) = ½ δᵀ(C + λI)δ − bᵀδ for one adapter, C the curvature over `sample` at weights `lora`.

    Vectors are flat float32 tensors over the trainable LoRA parameters (in model order).
    Use inside `eager_attention(engine)`, after which the engine's model holds `lora`.
    Sums run over `chunk` examples per pass: a double backward keeps the whole graph of a chunk
    (SmolLM2 with eager attention: about 0.7 GB per 300-token example; 32 at once ran a 24 GB
    machine out of memory).
    """

    def __init__(self, engine: Engine, lora: dict[str, torch.Tensor], trained: Sequence[Example],
                 damping: float, curvature: str = "hessian", sample: Sequence[Example] | None = None, chunk: int = 4,
                 fisher_tokens: int = 2, seed: int = 0):
        if not trained:
            raise BadInput("the adapter's training set is empty: nothing to compute a curvature on")
        engine.load_lora(lora)
        self.engine, self.damping, self.curvature, self.chunk = engine, damping, curvature, chunk
        named = [(n, p) for n, p in engine.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        adapter = engine.model.active_adapter
        self.keys = [n.replace(f".{adapter}.", ".") for n, _ in named]  # peft's state-dict names
        if set(self.keys) != set(lora):
            raise BadInput("the adapter's weights do not match the engine's trainable LoRA parameters")
        self.trained = list(trained)
        self.sample = list(trained if sample is None else sample)
        self.tokens = sum(len(e.answer_ids) for e in self.trained)  # n
        self.hvp_examples = 0
        self.gradient_examples = 0
        self.fisher_tokens, self.seed = fisher_tokens, seed
        self.factors: torch.Tensor | None = None  # fisher: G over the sample, C = G Gᵀ
        self.fisher_mass: float | None = None  # fisher: mean probability of the kept tokens
        if curvature == "fisher":
            self.factors, self.fisher_mass = self.fisher_factors(self.sample)

    def _chunks(self, examples: Sequence[Example]) -> Iterator[tuple[list[Example], int]]:
        for i in range(0, len(examples), self.chunk):
            part = list(examples[i:i + self.chunk])
            yield part, sum(len(e.answer_ids) for e in part)

    def _flat(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors]).float()

    def _shaped(self, v: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(v, [p.numel() for p in self.params])
        return [x.view_as(p).to(p.dtype) for x, p in zip(parts, self.params, strict=True)]

    def token_loss_gradient(self, examples: Sequence[Example]) -> torch.Tensor:
        """Σ_{z ∈ examples} ∇L(z) (L = sum of z's answer-token losses) at the adapter's weights."""
        total = torch.zeros(sum(p.numel() for p in self.params), device=self.params[0].device)
        for part, tokens in self._chunks(examples):
            loss = self.engine._answer_loss(part) * tokens  # the engine's token-mean loss, unscaled
            total += self._flat(torch.autograd.grad(loss, self.params))
            self.gradient_examples += len(part)
        return total

    def b(self, old: Sequence[Example], new: Sequence[Example]) -> torch.Tensor:
        b = self.token_loss_gradient(old)
        if new:
            b -= self.token_loss_gradient(new)
        return b / self.tokens

    def product(self, v: torch.Tensor, examples: Sequence[Example] | None = None) -> torch.Tensor:
        """(C_M + λI)·v with C_M the curvature of the token-mean loss over `examples` (default: the sample)."""
        if self.curvature == "fisher":
            g = self.factors if examples is None else self.fisher_factors(examples)[0]
            return g @ (g.T @ v) + self.damping * v
        examples = self.sample if examples is None else examples
        vs = self._shaped(v)
        out = torch.zeros_like(v)
        total = 0
        for part, tokens in self._chunks(examples):
            out += self._flat(self._ggn_sum(part, vs) if self.curvature == "ggn" else self._hessian_sum(part, vs))
            total += tokens
            self.hvp_examples += len(part)
        return out / total + self.damping * v

    def fisher_factors(self, examples: Sequence[Example]) -> tuple[torch.Tensor, float]:
        """(G, mass): G Gᵀ the Fisher of the token-mean loss over `examples` and the mean
        probability of the tokens taken exactly. Per answer position (T in all): a column
        √(p_y / T)·∇(−log p_y) for each of the `fisher_tokens` most likely tokens y, and one for a
        token drawn (by the seed) from the others, weighted by their total probability. One
        example per forward pass, its columns in one batched backward: each runs through its
        example alone."""
        columns, kept = [], []
        tokens = sum(len(e.answer_ids) for e in examples)
        draws = torch.Generator().manual_seed(self.seed)
        for e in examples:
            logits, _ = self.engine.answer_logits([e])
            log_p = torch.log_softmax(logits, dim=-1)
            p = log_p.detach().exp().double().cpu()
            k = min(self.fisher_tokens, p.shape[-1] - 1)
            terms: list[tuple[int, int, float]] = []  # (answer position, token y, weight)
            for t in range(len(p)):
                top = p[t].topk(k).indices.tolist()
                tail = p[t].clone()
                tail[top] = 0
                tail_mass = float(tail.sum())
                # the top k exactly; the rest by one token drawn from it, weighted by its mass
                # (unbiased: E[g gᵀ] over the draw is the tail's share of the sum)
                terms += [(t, y, float(p[t, y])) for y in top]
                if tail_mass > 0:
                    terms.append((t, int(torch.multinomial(tail / tail_mass, 1, generator=draws)), tail_mass))
                kept.append(1 - tail_mass)
            # the example's columns in one batched backward pass (vmap over the seeds; the same
            # numbers as one backward per column, in a fraction of the time)
            chosen = -log_p[[t for t, _, _ in terms], [y for _, y, _ in terms]]
            grads = torch.autograd.grad(chosen, self.params, grad_outputs=torch.eye(len(terms), device=chosen.device),
                                        is_grads_batched=True)
            flat = torch.cat([g.reshape(len(terms), -1) for g in grads], dim=1).float()
            scale = torch.tensor([math.sqrt(w / tokens) for _, _, w in terms], device=flat.device)
            columns.append((flat * scale[:, None]).T)
            self.gradient_examples += len(terms)
        return torch.cat(columns, dim=1), sum(kept) / len(kept)

    def _hessian_sum(self, part: list[Example], vs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """∇²(Σ answer-token losses)·v by double back-propagation."""
        loss = self.engine._answer_loss(part) * sum(len(e.answer_ids) for e in part)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        dot = sum((g * x).sum() for g, x in zip(grads, vs, strict=True))
        return torch.autograd.grad(dot, self.params)

    def _ggn_sum(self, part: list[Example], vs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Jᵀ H_out J·v for the summed answer-token cross-entropy. J·v comes from the double-vjp
        trick (Jᵀu is linear in u, so its derivative in u along v is J·v); H_out = diag(p) − ppᵀ."""
        logits, _ = self.engine.answer_logits(part)
        u = torch.zeros_like(logits, requires_grad=True)
        jt_u = torch.autograd.grad(logits, self.params, grad_outputs=u, create_graph=True)
        jv = torch.autograd.grad(jt_u, u, grad_outputs=vs, retain_graph=True)[0]
        p = torch.softmax(logits.detach(), dim=-1)
        h_jv = p * jv - p * (p * jv).sum(dim=-1, keepdim=True)
        return torch.autograd.grad(logits, self.params, grad_outputs=h_jv)

    def residual(self, delta: torch.Tensor, b: torch.Tensor) -> float:
        """‖(C + λI)δ − b‖ / ‖b‖ with C over the curvature sample."""
        return float((self.product(delta) - b).norm() / b.norm())

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(v.detach().cpu(), [p.numel() for p in self.params])
        return {k: x.view(p.shape).clone() for k, x, p in zip(self.keys, parts, self.params, strict=True)}


def solve_adam(q: Quadratic, b: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """Adam from δ = 0 on F, each gradient (C_M + λI)δ − b with a fresh mini-batch M of D."""
    if not q.damping > 0:
        raise BadInput("the adam solver needs a positive damping (its step size is relative to b/damping)")
    lr = settings.lr * float(b.norm()) / (q.damping * math.sqrt(b.numel()))
    delta = torch.zeros_like(b)
    optimizer = torch.optim.Adam([delta], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(q.trained)
    for _ in range(settings.steps):
        batch = [q.trained[i] for i in torch.randperm(n, generator=generator)[:settings.batch_size].tolist()]
        delta.grad = q.product(delta, batch) - b
        optimizer.step()
        schedule.step()
    return delta


def solve_direct(q: Quadratic, b: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """(λI + GGᵀ)⁻¹b by Woodbury's identity: one M×M solve in float64, M the factor columns."""
    if not q.damping > 0:
        raise BadInput("the direct solver needs a positive damping (λI + GGᵀ is singular without it)")
    g, rhs = q.factors.double(), b.double()
    gram = g.T @ g + q.damping * torch.eye(g.shape[1], dtype=torch.float64, device=g.device)
    return ((rhs - g @ torch.linalg.solve(gram, g.T @ rhs)) / q.damping).float()


def solve_cg(q: Quadratic, b: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """Conjugate gradients on (C + λI)δ = b over the curvature sample, from δ = 0."""
    delta = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (settings.tolerance * b.norm()) ** 2
    for _ in range(settings.steps):
        if rr <= stop:
            break
        cp = q.product(p)
        curvature = p @ cp
        if not curvature > 0:
            raise BadInput(f"conjugate gradients met negative curvature (pᵀ(C+λI)p = {float(curvature):.2e}): "
                           f"the damped {CURVATURE_NAMES[q.curvature]} is not positive definite; use curvature fisher (the "
                           f"default) or ggn, or raise the damping above {q.damping:.3g}")
        alpha = rr / curvature
        delta += alpha * p
        r -= alpha * cp
        rr, previous = r @ r, rr
        p = r + (rr / previous) * p
    return delta


SOLVE = {"direct": solve_direct, "cg": solve_cg, "adam": solve_adam}


def curvature_sample(trained: Sequence[Example], settings: SolverSettings) -> list[Example]:
    """The examples C is averaged over: `curvature_batch` of them drawn by the seed (all if fewer)."""
    if settings.curvature_batch is None or settings.curvature_batch >= len(trained):
        return list(trained)
    generator = torch.Generator().manual_seed(settings.seed)
    chosen = sorted(torch.randperm(len(trained), generator=generator)[:settings.curvature_batch].tolist())
    return [trained[i] for i in chosen]


def examples_read(trained: Sequence[Example], settings: SolverSettings) -> list[Example]:
    """The training examples a solve passes through the model: the curvature sample (cg,
    direct), or all of them (Adam draws its mini-batches from the whole set)."""
    return list(trained) if settings.solver == "adam" else curvature_sample(trained, settings)


def auto_damping(q: Quadratic, b: torch.Tensor) -> float:
    """DAMPING_RATIO × bᵀCb / bᵀb: a tenth of the curvature along b (one product)."""
    along = float(b @ (q.product(b) - q.damping * b) / (b @ b))
    if not along > 0:
        raise BadInput(f"the {CURVATURE_NAMES[q.curvature]} has no positive curvature along b ({along:.2e}): "
                       "give --damping explicitly, or use curvature fisher (the default) or ggn")
    return DAMPING_RATIO * along


def influence_update(engine: Engine, lora: dict[str, torch.Tensor], trained: Sequence[Example],
                     old: Sequence[Example], new: Sequence[Example], settings: SolverSettings) -> Solution:
    """δ for replacing `old` (a subset of `trained`, the adapter's training set) by `new`."""
    start = time.perf_counter()
    with eager_attention(engine):
        q = Quadratic(engine, lora, trained, settings.damping or 0.0, settings.curvature,
                      curvature_sample(trained, settings), fisher_tokens=settings.fisher_tokens, seed=settings.seed)
        b = q.b(old, new)
        if not b.norm() > 0:
            raise BadInput("the gradient difference b is zero: the update would change nothing")
        if settings.damping is None:
            q.damping = auto_damping(q, b)
        delta = SOLVE[settings.solver](q, b, settings)
        residual = q.residual(delta, b)
    return Solution(delta=q.unflatten(delta), relative_residual=residual, damping=q.damping,
                    curvature_examples=len(q.sample), fisher_mass=q.fisher_mass, b_norm=float(b.norm()),
                    delta_norm=float(delta.norm()), hvp_examples=q.hvp_examples, gradient_examples=q.gradient_examples,
                    seconds=time.perf_counter() - start, settings=settings, trained=len(trained), removed=len(old),
                    added=len(new))
