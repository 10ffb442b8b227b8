"""`erasure bench unlearning`: retrain, SISA, APA (D, ND), S3T (B=1, B=L) and the approximate
influence update on the same data, base model, LoRA recipe, seeds and erasure requests
(reference §7, design §5).

Per seed, every method trains version 1 in its own workspace (same records, partition key and
recipe; only the method's own settings differ), then runs each workload on a copy of that
workspace through the service's own operations, so the time measured is everything the
method must do for a request:

    receive (ledger entry + crypto-shredding) -> exclude (exact, no training) -> restore

- retrain: no exclusion leaves anything to serve, so compliance comes with the full retrain;
- SISA, APA: the exclusion drops the affected shards; the restore retrains them (SISA from
  the last clean slice checkpoint, APA from scratch plus that adapter's validation column);
- S3T: the exclusion truncates the orders and serves each shard's longest valid prefix; only
  shards with no valid order left are retrained ("retrains forced");
- influence: receive, then one influence update of the trained retrain adapter removing every
  record erased so far (`unlearning.operations.approximate`); never exact, so no compliance time.

Certification and registration are left out: they cost the same for every method, and
`erasure bench forget` times them. Workloads, drawn by HMAC(seed, record id) and identical for
every method: W1 sequential single-record erasures, W2 one batch of 5 % of the training
records, W3 sequential subject erasures (all records of a subject); W4 (`bench_influence`)
corrupts 10 % of the records, trains, and corrects them exactly (retrain) and approximately.
After every step: test AUC, distance to retrain, the erased records' AUC and a loss-based
membership-inference AUC of the erased records against test records.

Preset `seed` follows APA's Movie protocol instead (`unlearning.bench.protocol`): a chronological
split with users across the parts, K shards of 256, epochs chosen once on validation AUC, LoRA on
the top 4 layers from frozen-prefix states computed once for all methods (`shared_prefixes`);
it adds APA's per-request cost (one sub-model retrained), S3T's deletion capacity against the
coupon-collector formula, top-N vs all layers at equal wall-clock, and the issue's targets.

Exactness columns: on the first request of a workload that retrains anything, the last
retrained adapter (its whole lineage) and APA's aggregator are replayed from scratch on the
retained records and must have the same digest; after every S3T exclusion, each truncated
shard's served stage checkpoint must equal its order's last stage with the later layer
groups deactivated (tensors and P(Yes)).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ledger.errors import BadInput
from ledger.workspace import Workspace
from unlearning.bench import protocol
from unlearning.bench.forget import PARTITION_KEY, bench_workspace
from unlearning.bench.influence import CORRUPTIONS, run_influence_benchmark
from unlearning.bench.protocol import BenchData
from unlearning.data import movielens
from unlearning.data.partition import Partition, training_order
from unlearning.data.records import Record, RecordStore
from unlearning.evaluation import gap_closed, metrics, mia_auc
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.affected import affected_components
from unlearning.operations.exclude import exclude
from unlearning.operations.receive import Request, receive_many
from unlearning.operations.restore import restore, served_clean
from unlearning.training.config import TrainConfig
from unlearning.training.prefix import shared_prefixes
from unlearning.versions.store import ModelStore, ModelVersion

NAME = "bench"
METHODS = ("retrain", "sisa", "apa-d", "apa-nd", "s3t-b1", "s3t-bL", "influence")
WORKLOADS = ("w1", "w2", "w3", "w4")
BATCH_SHARE = 0.05  # W2: share of the training records erased in one batch
CORRUPTED_SHARE = 0.10  # W4: share of the training records corrupted, then corrected
CHECK_PROMPTS = 4  # test prompts whose P(Yes) the S3T check compares
S3T_TRIALS = 2000  # simulated deletion streams per S3T method (no training: the trained version's manifests)

# One row per measurement: the initial training of a method (workload "train", step 0) or one
# erasure step of a workload. None where a column does not apply.
ROW_FIELDS = (
    "seed", "method", "workload", "step",
    "requests",  # erasure requests handled together in this step (W2: one per subject of the batch)
    "erased_records",  # records erased by this step (cumulative: erased_total)
    "erased_total",
    "train_s",  # initial training wall seconds (train rows)
    "one_submodel_s",  # train rows: APA's cost of a request, one sub-model retrained (mean shard; retrain: all)
    "validation_column_s",  # train rows, APA: one adapter's validation predictions, recomputed with it
    "unlearn_s",  # wall seconds of everything the method did for this step
    "compliance_s",  # until an exact version without the records could be served
    "restored_s",  # until the retrained version was ready (None: nothing retrained)
    "grad_samples",  # sample-level forward+backward passes (training or retraining)
    "forward_samples",  # APA: validation predictions recomputed (forward only)
    "retrained_components",
    "components",  # components of the served version
    "auc", "accuracy", "baseline_auc",  # test set, served version after the step
    "distance_to_retrain",  # mean |P(Yes) - P_retrain(Yes)| on test, same seed/workload/step
    "storage_bytes",  # the served version's files (weights, checkpoints, manifests, aggregator)
    "inference_ms_per_sample",  # train rows: scoring the test set with the served version
    "s3t_prefixes",  # S3T: per shard, the longest valid prefix (stages) now served
    "s3t_retrains_forced",  # S3T: shards retrained in this step because no order was left
    "exact_retrained",  # replayed from scratch = retrained (None: not checked here)
    "exact_s3t_active",  # S3T served stages = deactivated full orders (None: nothing truncated)
    "check_s",  # seconds spent on the exactness checks (not part of unlearn_s)
    "relative_residual",  # influence: ||(C + damping I) delta - b|| / ||b|| of the solve
    "gap_closed",  # influence: 1 - ||P_approx - P_retrain|| / ||P_original - P_retrain|| over the forget set's P(Yes)
    "auc_change",  # test AUC now minus the method's test AUC as trained
    "mia_auc_original",  # influence: the MIA AUC of the erased records under the adapter as trained
    "forget_auc",  # AUC on every record erased so far, with its true answer
    "mia_auc",  # loss-based membership inference: erased records vs as many test records (0.5: unseen)
)


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    users: int  # MovieLens users read (ascending id)
    history: int  # earlier ratings in a prompt (TALLRec uses 10; fewer make shorter prompts)
    per_user: int  # most recent samples kept per training subject
    eval_per_user: int  # most recent samples kept per validation and test subject
    epochs: float
    lr: float
    batch_size: int
    shards: int  # SISA, APA and S3T
    slices: int  # SISA and S3T (S3T: B=L runs L orders)
    sequential: int  # W1: single-record erasures, one after another
    subjects: int  # W3: subject erasures, one after another
    seeds: int
    threads: int
    curvature_batch: int  # influence: examples of the adapter's training set its Fisher is averaged over
    influence_on: tuple[str, ...] = ("w1", "w2", "w3")  # workloads `influence` runs (a full solve per step)
    workloads: tuple[str, ...] = WORKLOADS  # run unless --workloads names others
    batch_share: float = BATCH_SHARE  # W2: share of the training records erased in one batch
    lora_layers: str = "all"  # "top-N": LoRA on the top N layers; the frozen prefix's states computed once
    # APA's Movie protocol (window > 0): the last `window` samples by target time split 8:1:1, then
    # (train, validation, test) samples drawn from the parts, the training draw balanced over the shards
    window: int = 0
    sizes: tuple[int, int, int] = (0, 0, 0)
    epoch_grid: tuple[float, ...] = ()  # non-empty: epochs chosen once among these on validation AUC
    replay_once: bool = False  # exact_retrained: replayed once per method and seed, not once per workload
    s3t_sisa_schedule: bool = False  # S3T stages train 2E/(L+1) epochs each (SISA's slices), not the paper's E
    # APA(D) and APA(ND) train and unlearn once: merge is inference-only, so their adapters and
    # aggregator are the same bits; every APA row is scored with both merges
    apa_shared: bool = False
    zero_shot: bool = True  # score the base model alone on the test records


PRESETS = {
    # CI smoke test: the 2-layer tiny model; W1 shortened to 4 erasures to stay well under 3 minutes.
    # One thread: on a busy 2-core machine two torch threads run many times slower than one.
    "tiny": Preset("tiny", base="tiny", users=40, history=5, per_user=2, eval_per_user=6, epochs=1.0, lr=1e-2,
                   batch_size=8, shards=2, slices=2, sequential=4, subjects=2, seeds=1, threads=1,
                   curvature_batch=64),
    # 90 minutes on 2 idle cores (measured with the old Adam solver, which skipped W1): W1 shortened to 5 erasures.
    "cpu": Preset("cpu", base="smollm2-135m", users=40, history=10, per_user=3, eval_per_user=10, epochs=0.5, lr=1e-3,
                  batch_size=4, shards=4, slices=4, sequential=5, subjects=2, seeds=1, threads=2,
                  curvature_batch=64),
    "gpu": Preset("gpu", base="smollm2-135m", users=300, history=10, per_user=5, eval_per_user=20, epochs=1.0, lr=1e-3,
                  batch_size=8, shards=4, slices=4, sequential=20, subjects=5, seeds=3, threads=4,
                  curvature_batch=64),
    # APA's Movie protocol at APA's sizes (reference §3c): 1024 / 500 / 1000 samples, K = 4 shards of 256,
    # L = 4 slices, LoRA on the top 4 of SmolLM2's 30 layers (S3T: one layer per group).
    #
    # Time budget, 2 idle cores (unit costs measured here: a top-4 training sample 0.124 s fwd+bwd,
    # one scored prompt 0.045 s at batch 8 and 0.058 s at batch 1 (APA's validation columns), a
    # prefix state 0.285 s once, an HVP example 0.254 s, an all-layers scored prompt 0.35 s; an
    # epoch of retrain = 127 s), for E = 1 (the worst the grid allows; E = 0.5: about 63 min):
    #   prefix states of 2524 sequences                                            12.0 min
    #   epoch selection: one retrain run to 1 epoch, 500 validation prompts at 0.5 and 1    2.9
    #   training: retrain 3.0, SISA 5.3, APA 7.7 (adapters, 4 x 500 validation columns, D and
    #     ND scoring), S3T B=1 5.0 and B=L 10.4 (stages at SISA's 2E/(L+1) epochs)         31.4
    #     (each includes scoring 1000 test prompts: 4 passes for SISA and S3T)
    #   top-4 vs all layers at equal wall-clock: 127 s of all-layers training + scoring  7.9
    #   exactness replays, once per method (SISA's shard lineage, APA's adapter and aggregator)  2.9
    #   W1, one single-record erasure for every method (retrain 127 s, SISA 25 s, APA 61 s,
    #     S3T exclusions) with 1000 test prompts scored after it per method             11.0
    #   influence on W1: a 64-example Fisher (3 backward passes each) and the forget set    0.5
    #   total                                                                            about 74 min
    # The knobs that make it fit: E <= 1 (grid 0.5, 1), S3T stages at SISA's schedule (the paper's E
    # per stage: +13.5 min), APA(D) and APA(ND) shared (apart: +8 min), one W1 request, W2 and W3 off
    # (--workloads w1,w3 adds W3's one subject: +11 min), no zero-shot scoring, replays once.
    "seed": Preset("seed", base="smollm2-135m", users=0, history=10, per_user=0, eval_per_user=0, epochs=1.0, lr=1e-3,
                   batch_size=4, shards=4, slices=4, sequential=1, subjects=1, seeds=1, threads=2,
                   curvature_batch=64, workloads=("w1",), batch_share=0.002,
                   lora_layers="top-4", window=10_000, sizes=(1024, 500, 1000), epoch_grid=(0.5, 1.0),
                   replay_once=True, s3t_sisa_schedule=True, apa_shared=True, zero_shot=False),
    # the same protocol at test scale (the 2-layer tiny model, a few hundred samples), end to end in seconds
    "seed-tiny": Preset("seed-tiny", base="tiny", users=0, history=5, per_user=0, eval_per_user=0, epochs=1.0,
                        lr=1e-2, batch_size=8, shards=2, slices=2, sequential=2, subjects=1, seeds=1, threads=1,
                        curvature_batch=32, influence_on=("w3",),
                        workloads=("w1", "w2", "w3"), lora_layers="top-2", window=600, sizes=(48, 24, 32),
                        epoch_grid=(1.0, 2.0), replay_once=True, s3t_sisa_schedule=True, apa_shared=True,
                        zero_shot=False),
}


@dataclass(frozen=True)
class Erasure:
    """One step of a workload: requests received and handled together."""

    requests: tuple[Request, ...]
    records: int
    forget: tuple[Record, ...]  # the training records it erases


def bench_records(preset: Preset) -> list[Record]:
    """MovieLens samples: `per_user` per training subject, `eval_per_user` per held-out subject
    (a larger test set costs no training). Splits are the fixed partition key's."""
    partition = Partition(PARTITION_KEY)
    samples = movielens.build_samples(movielens.load(), history=preset.history,
                                      per_user=max(preset.per_user, preset.eval_per_user), max_users=preset.users)
    by_subject: dict[str, list[Record]] = defaultdict(list)
    for record in samples:
        by_subject[record.subject_id].append(record)
    out = []
    for subject, records in by_subject.items():  # time order: the last ones are the most recent
        out += records[-(preset.per_user if partition.split(subject) == "train" else preset.eval_per_user):]
    return out


