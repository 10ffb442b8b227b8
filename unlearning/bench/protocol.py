"""APA's Movie protocol for `erasure bench unlearning --preset seed` (reference §3c–d, §4b).

- Data: TALLRec samples of MovieLens-100K (history 10), all samples sorted by target time, the
  last `window` of them split 8:1:1 chronologically (users overlap across the parts), then
  train / validation / test samples drawn from the three parts by HMAC(record id), the training
  draw balanced over the K subject shards (K shards of n/K, the paper's t = 256 for n = 1024).
- Epochs: chosen once, on validation AUC, by one retrain run scored at every candidate.
- Unlearning cost as APA measures it: exactly one sub-model retrained per request (one
  shard's components from scratch, read off the initial training; retrain: the whole model).
- S3T's deletion capacity: uniform single-record deletions until the first shard, and until
  every shard, has no valid order left, simulated on the trained version's own manifests and
  compared with the coupon-collector expectations (E[all] = mL·H_{mB'}).
- Top-N cached layers against all layers at equal wall-clock, on retrain.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from ledger.errors import BadInput
from unlearning.data import movielens
from unlearning.data.partition import Partition, training_order
from unlearning.data.records import Record

if TYPE_CHECKING:
    from unlearning.data.records import StoredRecord
    from unlearning.training.config import TrainConfig
    from unlearning.training.engine import Engine, Example
    from unlearning.versions.store import ModelVersion

PARTS = (8, 1, 1)  # train : validation : test, chronologically


@dataclass(frozen=True)
class BenchData:
    train: list[Record]
    valid: list[Record]
    test: list[Record]
    explicit_splits: bool  # True: every record's split is its part's (else its subject's)

    @property
    def records(self) -> list[Record]:
        return [*self.train, *self.valid, *self.test]


# --- data ---------------------------------------------------------------------------------------

def target_times(data: movielens.MovieLens) -> dict[str, int]:
    """Record id (`ml100k/USER/ITEM`) -> timestamp of its target rating."""
    return {f"ml100k/{r.user_id}/{r.item_id}": r.timestamp for r in data.ratings}


def chronological_parts(data: movielens.MovieLens, history: int,
                        window: int) -> tuple[list[Record], list[Record], list[Record]]:
    """All samples sorted by target time (record id on ties), the last `window`, cut 8:1:1."""
    when = target_times(data)
    samples = sorted(movielens.build_samples(data, history=history), key=lambda r: (when[r.record_id], r.record_id))
    if len(samples) < window:
        raise BadInput(f"only {len(samples)} samples with a history of {history}, fewer than the window of {window}")
    recent = samples[len(samples) - window:]
    train_end = window * PARTS[0] // sum(PARTS)
    valid_end = train_end + window * PARTS[1] // sum(PARTS)
    return recent[:train_end], recent[train_end:valid_end], recent[valid_end:]


def draw(part: Sequence[Record], n: int, label: str, partition: Partition | None = None,
         shards: int = 1) -> list[Record]:
    """`n` records of a part by HMAC(label, record id), n/shards from each subject shard; in the
    part's (time) order."""
    if n % shards:
        raise BadInput(f"{n} samples do not fall into {shards} equal shards")
    chosen: set[str] = set()
    per_shard: dict[int, int] = defaultdict(int)
    for record in training_order(0, label, part):
        shard = partition.shard(record.subject_id, shards) if partition is not None else 0
        if per_shard[shard] < n // shards:
            per_shard[shard] += 1
            chosen.add(record.record_id)
    if len(chosen) < n:
        raise BadInput(f"{label}: the part holds {len(part)} samples, too few for {n} in {shards} equal shards")
    return [r for r in part if r.record_id in chosen]


