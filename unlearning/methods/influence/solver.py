"""Influence-function updates of a trained LoRA adapter (LLMEraser-style, design §5 `influence`).

For an adapter Θ̂ trained on D, removing or correcting the samples S_old (replacing them with
S_new, empty for a removal) moves the minimiser of the empirical risk R by, to first order,

    δ = (H + λI)⁻¹ b,   b = (1/n) (Σ_{z ∈ S_old} ∇L(z; Θ̂) − Σ_{z ∈ S_new} ∇L(z; Θ̂)),

with H = ∇²R(Θ̂) over D as trained and λ a damping term (H of a non-convex loss is at best
positive semi-definite). R is the engine's loss on the whole set: the token-mean answer
cross-entropy, so L(z) sums z's answer-token losses and n counts D's answer tokens; with
single-token answers (TALLRec's Yes/No) n = |D| and b is exactly the formula above.

δ minimises the quadratic F(δ) = ½ δᵀ(H + λI)δ − bᵀδ, whose gradient (H + λI)δ − b is
computed exactly: H·δ by double back-propagation (Pearlmutter) through the LoRA parameters,
never by a surrogate with a detached H·δ (the released LLMEraser code's variant, whose fixed
point is (½H + λI)⁻¹b). Two solvers share that operator:

- `adam` (the paper's): Adam on F from δ = 0, each step's H·δ on a fresh mini-batch of D;
  memory O(p), cost T mini-batch HVPs. Its step size is relative to the scale of the answer
  (see `SolverSettings.lr`), with a cosine decay so the mini-batch noise averages out;
- `cg`: conjugate gradients on full-batch HVPs, the reference for small adapters.

Gradients are taken in evaluation mode (no LoRA dropout) on the fixed prompts, with eager
attention (PyTorch has no double backward for the fused CPU attention kernels).
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

SOLVERS = ("adam", "cg")


@dataclass(frozen=True)
class SolverSettings:
    solver: str = "adam"
    # λ: the tiny test model's Hessian has eigenvalues down to about -0.1 (measured by Lanczos)
    damping: float = 0.1
    steps: int = 200  # Adam steps, or at most this many CG iterations
    # Adam: the step size as a fraction of the RMS coordinate of b/λ (the largest δ can be
    # when H is positive semi-definite), so one setting fits adapters of any gradient scale
    lr: float = 1.0
    batch_size: int = 16  # examples per mini-batch HVP (Adam)
    tolerance: float = 1e-6  # CG: stop once the relative residual is below this
    seed: int = 0  # mini-batch sampling
    # a solve that leaves more than this relative residual (δ = 0 leaves 1) is not an update
    max_residual: float = 0.5

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise BadInput(f"unknown solver {self.solver!r} (one of {', '.join(SOLVERS)})")
        if (self.damping < 0 or self.steps < 1 or self.lr <= 0 or self.batch_size < 1 or self.tolerance <= 0
                or self.max_residual <= 0):
            raise BadInput("damping must be >= 0; steps, lr, batch_size, tolerance and max_residual must be positive")

    def to_json(self) -> dict:
        """Float-free (certificates are canonical JSON): numbers that may be fractional as strings."""
        return {k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Solution:
    delta: dict[str, torch.Tensor]  # peft adapter key -> δ, same shapes as the adapter
    relative_residual: float  # ‖(H + λI)δ − b‖ / ‖b‖, full-batch H over D
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
            "residualDefinition": "||(H + damping I) delta - b|| / ||b||, full-batch Hessian over the trained set",
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
    """F(δ) = ½ δᵀ(H + λI)δ − bᵀδ for one adapter, with H over `trained` at weights `lora`.

    Vectors are flat float32 tensors over the trainable LoRA parameters (in model order).
    Use inside `eager_attention(engine)`, after which the engine's model holds `lora`.
    Sums run over `chunk` examples per pass: a double backward keeps the whole graph of a chunk
    (SmolLM2 with eager attention: about 0.7 GB per 300-token example; 32 at once ran a 24 GB
    machine out of memory).
    """

    def __init__(self, engine: Engine, lora: dict[str, torch.Tensor], trained: Sequence[Example],
                 damping: float, chunk: int = 4):
        if not trained:
            raise BadInput("the adapter's training set is empty: nothing to compute a Hessian on")
        engine.load_lora(lora)
        self.engine, self.damping, self.chunk = engine, damping, chunk
        named = [(n, p) for n, p in engine.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        adapter = engine.model.active_adapter
        self.keys = [n.replace(f".{adapter}.", ".") for n, _ in named]  # peft's state-dict names
        if set(self.keys) != set(lora):
            raise BadInput("the adapter's weights do not match the engine's trainable LoRA parameters")
        self.trained = list(trained)
        self.tokens = sum(len(e.answer_ids) for e in self.trained)  # n
        self.hvp_examples = 0
        self.gradient_examples = 0

    def _chunks(self, examples: Sequence[Example]) -> Iterator[tuple[list[Example], int]]:
        for i in range(0, len(examples), self.chunk):
            part = list(examples[i:i + self.chunk])
            yield part, sum(len(e.answer_ids) for e in part)

    def _flat(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors]).float()

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

    def hvp(self, v: torch.Tensor, examples: Sequence[Example] | None = None) -> torch.Tensor:
        """(H_M + λI)·v with H_M the Hessian of the token-mean loss over `examples` (default D)."""
        examples = self.trained if examples is None else examples
        vs = torch.split(v, [p.numel() for p in self.params])
        vs = [x.view_as(p).to(p.dtype) for x, p in zip(vs, self.params, strict=True)]
        out = torch.zeros_like(v)
        total = 0
        for part, tokens in self._chunks(examples):
            loss = self.engine._answer_loss(part) * tokens
            grads = torch.autograd.grad(loss, self.params, create_graph=True)
            dot = sum((g * x).sum() for g, x in zip(grads, vs, strict=True))
            out += self._flat(torch.autograd.grad(dot, self.params))
            total += tokens
            self.hvp_examples += len(part)
        return out / total + self.damping * v

    def residual(self, delta: torch.Tensor, b: torch.Tensor) -> float:
        """‖(H + λI)δ − b‖ / ‖b‖ with the full-batch H."""
        return float((self.hvp(delta) - b).norm() / b.norm())

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(v.detach().cpu(), [p.numel() for p in self.params])
        return {k: x.view(p.shape).clone() for k, x, p in zip(self.keys, parts, self.params, strict=True)}


def solve_adam(q: Quadratic, b: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """Adam from δ = 0 on F, each gradient (H_M + λI)δ − b with a fresh mini-batch M of D."""
    if not settings.damping > 0:
        raise BadInput("the adam solver needs a positive damping (its step size is relative to b/damping)")
    lr = settings.lr * float(b.norm()) / (settings.damping * math.sqrt(b.numel()))
    delta = torch.zeros_like(b)
    optimizer = torch.optim.Adam([delta], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(q.trained)
    for _ in range(settings.steps):
        batch = [q.trained[i] for i in torch.randperm(n, generator=generator)[:settings.batch_size].tolist()]
        delta.grad = q.hvp(delta, batch) - b
        optimizer.step()
        schedule.step()
    return delta


def solve_cg(q: Quadratic, b: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """Conjugate gradients on (H + λI)δ = b with full-batch HVPs, from δ = 0."""
    delta = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (settings.tolerance * b.norm()) ** 2
    for _ in range(settings.steps):
        if rr <= stop:
            break
        hp = q.hvp(p)
        curvature = p @ hp
        if not curvature > 0:
            raise BadInput(f"conjugate gradients met negative curvature (pᵀ(H+λI)p = {float(curvature):.2e}): "
                           f"the damped Hessian is not positive definite; raise the damping above {settings.damping}")
        alpha = rr / curvature
        delta += alpha * p
        r -= alpha * hp
        rr, previous = r @ r, rr
        p = r + (rr / previous) * p
    return delta


def influence_update(engine: Engine, lora: dict[str, torch.Tensor], trained: Sequence[Example],
                     old: Sequence[Example], new: Sequence[Example], settings: SolverSettings) -> Solution:
    """δ for replacing `old` (a subset of `trained`, the adapter's training set) by `new`."""
    start = time.perf_counter()
    with eager_attention(engine):
        q = Quadratic(engine, lora, trained, settings.damping)
        b = q.b(old, new)
        if not b.norm() > 0:
            raise BadInput("the gradient difference b is zero: the update would change nothing")
        delta = (solve_adam if settings.solver == "adam" else solve_cg)(q, b, settings)
        residual = q.residual(delta, b)
    return Solution(delta=q.unflatten(delta), relative_residual=residual, b_norm=float(b.norm()),
                    delta_norm=float(delta.norm()), hvp_examples=q.hvp_examples, gradient_examples=q.gradient_examples,
                    seconds=time.perf_counter() - start, settings=settings, trained=len(trained), removed=len(old),
                    added=len(new))