def bench_data(preset: Preset) -> BenchData:
    """A preset's training, validation and test records: APA's chronological protocol (window > 0),
    else `bench_records` split by subject under the fixed partition key."""
    partition = Partition(PARTITION_KEY)
    if preset.window:
        return protocol.chronological_data(preset.history, preset.window, preset.sizes, partition, preset.shards)
    records = bench_records(preset)
    part = {s: [r for r in records if partition.split(r.subject_id) == s] for s in ("train", "valid", "test")}
    return BenchData(part["train"], part["valid"], part["test"], explicit_splits=False)


def workloads(preset: Preset, seed: int, train: Sequence[Record]) -> dict[str, list[Erasure]]:
    """The request streams of a seed: a function of (seed, record id) only."""
    def single(w: str, i: int, r: Record) -> Request:
        return Request(f"{w}-s{seed}-{i}", r.subject_id, (r.record_id,))

    w1 = [Erasure((single("w1", i, r),), 1, (r,))
          for i, r in enumerate(training_order(seed, "bench/w1", train)[:preset.sequential])]
    batch = training_order(seed, "bench/w2", train)[:max(1, round(preset.batch_share * len(train)))]
    grouped: dict[str, list[str]] = defaultdict(list)
    for r in batch:
        grouped[r.subject_id].append(r.record_id)
    w2 = [Erasure(tuple(Request(f"w2-s{seed}-{i}", s, tuple(ids)) for i, (s, ids) in enumerate(grouped.items())),
                  len(batch), tuple(batch))]
    subjects = list(dict.fromkeys(r.subject_id for r in training_order(seed, "bench/w3", train)))[:preset.subjects]
    of: dict[str, list[Record]] = defaultdict(list)
    for r in train:
        of[r.subject_id].append(r)
    w3 = [Erasure((Request(f"w3-s{seed}-{i}", s),), len(of[s]), tuple(sorted(of[s], key=lambda r: r.record_id)))
          for i, s in enumerate(subjects)]
    return {"w1": w1, "w2": w2, "w3": w3}