def chronological_data(history: int, window: int, sizes: tuple[int, int, int], partition: Partition,
                       shards: int, data: movielens.MovieLens | None = None) -> BenchData:
    train, valid, test = chronological_parts(data or movielens.load(), history, window)
    return BenchData(draw(train, sizes[0], "bench/chronological/train", partition, shards),
                     draw(valid, sizes[1], "bench/chronological/valid"),
                     draw(test, sizes[2], "bench/chronological/test"), explicit_splits=True)


# --- training a stream chunk by chunk (epoch selection, equal wall-clock) ------------------------

def _stream(config: "TrainConfig", examples: Sequence["Example"], label: str) -> Callable[[int], list["Example"]]:
    """The first k examples of whole passes over `examples`, each pass in HMAC(seed, label/pass q) order."""
    passes: list[list[Example]] = []

    def first(k: int) -> list[Example]:
        while examples and sum(map(len, passes)) < k:
            passes.append(training_order(config.seed, f"{label}/pass{len(passes)}", examples))
        return [e for p in passes for e in p][:k]
    return first


def _continue(engine: "Engine", state, chunk: Sequence["Example"], label: str):  # type: ignore[no-untyped-def]
    return engine.train(state, chunk, len(chunk), label) if chunk else state


def select_epochs(config: "TrainConfig", train: Sequence[Record], valid: Sequence[Record], grid: Sequence[float],
                  log: Callable[[str], None] = lambda line: None) -> dict:
    """One retrain run (the config's recipe, its own HMAC data order) scored on the validation
    records at each candidate epoch count; the best validation AUC wins (the fewer epochs on a tie)."""
    from unlearning.evaluation import metrics
    from unlearning.methods.base import samples_for
    from unlearning.operations.build import engine_for

    started = time.perf_counter()
    engine = engine_for(config)
    examples = engine.encode(train)
    stream = _stream(config, examples, "bench/epochs")
    scored = [r for r in valid if r.answer in ("Yes", "No")]
    prompts = [engine.base.encode_prompt(r.prompt) for r in scored]
    labels = [int(r.answer == "Yes") for r in scored]
    state, done, aucs = engine.initial_state(), 0, []
    for epochs in sorted(grid):
        target = samples_for(Fraction(str(epochs)), len(examples))
        state = _continue(engine, state, stream(target)[done:], f"bench/epochs/{epochs}")
        done = target
        aucs.append(metrics(labels, engine.p_yes(state.lora, prompts), [None]).auc)
        log(f"epoch selection: {epochs} epochs, validation AUC {aucs[-1]}")
    return {"grid": sorted(grid), "validation_auc": aucs, "chosen": best_epochs(sorted(grid), aucs),
            "validation": len(scored), "seconds": round(time.perf_counter() - started, 3)}


def best_epochs(grid: Sequence[float], aucs: Sequence[float | None]) -> float:
    """The candidate with the best validation AUC, the fewer epochs on a tie."""
    ranked = [(auc, -epochs) for epochs, auc in zip(grid, aucs, strict=True) if auc is not None]
    if not ranked:
        raise BadInput("the validation records hold a single class: no AUC to choose the epochs by")
    return -max(ranked)[1]


def equal_time(config: "TrainConfig", train: Sequence[Record], test: Sequence[Record], budget_s: float,
               chunk_steps: int = 1) -> dict:
    """An all-layers retrain (otherwise the config's recipe) trained on whole passes over the
    training records, a few steps at a time, until `budget_s` wall seconds are spent; its test AUC."""
    from dataclasses import replace

    from unlearning.evaluation import metrics
    from unlearning.operations.build import engine_for

    engine = engine_for(replace(config, lora_layers="all"))
    examples = engine.encode(train)
    stream = _stream(config, examples, "bench/equal-time")
    state, done, chunk = engine.initial_state(), 0, chunk_steps * config.batch_size
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s:
        state = _continue(engine, state, stream(done + chunk)[done:], f"bench/equal-time/{done}")
        done += chunk
    seconds = time.perf_counter() - started
    scored = [r for r in test if r.answer in ("Yes", "No")]
    p_yes = engine.p_yes(state.lora, [engine.base.encode_prompt(r.prompt) for r in scored])
    evaluation = metrics([int(r.answer == "Yes") for r in scored], p_yes, [None])
    return {"lora_layers": "all", "seconds": round(seconds, 3), "samples": done,
            "epochs": round(done / len(examples), 3), "auc": evaluation.auc}


