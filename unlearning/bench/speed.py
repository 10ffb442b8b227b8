"""`erasure bench speed`: seconds per training step of the exact CPU paths, side by side.

Same MovieLens TALLRec records (history 10), same LoRA recipe (r 8 on q/v) and seed; each
variant changes one thing against the reference (all layers, fp32, batch 4, the preset's threads):

- LoRA layers: all, top-8, top-4; top-N with the frozen prefix recomputed in every step
  ("no cache": what top-N costs without the activation cache) and read from the cache;
- threads (1 vs the preset's), batch size (8), length-bucketed batches (less padding, but
  batches would no longer follow the HMAC data order), bf16 autocast (`--bf16`; on CPUs
  without AVX-512 BF16 / AMX it is emulated, tens of times slower), `torch.compile` of the trainable layers
  (`--compile`; reported with the error when it does not run under deterministic algorithms).

A variant's time is the median of its timed steps after one warm-up step; the prefix cost per
record (paid once, when a record is first trained or scored) is reported beside. Results go to
results.json and summary.md.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from unlearning.training.config import TrainConfig


@dataclass(frozen=True)
class Variant:
    name: str
    lora_layers: str = "all"
    cached: bool = True  # top-N: prefix states read from the cache (False: recomputed every step)
    threads: int | None = None  # None: the run's
    batch_size: int = 4
    precision: str = "fp32"
    compile: bool = False
    bucketed: bool = False  # batches of similar length (less padding); changes which records share a batch


def variants(threads: int, tops: Sequence[int], bf16: bool, compiled: bool) -> list[Variant]:
    """The reference, then each top-N without and with the cache; the other knobs on the smallest N."""
    out = [Variant("all layers (reference)")]
    for n in tops:
        out += [Variant(f"top-{n}, no cache", f"top-{n}", cached=False), Variant(f"top-{n}, cached", f"top-{n}")]
    fast = f"top-{min(tops)}"
    out += [Variant(f"{fast}, cached, batch 8", fast, batch_size=8),
            Variant(f"{fast}, cached, length-bucketed batches", fast, bucketed=True)]
    if threads != 1:
        out += [Variant(f"{fast}, cached, 1 thread", fast, threads=1)]
    if bf16:
        out += [Variant(f"{fast}, cached, bf16 autocast", fast, precision="bf16")]
    if compiled:
        out += [Variant(f"{fast}, cached, torch.compile", fast, compile=True)]
    return out


def run_speed_benchmark(out: Path, base: str = "smollm2-135m", threads: int = 2, steps: int = 5,
                        tops: Sequence[int] = (8, 4), bf16: bool = False, compiled: bool = False,
                        log: Callable[[str], None] = lambda line: None) -> dict:
    from unlearning.data import movielens
    from unlearning.training.base_models import load_base
    from unlearning.training.engine import Engine, bf16_supported, environment

    records = movielens.build_samples(movielens.load(), history=10, per_user=1, max_users=64)
    result: dict = {"benchmark": "speed", "base": base, "steps": steps, "rows": [],
                    "environment": {**environment(TrainConfig(base=base, threads=threads)),
                                    "bf16_native": bf16_supported()}}
    out.mkdir(parents=True, exist_ok=True)
    for variant in variants(threads, tops, bf16, compiled):
        config = TrainConfig(base=base, lora_layers=variant.lora_layers, batch_size=variant.batch_size,
                             precision=variant.precision, threads=variant.threads or threads)
        row = {**asdict(variant), "threads": config.threads}
        try:
            engine = Engine(load_base(base), config)
            _measure(engine, variant, records[:variant.batch_size * (steps + 1)], row)
        except Exception as err:  # noqa: BLE001 - a variant that cannot run here is a result, reported
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        result["rows"].append(row)
        log(f"{variant.name}: " + (f"{row['s_per_step']:.3f} s/step" if "s_per_step" in row else row["error"]))
        _write(result, out)
    return result


def _measure(engine, variant: Variant, records: Sequence, row: dict) -> None:  # type: ignore[no-untyped-def]
    examples = engine.encode(records)
    if variant.bucketed:
        examples.sort(key=lambda e: len(e.prompt_ids) + len(e.answer_ids))
    row["tokens_per_sample"] = _mean_tokens(examples)
    if engine.prefixes is not None:
        started = time.perf_counter()
        for e in examples:
            engine.prefixes.get(e.prompt_ids + e.answer_ids)
        row["prefix_s_per_record"] = (time.perf_counter() - started) / len(examples)
        if not variant.cached:  # every step recomputes its sequences' states
            engine.prefixes.get = engine._prefix_states  # type: ignore[method-assign]
    if variant.compile:
        for layer in engine.model.get_base_model().model.layers[engine.first_trainable:]:
            layer.compile()
    row["s_per_step"] = _median_step(engine, examples, variant.batch_size)
    row["s_per_sample"] = row["s_per_step"] / variant.batch_size


def _mean_tokens(examples: Sequence) -> float:
    return sum(len(e.prompt_ids) + len(e.answer_ids) for e in examples) / len(examples)


def _median_step(engine, examples: Sequence, batch_size: int) -> float:  # type: ignore[no-untyped-def]
    state = engine.train(engine.initial_state(), examples[:batch_size], batch_size, "warm-up")
    times = []
    for i in range(1, len(examples) // batch_size):
        started = time.perf_counter()
        state = engine.train(state, examples[i * batch_size:(i + 1) * batch_size], batch_size, f"step{i}")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _write(result: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = result["rows"]
    reference = next((r.get("s_per_sample") for r in rows if r["name"].endswith("(reference)")), None)
    lines = ["# Training speed per path", "",
             f"Base {result['base']}, {result['environment']['device']}, torch {result['environment']['torch']}, "
             f"native bf16: {result['environment']['bf16_native']}; median of {result['steps']} steps after a warm-up.",
             "", "| path | threads | batch | s/step | s/sample | × reference (per sample) | prefix s/record (once) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        step = r.get("s_per_step")
        ratio = f"{reference / r['s_per_sample']:.2f}" if step and reference else "—"
        prefix = f"{r['prefix_s_per_record']:.3f}" if "prefix_s_per_record" in r else "—"
        cell = f"{step:.3f}" if step else f"failed: {r.get('error')}"
        per_sample = f"{r['s_per_sample']:.3f}" if step else "—"
        lines.append(f"| {r['name']} | {r['threads']} | {r['batch_size']} | {cell} | {per_sample} | {ratio} | {prefix} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