def method_configs(preset: Preset, base: str, seed: int, threads: int, precision: str,
                   num_layers: int, epochs: float | None = None) -> dict[str, TrainConfig]:
    """One recipe for all (`epochs`: the preset's unless chosen on validation); each method adds
    only its own settings. S3T's L layer groups split the layers that carry LoRA evenly (top-down)."""
    common = dict(base=base, epochs=preset.epochs if epochs is None else epochs, lr=preset.lr,
                  batch_size=preset.batch_size, seed=seed, threads=threads, precision=precision,
                  lora_layers=preset.lora_layers)
    shards, slices = preset.shards, preset.slices
    trainable = TrainConfig(lora_layers=preset.lora_layers).top_layers(num_layers)
    stage_epochs = round(2 * common["epochs"] / (slices + 1), 6) if preset.s3t_sisa_schedule else common["epochs"]
    s3t = dict(method="s3t", shards=shards, slices=slices, layers_per_group=max(1, trainable // slices),
               **{**common, "epochs": stage_epochs})
    return {
        "retrain": TrainConfig(method="retrain", **common),
        "influence": TrainConfig(method="retrain", **common),  # the retrain adapter, updated instead of retrained
        "sisa": TrainConfig(method="sisa", shards=shards, slices=slices, **common),
        "apa-d": TrainConfig(method="apa", shards=shards, merge="d", **common),
        "apa-nd": TrainConfig(method="apa", shards=shards, merge="nd", **common),
        "s3t-b1": TrainConfig(**s3t, budget=1),
        "s3t-bL": TrainConfig(**s3t, budget=slices),
    }


@contextmanager
def _own_key_dirs() -> Iterator[None]:
    """Each benchmark workspace keeps its keys inside itself: a global ERASURE_KEY_DIR would
    make every workspace share (and overwrite) one key directory."""
    saved = os.environ.pop("ERASURE_KEY_DIR", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ERASURE_KEY_DIR"] = saved


def _clone(ws: Workspace, home: Path) -> Workspace:
    """A copy of a workspace: databases and keys copied, model versions (never modified once
    committed) hard-linked."""
    shutil.copytree(ws.home, home, ignore=shutil.ignore_patterns("artifacts"))
    shutil.copytree(ws.artifacts, home / "artifacts", copy_function=os.link)
    return Workspace(home)


def _merge_view(version: ModelVersion, merge: str) -> ModelVersion:
    """The APA version served with another merge (Eq. 5 or 6): the same files, only inference differs."""
    view = ModelVersion(version.name, version.version, version.path)
    aggregation = version.meta.aggregation.model_copy(update={"merge": merge})
    view.__dict__["meta"] = version.meta.model_copy(update={"aggregation": aggregation})  # the cached_property's slot
    return view


def _storage_bytes(version: ModelVersion) -> int:
    seen, total = set(), 0
    for path in version.path.rglob("*"):
        if path.is_file() and (stat := path.stat()).st_ino not in seen:
            seen.add(stat.st_ino)
            total += stat.st_size
    return total


def _retrained(before: ModelVersion, after: ModelVersion) -> list:  # type: ignore[type-arg]
    """Components of `after` that `before` did not have with the same weights."""
    shas = {c.id: c.weights_sha256 for c in before.components}
    return [c for c in after.components if shas.get(c.id) != c.weights_sha256]


def _costs(components: Sequence, aggregate: Sequence[str]) -> tuple[int, int]:  # type: ignore[type-arg]
    """(forward+backward samples, forward-only validation predictions) of building these components."""
    grad = sum(c.meta.samples for c in components)
    adapters = sum(c.id in aggregate for c in components)
    forward = sum(c.manifest_size * adapters for c in components if c.meta.kind == "aggregator")
    return grad, forward


class _Scorer:
    """P(Yes) by the version's rule, on the test records or others (the forget set). Under
    mean_p_yes scores are cached per (adapter weights digest, record), so a SISA or S3T step
    re-scores only what changed (a record set scored for the first time goes in one call: the
    same batches and numbers as `Predictor`); APA goes through `Predictor`."""

    def __init__(self, test: Sequence[Record]):
        self.records = list(test)
        self.prompts = [r.prompt for r in test]
        self.labels = [int(r.answer == "Yes") for r in test]
        self.baseline = [movielens.history_positivity(r.prompt) for r in test]
        self._cache: dict[tuple[str, str], dict[str, float]] = {}
        self._engine, self._engine_config = None, None

    def engine(self, version: ModelVersion):  # type: ignore[no-untyped-def]
        from unlearning.operations.build import engine_for

        if self._engine_config != version.meta.config_sha256:
            self._engine = engine_for(version.config, expected_base=version.meta.base)
            self._engine_config = version.meta.config_sha256
            self.ids = [self._engine.base.encode_prompt(p) for p in self.prompts]
        return self._engine

    def prepare(self, version: ModelVersion, records: Sequence[Record] | None = None) -> Callable[[], list[float]]:
        """Load what scoring `version` needs (base model, adapters); the returned call only scores."""
        records = self.records if records is None else records
        if version.meta.aggregation.rule == "apa":
            from unlearning.inference import Predictor

            predictor = Predictor(version)
            return lambda: predictor.p_yes([r.prompt for r in records])
        engine = self.engine(version)
        return lambda: self._mean_p_yes(engine, version, records)

    def p_yes(self, version: ModelVersion, records: Sequence[Record] | None = None) -> list[float]:
        return self.prepare(version, records)()

    def zero_shot(self, config: TrainConfig) -> dict:
        """Metrics of the base model alone (LoRA B starts at zero: the initial adapter is a no-op)."""
        from unlearning.operations.build import engine_for

        engine = engine_for(config)
        p_yes = engine.p_yes(engine.initial_state().lora, [engine.base.encode_prompt(p) for p in self.prompts])
        return metrics(self.labels, p_yes, self.baseline).to_dict()

    def _mean_p_yes(self, engine, version: ModelVersion,  # type: ignore[no-untyped-def]
                    records: Sequence[Record]) -> list[float]:
        per_component = []
        for cid in version.aggregate:
            component = version.component(cid)
            cached = self._cache.setdefault((version.meta.config_sha256, component.weights_sha256), {})
            missing = [r for r in records if r.record_id not in cached]
            if missing:
                ids = [engine.base.encode_prompt(r.prompt) for r in missing]
                cached.update(zip((r.record_id for r in missing), engine.p_yes(component.adapter(), ids), strict=True))
            per_component.append([cached[r.record_id] for r in records])
        return [sum(scores) / len(scores) for scores in zip(*per_component, strict=True)]


@dataclass
class _Run:
    """One method's workload in progress."""

    method: str
    workload: str
    ws: Workspace
    trained: ModelVersion  # version 1
    current: ModelVersion  # the version served now
    full: dict[int, ModelVersion] = field(default_factory=dict)  # S3T: shard -> version that last retrained it
    receipts: list = field(default_factory=list)
    forget: tuple[Record, ...] = ()  # every training record erased so far
    held: list = field(default_factory=list)  # influence: the erased records as trained (in memory only)
    erased_total: int = 0
    checked: bool = False  # exact_retrained: replayed once per workload


class UnlearningBenchmark:
    def __init__(self, preset: Preset, out: Path, seeds: int, methods: Sequence[str], workload_order: Sequence[str],
                 base: str, threads: int, log: Callable[[str], None] = lambda line: None):
        unknown = sorted(set(methods) - set(METHODS)) + sorted(set(workload_order) - set(WORKLOADS))
        if not methods or not workload_order:
            raise BadInput("--methods and --workloads need at least one entry each")
        if unknown:
            raise BadInput(f"unknown method or workload {unknown[0]!r} (methods: {', '.join(METHODS)}; "
                           f"workloads: {', '.join(WORKLOADS)})")
        self.preset, self.out, self.seeds, self.base, self.threads, self.log = preset, out, seeds, base, threads, log
        # the benchmark applies every update and reports its residual (the service refuses poor solves)
        self.solver = SolverSettings(curvature_batch=preset.curvature_batch,
                                     max_residual=math.inf)
        self.methods = sorted(methods, key=METHODS.index)  # retrain first: the others' distance needs it
        self.workload_order = list(workload_order)
        self.rows: list[dict] = []
        self.corrections: list[dict] = []  # W4 rows (`bench_influence`)
        self._reference: dict[tuple[int, str, int], list[float]] = {}  # retrain's test P(Yes) per step
        self._reference_forget: dict[tuple[int, str, int], list[float]] = {}  # retrain's forget-set P(Yes)
        self._as_trained: dict[tuple[int, str], tuple[list[float], float | None]] = {}  # test P(Yes), AUC
        self._replayed: set[tuple[int, str]] = set()  # (seed, method) whose retraining was replayed
        self._apa_shared = preset.apa_shared and {"apa-d", "apa-nd"} <= set(self.methods)

    def run(self) -> dict:
        from unlearning.training.base_models import load_base
        from unlearning.training.engine import bf16_supported, device

        self.started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        precision = "bf16" if device().type == "cuda" and bf16_supported() else "fp32"  # bf16 is slower on CPU
        num_layers = load_base(self.base).model.config.num_hidden_layers
        data = bench_data(self.preset)
        train, test = data.train, [r for r in data.test if r.answer in ("Yes", "No")]
        self.result = {
            "benchmark": "unlearning", "preset": self.preset.name, "complete": False,
            "settings": {**asdict(self.preset), "base": self.base, "threads": self.threads, "seeds": self.seeds,
                         "solver": self.solver.to_json(),
                         "methods": self.methods, "workloads": self.workload_order, "precision": precision},
            "data": {"train": len(train), "valid": len(data.valid), "test": len(test), "records": len(data.records),
                     "protocol": "chronological" if data.explicit_splits else "subject"},
            "rows": self.rows,
            "corrections": self.corrections,
        }
        scorer = _Scorer(test)
        epochs = None  # the preset's, unless chosen on validation (once, at seed 0)
        with shared_prefixes(), tempfile.TemporaryDirectory(prefix="erasure-bench-unlearning-") as tmp, \
                _own_key_dirs():
            for seed in range(self.seeds):
                streams = workloads(self.preset, seed, train)
                configs = method_configs(self.preset, self.base, seed, self.threads, precision, num_layers, epochs)
                if seed == 0:
                    self.result["environment"] = _environment(configs["retrain"])
                    self._warm_prefixes(configs["retrain"], data)
                    if self.preset.epoch_grid:
                        selection = protocol.select_epochs(configs["retrain"], train, data.valid,
                                                           self.preset.epoch_grid, self.log)
                        self.result["epoch_selection"] = selection
                        epochs = self.result["settings"]["epochs"] = selection["chosen"]
                        configs = method_configs(self.preset, self.base, seed, self.threads, precision, num_layers,
                                                 epochs)
                    if self.preset.zero_shot:
                        self.result["zero_shot"] = scorer.zero_shot(configs["retrain"])
                # workload-major, each method trained when first needed: a stopped run has every
                # method on the first workloads rather than every workload for the first methods
                trained: dict[str, tuple[Workspace, ModelVersion]] = {}
                for workload in self.workload_order:
                    if workload == "w4":
                        self._corrections(seed, train, test, configs["retrain"])
                        continue
                    for method in self.methods:
                        if (method == "influence" and workload not in self.preset.influence_on) or \
                                (method == "apa-d" and self._apa_shared):  # apa-nd's runs score both merges
                            continue
                        root = Path(tmp) / f"seed{seed}-{method}"
                        if method not in trained:
                            trained[method] = self._trained(seed, method, root, data, configs, trained, scorer)
                        ws, version = trained[method]
                        cloned = _clone(ws, root / workload)
                        start = ModelStore(cloned).get(NAME, version.version)
                        run = _Run(method, workload, cloned, start, start)
                        for step, erasure in enumerate(streams[workload], start=1):
                            self._step(seed, run, step, erasure, scorer)
                        shutil.rmtree(cloned.home)
                        self._write(summary=True)
                if seed == 0 and self.preset.lora_layers != "all" and "retrain" in trained:
                    self._equal_time(configs["retrain"], train, test)
                for home in {ws.home.parent for ws, _ in trained.values()}:
                    shutil.rmtree(home)
        self.result["complete"] = True
        self._write(summary=True, plots=True)
        return self.result

    def _warm_prefixes(self, config: TrainConfig, data: BenchData) -> None:
        """Top-N layers: the frozen prefix's states of every sequence the methods train on or score
        (training records with their answers, validation and test prompts), computed once before
        anything is timed and shared by every engine of the run (`shared_prefixes`)."""
        from unlearning.operations.build import engine_for

        if config.lora_layers == "all":
            return
        started = time.perf_counter()
        engine = engine_for(config)
        if engine.prefixes is None:  # top-N with N = every layer: nothing is frozen
            return
        sequences = [e.prompt_ids + e.answer_ids for e in engine.encode(data.train)]
        sequences += [engine.base.encode_prompt(r.prompt) for r in [*data.valid, *data.test]]
        for i, ids in enumerate(sequences, start=1):
            engine.prefixes.get(ids)
            if i % 250 == 0 or i == len(sequences):
                self.log(f"prefix states: {i}/{len(sequences)} sequences, {time.perf_counter() - started:.0f} s")
        self.result["prefixes"] = {"sequences": len(sequences), "seconds": round(time.perf_counter() - started, 3)}
        self._write()

    def _equal_time(self, config: TrainConfig, train: Sequence[Record], test: Sequence[Record]) -> None:
        """Top-N cached layers against all layers at equal wall-clock: the all-layers retrain gets
        the top-N retrain's training seconds (seed 0; the prefix states are a one-off, reported apart)."""
        row = next(r for r in self.rows if (r["seed"], r["method"], r["workload"]) == (0, "retrain", "train"))
        everything = protocol.equal_time(config, train, test, row["train_s"])
        self.result["equal_time"] = {
            "top": {"lora_layers": config.lora_layers, "seconds": row["train_s"], "samples": row["grad_samples"],
                    "epochs": config.epochs, "auc": row["auc"]},
            "all": everything,
        }
        self.log(f"equal wall-clock: {config.lora_layers} AUC {row['auc']}, all layers ({everything['samples']} "
                 f"samples in {everything['seconds']:.0f} s) AUC {everything['auc']}")
        self._write(summary=True)

    # --- steps ------------------------------------------------------------------------------

    def _trained(self, seed: int, method: str, root: Path, data: BenchData, configs: dict[str, TrainConfig],
                 trained: dict[str, tuple[Workspace, ModelVersion]], scorer: _Scorer) -> tuple[Workspace, ModelVersion]:
        """Version 1 of a method's model. `influence` updates the very adapter `retrain` trained
        (same config, same digest), so it reuses it and its training row."""
        if method == "influence" and "retrain" in trained:
            row = next(r for r in reversed(self.rows) if r["method"] == "retrain" and r["workload"] == "train")
            self.rows.append({**row, "method": method, "one_submodel_s": None})  # it retrains nothing
            self._as_trained[(seed, method)] = self._as_trained[(seed, "retrain")]
            return trained["retrain"]
        # a chronological split names each record's split; the test records stay out of the
        # workspaces (only the benchmark scores them, so their prefix states are not stored there)
        ws = bench_workspace(root, "trained", {"train": data.train, "valid": data.valid}
                             if data.explicit_splits else data.records)
        version = self._train(seed, method, ws, configs[method], scorer)
        if version.meta.aggregation.s3t is not None and seed == 0:
            with RecordStore.open(ws) as store:
                stored = store.records("train")
            self.result.setdefault("s3t_deletions", {})[method] = protocol.simulate_deletions(version, stored, S3T_TRIALS)
        return ws, version

    def _corrections(self, seed: int, train: Sequence[Record], test: Sequence[Record], config: TrainConfig) -> None:
        """W4: corrupt 10 % of the training records (answers flipped; a movie added to the liked
        history), train on them, then correct exactly (retrain on clean data) and approximately."""
        for kind in CORRUPTIONS:
            rows = run_influence_benchmark(train, test, config, kind, CORRUPTED_SHARE, seed, [self.solver])
            self.corrections += rows
            for row in rows:
                self.log(f"seed {seed} {row['model']:17} w4-{kind}: seconds {row.get('seconds', 'n/a')}, "
                         f"auc {row.get('auc', 'n/a')}, residual {row.get('relative_residual', 'n/a')}")
            self._write(summary=True)

    def _train(self, seed: int, method: str, ws: Workspace, config: TrainConfig, scorer: _Scorer) -> ModelVersion:
        from unlearning.operations.build import train_model

        watch = protocol.Stopwatch()
        started = time.perf_counter()
        version = train_model(ws, NAME, config, progress=watch)  # type: ignore[arg-type]
        train_s = time.perf_counter() - started
        grad, forward = _costs(version.components, version.aggregate)
        submodel, column = protocol.one_submodel_seconds(version, watch)
        for label, view in self._views(method, version):
            score = scorer.prepare(view)  # loading the base model and adapters is not inference
            started = time.perf_counter()
            p_yes = score()
            inference_ms = 1000 * (time.perf_counter() - started) / max(1, len(p_yes))
            self._row(seed, label, "train", 0, view, scorer, p_yes=p_yes, erased_records=0, erased_total=0,
                      train_s=train_s, grad_samples=grad, forward_samples=forward,
                      inference_ms_per_sample=inference_ms, retrained_components=len(version.components),
                      one_submodel_s=submodel, validation_column_s=column)
        return version

    def _views(self, method: str, version: ModelVersion) -> list[tuple[str, ModelVersion]]:
        """The rows a method's version makes: its own, and APA(D)'s beside APA(ND)'s when they are shared."""
        return [(method, version)] + ([("apa-d", _merge_view(version, "d"))]
                                      if self._apa_shared and method == "apa-nd" else [])

    def _step(self, seed: int, run: _Run, step: int, erasure: Erasure, scorer: _Scorer) -> None:
        run.forget += erasure.forget
        if run.method == "influence":
            self._approximate_step(seed, run, step, erasure, scorer)
            return
        clean, served, restored, compliance_s, unlearn_s = _unlearn(run, erasure)
        retrained = _retrained(clean, restored) if restored is not None else []
        grad, forward = _costs(retrained, served.aggregate)
        forced = None
        if served.meta.aggregation.s3t is not None:
            shards = {c.meta.shard for c in retrained}
            forced = len(shards)
            run.full.update(dict.fromkeys(shards, served))
        run.current = served
        run.erased_total += erasure.records

        checks = time.perf_counter()
        exact_retrained = None
        replayed = (seed, run.method) in self._replayed and self.preset.replay_once
        if retrained and not run.checked and not replayed and run.method != "retrain":  # retrain's is from scratch
            exact_retrained, run.checked = _replays_equal(run.ws, served, retrained), True
            self._replayed.add((seed, run.method))
        exact_s3t = _s3t_active_equal(served, run.full, run.trained, scorer) if forced is not None else None
        check_s = time.perf_counter() - checks
        for label, view in self._views(run.method, served):
            self._row(seed, label, run.workload, step, view, scorer, run.forget, requests=len(erasure.requests),
                      erased_records=erasure.records, erased_total=run.erased_total, unlearn_s=unlearn_s,
                      compliance_s=compliance_s, restored_s=unlearn_s if restored is not None else None,
                      grad_samples=grad, forward_samples=forward, retrained_components=len(retrained),
                      s3t_retrains_forced=forced, exact_retrained=exact_retrained, exact_s3t_active=exact_s3t,
                      check_s=check_s)

    def _approximate_step(self, seed: int, run: _Run, step: int, erasure: Erasure, scorer: _Scorer) -> None:
        """The approximate path alone: the trained adapter moved by one influence update that
        removes every record erased so far (an approximate version is never the base of
        another; the exact retrain that follows it in the service is `retrain`'s row)."""
        from unlearning.operations.approximate import influence_version

        started = time.perf_counter()
        ids = {r.record_id for r in erasure.forget}
        with RecordStore.open(run.ws) as store:
            run.held += [r for r in store.records("train") if r.record_id in ids]
        _receive(run, erasure)
        update = influence_version(run.ws, run.trained, run.held, [], run.receipts, self.solver)
        unlearn_s = time.perf_counter() - started
        run.erased_total += erasure.records
        if update is None:  # cannot happen: every erased record was trained on
            raise BadInput(f"step {step}: no served adapter was trained on the erased records")
        run.current = update.version
        solutions = update.solutions.values()
        # the forget set under the adapter as trained: where the gap to the exact retrain starts
        self._row(seed, run.method, run.workload, step, update.version, scorer, run.forget,
                  original=scorer.p_yes(run.trained, run.forget),
                  requests=len(erasure.requests), erased_records=erasure.records, erased_total=run.erased_total,
                  unlearn_s=unlearn_s, grad_samples=sum(s.hvp_examples + s.gradient_examples for s in solutions),
                  retrained_components=0, relative_residual=max(s.relative_residual for s in solutions))

    def _row(self, seed: int, method: str, workload: str, step: int, version: ModelVersion, scorer: _Scorer,
             forget: Sequence[Record] = (), p_yes: list[float] | None = None, original: list[float] | None = None,
             **values: object) -> None:
        """One result row. `original`: the forget set's P(Yes) under the adapter as trained (the
        approximate path's rows: the gap to the exact retrain is measured from there)."""
        p_yes = scorer.p_yes(version) if p_yes is None else p_yes
        evaluation = metrics(scorer.labels, p_yes, scorer.baseline)
        if workload == "train":
            self._as_trained[(seed, method)] = (p_yes, evaluation.auc)
        trained_p, trained_auc = self._as_trained.get((seed, method), (None, None))
        if workload != "train" and evaluation.auc is not None and trained_auc is not None:
            values["auc_change"] = evaluation.auc - trained_auc
        if forget:
            p_forget = scorer.p_yes(version, forget)
            values["forget_auc"] = metrics([int(r.answer == "Yes") for r in forget], p_forget, [None]).auc
            n = min(len(forget), len(scorer.records))
            values["mia_auc"] = mia_auc(p_forget, forget, p_yes[:n], scorer.records[:n])
            if method == "retrain":
                self._reference_forget[(seed, workload, step)] = p_forget
            exact = self._reference_forget.get((seed, workload, step))
            if original is not None:  # the same test, as trained, for the original's MIA
                values["mia_auc_original"] = mia_auc(original, forget, trained_p[:n], scorer.records[:n])
                if exact is not None:
                    values["gap_closed"] = gap_closed(original, p_forget, exact)
        if method == "retrain":
            self._reference[(seed, workload, step)] = p_yes
        reference = self._reference.get((seed, workload, step))
        distance = (sum(abs(p - q) for p, q in zip(p_yes, reference, strict=True)) / len(p_yes)
                    if reference and p_yes else None)
        prefixes = None
        if version.meta.aggregation.s3t is not None:
            from unlearning.methods.s3t.orders import order_state

            prefixes = [max(s.valid_prefix) for s in order_state(version.meta).shards]
        row = dict.fromkeys(ROW_FIELDS)
        row.update(seed=seed, method=method, workload=workload, step=step, auc=evaluation.auc,
                   accuracy=evaluation.accuracy, baseline_auc=evaluation.baseline_auc, distance_to_retrain=distance,
                   storage_bytes=_storage_bytes(version), components=len(version.components), s3t_prefixes=prefixes)
        row.update({k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()})
        self.rows.append(row)
        self.log(f"seed {seed} {method:7} {workload:5} step {step:2}: "
                 + ", ".join(f"{k} {row[k]:.3g}" for k in ("unlearn_s", "train_s", "auc") if row[k] is not None))
        self._write()

    def _write(self, summary: bool = False, plots: bool = False) -> None:
        """results.json after every row and summary.md after every method, so a stopped run
        leaves its partial results, labelled as such; the plots at the end
        (`bench_report.write_plots` draws them from any results.json)."""
        from unlearning.bench.report import write_plots, write_summary

        self.result["wall_s"] = round(time.perf_counter() - self.started, 1)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.out / "results.json")
        if summary:
            write_summary(self.result, self.out / "summary.md")
        if plots:
            write_plots(self.result, self.out)


def _receive(run: _Run, erasure: Erasure) -> list:
    """Log the step's requests and crypto-shred their records (every request must be accepted)."""
    receipts = receive_many(run.ws, list(erasure.requests))
    bad = next((r for r in receipts if isinstance(r, BadInput)), None)
    if bad is not None:
        raise bad
    run.receipts += receipts
    return receipts


def _unlearn(run: _Run, erasure: Erasure):  # type: ignore[no-untyped-def]
    """receive -> exclude -> restore, timed: everything the method must do for one step.
    Returns (the version restored from, the version now served, the restored version or None,
    seconds to exact compliance, seconds in all)."""
    started = time.perf_counter()
    receipts = _receive(run, erasure)
    clean = run.current
    affected = affected_components(clean, receipts)
    excluded = exclude(run.ws, clean, receipts) if affected else None
    compliance_s = time.perf_counter() - started
    shards = None  # None: every shard the erasures changed
    if excluded is not None:
        # the service's rule: retrain the affected shards the exclusion does not serve clean (S3T
        # serves another order's valid prefix until a shard has none left)
        hit = {c.meta.shard for c in clean.components if c.id in affected} - {None}
        clean = excluded
        shards = hit - served_clean(excluded, hit, receipts)
    restored = restore(run.ws, clean, run.receipts, shards=shards) if affected and shards != set() else None
    unlearn_s = time.perf_counter() - started
    if excluded is None:  # nothing exact could be served before the retrain (retrain, or every shard hit)
        compliance_s = unlearn_s
    return clean, restored or excluded or run.current, restored, compliance_s, unlearn_s


# --- exactness checks -----------------------------------------------------------------------

def _replays_equal(ws: Workspace, version: ModelVersion, retrained: Sequence) -> bool:  # type: ignore[type-arg]
    """The last retrained adapter (with its whole lineage) and a rebuilt APA aggregator,
    replayed from scratch on the retained records, have the digests the unlearning produced."""
    from unlearning.operations.build import replay_component

    adapters = [c for c in retrained if c.meta.kind == "adapter"]
    parents = {c.parent for c in adapters}
    chosen = [c for c in adapters if c.id not in parents][-1:] + [c for c in retrained if c.meta.kind == "aggregator"]
    return all(replay_component(ws, version, c.id).equal for c in chosen)


def _s3t_active_equal(version: ModelVersion, full: dict[int, ModelVersion], trained: ModelVersion,
                      scorer: _Scorer) -> bool | None:
    """Each truncated shard's served stage equals its order's last stage (in the version that
    trained the order in full) with the layer groups after the valid prefix deactivated."""
    import torch

    from unlearning.methods.s3t.orders import order_state, stage_id
    from unlearning.training.layer_groups import active_weights

    config = version.config
    engine = scorer.engine(version)
    initial = engine.initial_state().lora
    num_layers = engine.base.model.config.num_hidden_layers
    prompts = scorer.ids[:CHECK_PROMPTS]
    results = []
    for shard in order_state(version.meta).shards:
        order = shard.best_order()
        if order is None or shard.valid_prefix[order] == config.slices:
            continue
        prefix = shard.valid_prefix[order]
        stored = version.component(stage_id(shard.shard, order, prefix - 1)).adapter()
        whole = full.get(shard.shard, trained).component(stage_id(shard.shard, order, config.slices - 1)).adapter()
        deactivated = active_weights(whole, initial, num_layers, config.layers_per_group, prefix)
        same = deactivated.keys() == stored.keys() and all(torch.equal(deactivated[k], stored[k]) for k in stored)
        results.append(same and engine.p_yes(deactivated, prompts) == engine.p_yes(stored, prompts))
    return all(results) if results else None


def _environment(config: TrainConfig) -> dict:
    from unlearning.training.engine import environment

    env = environment(config)
    return {**{k: env[k] for k in ("python", "torch", "transformers", "peft", "device", "threads", "precision")},
            "cpu_count": os.cpu_count(), "platform": platform.platform()}


def preset_named(name: str) -> Preset:
    if name not in PRESETS:
        raise BadInput(f"unknown preset {name!r} (one of {', '.join(PRESETS)})")
    return PRESETS[name]


def run_unlearning_benchmark(preset: Preset, out: Path, seeds: int | None = None, methods: Sequence[str] = METHODS,
                             workload_order: Sequence[str] | None = None, base: str | None = None,
                             threads: int | None = None, log: Callable[[str], None] = lambda line: None) -> dict:
    """Run the benchmark, writing results.json, summary.md and the plots into `out` as it goes."""
    if preset.name == "gpu":
        from unlearning.training.engine import device

        if device().type != "cuda":
            raise BadInput("preset gpu needs a CUDA device (torch sees none): use --preset cpu")
    return UnlearningBenchmark(preset, out, seeds or preset.seeds, methods,
                               preset.workloads if workload_order is None else workload_order, base or preset.base,
                               threads or preset.threads, log).run()


__all__ = ["METHODS", "PRESETS", "ROW_FIELDS", "WORKLOADS", "Preset", "bench_data", "bench_records", "method_configs",
           "preset_named", "run_unlearning_benchmark", "workloads"]