# --- APA's cost protocol: one sub-model per request ------------------------------------------------

class Stopwatch:
    """A `rich.progress.Progress` stand-in for `train_model`: the wall seconds of every task
    (a component's training, an APA validation column), from its start to its last update."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, float, float]] = []  # (label, started, last update)

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        now = time.perf_counter()
        self.tasks.append((description, now, now))
        return len(self.tasks) - 1

    def update(self, task: int, **_: object) -> None:
        label, started, _last = self.tasks[task]
        self.tasks[task] = (label, started, time.perf_counter())

    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for label, started, last in self.tasks:
            out[label.split(" loss ")[0]] += last - started
        return out


def one_submodel_seconds(version: "ModelVersion", watch: Stopwatch) -> tuple[float, float | None]:
    """APA's unlearning cost of one request (RecEraser's protocol: exactly one sub-model
    retrained): the mean over shards of the training seconds of the shard's components (all its
    slices, orders and stages; one shard: the whole model); and, for APA, the mean seconds of one
    adapter's validation column, which APA recomputes with the adapter (None for the others)."""
    seconds = watch.seconds()
    adapters = [c for c in version.components if c.meta.kind == "adapter"]
    per_shard: dict[int, float] = defaultdict(float)
    for component in adapters:
        per_shard[component.meta.shard or 0] += seconds.get(component.id, 0.0)
    columns = [seconds[f"validation {c.id}"] for c in adapters if f"validation {c.id}" in seconds]
    return sum(per_shard.values()) / max(1, len(per_shard)), (sum(columns) / len(columns) if columns else None)


# --- S3T's deletion capacity -------------------------------------------------------------------------

def _polynomial_power(coefficients: list[Fraction], power: int) -> list[Fraction]:
    out = [Fraction(1)]
    for _ in range(power):
        product = [Fraction(0)] * (len(out) + len(coefficients) - 1)
        for i, a in enumerate(out):
            for j, b in enumerate(coefficients):
                product[i + j] += a * b
        out = product
    return out


def expected_deletions(shards: int, slices: int, first_slices: int) -> tuple[Fraction, Fraction]:
    """Expected uniform single-record deletions (each hitting one of the m·L slices with
    probability 1/(mL)) until (the first shard, every shard) has all of its B' first-position
    slices hit, i.e. no valid order left: a coupon collector (reference §4b).

    With Poisson arrivals, P(a shard survives t) = 1 - (1 - e^{-t/mL})^{B'}, so with u = e^{-t/mL}
    E[first] = mL ∫₀¹ (1 - (1-u)^{B'})^m / u du and E[all] = mL ∫₀¹ (1 - (1-u)^{mB'}) / u du = mL·H_{mB'}
    (exact: the integrands are polynomials)."""
    m, length, b = shards, slices, first_slices
    # 1 - (1-u)^b = u * q(u), q(u) = sum_k C(b, k) (-1)^(k+1) u^(k-1)
    q = [Fraction(math.comb(b, k) * (-1) ** (k + 1)) for k in range(1, b + 1)]
    integrand = [Fraction(0)] * (m - 1) + _polynomial_power(q, m)  # u^(m-1) q(u)^m
    first = m * length * sum(c / (i + 1) for i, c in enumerate(integrand))
    every = m * length * sum(Fraction(1, k) for k in range(1, m * b + 1))
    return first, every


def expected_deletions_for(first_slices: Sequence[Sequence[float]], steps: int = 20_000) -> tuple[float, float]:
    """The same expectations for unequal slices: `first_slices[s]` holds the probability that a
    deletion hits each of shard s's first-position slices (the slice cut is a keyed hash, so the
    slices of a shard differ in size). Numerically, with Poisson arrivals:
    E[first] = ∫ Π_s (1 - Π_{j ∈ F_s} (1 - e^{-p_j t})) dt, E[every] = ∫ (1 - Π_{s, j} (1 - e^{-p_j t})) dt."""
    shards = [[p for p in ps if p > 0] for ps in first_slices]
    if not shards or any(not ps for ps in shards):
        raise BadInput("every shard needs a first-position slice with records")
    every_p = [p for ps in shards for p in ps]
    horizon = (math.log(len(every_p)) + 30) / min(every_p)  # the integrands are below e^-30 beyond

    def dead(ps: Sequence[float], t: float) -> float:
        return math.prod(1 - math.exp(-p * t) for p in ps)

    h = horizon / steps
    first = every = 0.0
    for i in range(steps + 1):
        t, weight = i * h, (0.5 if i in (0, steps) else 1.0) * h
        first += weight * math.prod(1 - dead(ps, t) for ps in shards)
        every += weight * (1 - dead(every_p, t))
    return first, every


def simulate_deletions(version: "ModelVersion", train: Sequence["StoredRecord"], trials: int) -> dict:
    """Uniform random single-record deletions (without replacement, HMAC(trial, record id) order)
    on the trained S3T version: each truncates its shard's orders at the first stage whose
    manifest holds the record (as `s3t.orders.truncate` does); counted until the first shard, and
    until every shard, has no valid order left. Returned beside the coupon-collector expectations."""
    from unlearning.methods.s3t.orders import order_state, stage_id

    state = order_state(version.meta)
    manifests = {c.id: c.manifest() for c in version.components}
    hits: dict[str, tuple[int, list[int]]] = {}  # record id -> (shard, per order: first stage holding it)
    for record in train:
        for shard in state.shards:
            stages = [next((t for t in range(state.slices)
                            if manifests[stage_id(shard.shard, o, t)].contains(record.commitment)), state.slices)
                      for o in range(len(shard.orders))]
            if min(stages) < state.slices:
                hits[record.record_id] = (shard.shard, stages)
                break
    shards = {s.shard for s in state.shards}
    firsts, everys = [], []
    for trial in range(trials):
        prefixes = {s.shard: list(s.valid_prefix) for s in state.shards}
        exhausted: set[int] = set()
        for count, record in enumerate(training_order(trial, "bench/s3t-deletions", train), start=1):
            if record.record_id not in hits:
                continue
            shard, stages = hits[record.record_id]
            prefixes[shard] = [min(p, t) for p, t in zip(prefixes[shard], stages, strict=True)]
            if not any(prefixes[shard]) and shard not in exhausted:
                exhausted.add(shard)
                if len(exhausted) == 1:
                    firsts.append(count)
                if exhausted == shards:
                    everys.append(count)
                    break
    orders = state.shards[0].orders if state.shards else ()
    first_slices = len({o[0] for o in orders})
    formula_first, formula_all = expected_deletions(len(shards), state.slices, first_slices)
    # the shares of these slices: per shard, one order per distinct first slice, its stage-0 records
    shares = [[sum(1 for s, stages in hits.values() if s == shard.shard and stages[o] == 0) / len(train)
               for o in sorted({order[0]: o for o, order in reversed(list(enumerate(shard.orders)))}.values())]
              for shard in state.shards]
    sized_first, sized_all = expected_deletions_for(shares)
    return {"trials": trials, "shards": len(shards), "slices": state.slices, "orders": len(orders),
            "first_position_slices": first_slices,
            "measured_first": _mean(firsts), "formula_first": float(formula_first), "sized_first": sized_first,
            "measured_all": _mean(everys), "formula_all": float(formula_all), "sized_all": sized_all}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
