"""summary.md and PNG plots of `erasure bench unlearning` results (pure functions of results.json).

Means are over seeds and steps; "after the last request" takes each seed's last step. Speed-ups
are retrain's mean over the method's mean, per workload, in wall seconds and in sample-level
forward+backward passes (the hardware-neutral count). The "where methods lose" list is derived
from the same numbers, so a regression shows up there without anyone writing it down.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import mean

PLOTS = ("auc_vs_erasures.png", "unlearning_cost.png", "compliance_vs_utility.png")
WORKLOAD_TITLES = {"w1": "W1 sequential single records", "w2": "W2 one batch of 5 %", "w3": "W3 subjects",
                   "w4": "W4 corruption, then correction"}
POOR_RESIDUAL = 0.5  # an influence solve leaving more is what the service refuses
LOSS_MARGIN = 0.01  # AUC below retrain by more than this is reported as a loss


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return mean(present) if present else None


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) >= 1 or value == 0 else f"{value:.{digits}f}"


def _fmt_auc(value: float | None) -> str:
    """An AUC of records that were scored: None only when their labels hold a single class."""
    return "n/a (one class)" if value is None else _fmt(value)


def _title(result: dict, workload: str) -> str:
    share = result["settings"].get("batch_share", 0.05)
    return f"W2 one batch of {100 * share:g} %" if workload == "w2" else WORKLOAD_TITLES[workload]


def _workload_names(result: dict) -> str:
    settings = result["settings"]
    names = {"w1": f"W1 = {settings['sequential']} sequential single-record erasures",
             "w2": f"W2 = {_title(result, 'w2').removeprefix('W2 ')} of the training records",
             "w3": f"W3 = {settings['subjects']} sequential subject erasures"}
    return ", ".join(names[w] for w in _streams(result)) or "none (W4 only)"


def _skipped_influence(settings: dict) -> list[str]:
    """Request-stream workloads `influence` does not run in this preset (results written before
    `influence_on` existed name only W1, with `influence_w1`)."""
    if "influence_on" in settings:
        return [w for w in settings["workloads"] if w != "w4" and w not in settings["influence_on"]]
    return [] if settings.get("influence_w1", True) else ["w1"]


def _solver(settings: dict) -> str:
    """The influence solver, in words (results written before `solver` was recorded: the old Adam settings)."""
    solver = settings.get("solver")
    if solver is None:
        return (f"Adam, {settings.get('solver_steps')} steps of {settings.get('solver_batch')}-example "
                f"Hessian-vector products, damping {settings.get('damping')}")
    damping = "by the rule (a tenth of the curvature along b)" if solver["damping"] is None else solver["damping"]
    return (f"{solver['solver']} solver, {solver['curvature']} curvature over {solver['curvature_batch']} "
            f"training examples, damping {damping}")


def _verdict(values: Iterable[bool | None]) -> str:
    checked = [v for v in values if v is not None]
    if not checked:
        return "n/a"
    return "pass" if all(checked) else f"FAIL ({checked.count(False)}/{len(checked)})"


def _by(rows: Sequence[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def _last_per_seed(rows: Sequence[dict]) -> dict[int, dict]:
    last: dict[int, dict] = {}
    for row in rows:
        if row["seed"] not in last or row["step"] > last[row["seed"]]["step"]:
            last[row["seed"]] = row
    return last


def _streams(result: dict) -> list[str]:
    """The request-stream workloads (W4 has its own rows, `corrections`)."""
    return [w for w in result["settings"]["workloads"] if w != "w4"]


def _methods(result: dict) -> list[str]:
    present = {r["method"] for r in result["rows"]}
    return [m for m in result["settings"]["methods"] if m in present]


def workload_stats(result: dict, workload: str) -> dict[str, dict]:
    """Per method: the summary numbers of one workload."""
    rows = [r for r in result["rows"] if r["workload"] == workload]
    per_method = _by(rows, "method")
    reference = per_method.get(("retrain",), [])
    ref_s, ref_grad = _mean(r["unlearn_s"] for r in reference), _mean(r["grad_samples"] for r in reference)
    ref_last = {seed: row["auc"] for seed, row in _last_per_seed(reference).items()}
    out = {}
    for (method,), group in per_method.items():
        last = _last_per_seed(group)
        seconds, grad = _mean(r["unlearn_s"] for r in group), _mean(r["grad_samples"] for r in group)
        deltas = [row["auc"] - ref_last[s] for s, row in last.items()
                  if row["auc"] is not None and ref_last.get(s) is not None]
        out[method] = {
            "steps": len(group) // max(1, len(last)), "unlearn_s": seconds,
            # the product's cost of one request: a step's seconds shared by the requests it coalesced
            "per_request_s": _mean(r["unlearn_s"] / (r.get("requests") or 1) for r in group
                                   if r["unlearn_s"] is not None),
            "speedup": ref_s / seconds if ref_s and seconds else None,
            "grad_samples": grad, "grad_speedup": ref_grad / grad if ref_grad and grad else None,
            "compliance_s": _mean(r["compliance_s"] for r in group),
            "restored_s": _mean(r["restored_s"] for r in group),
            "auc": _mean(r["auc"] for r in group),
            "auc_last": _mean(row["auc"] for row in last.values()),
            "auc_delta": _mean(deltas) if deltas else None,
            "distance": _mean(r["distance_to_retrain"] for r in group),
            "retrains_forced": sum(r["s3t_retrains_forced"] or 0 for r in group) if method.startswith("s3t") else None,
            "prefixes_last": [row["s3t_prefixes"] for row in last.values()][0] if method.startswith("s3t") else None,
            "forget_auc_last": _mean(row["forget_auc"] for row in last.values()),
            "mia_auc_last": _mean(row["mia_auc"] for row in last.values()),
            "residual": _mean(r["relative_residual"] for r in group),
            "exact_retrained": _verdict(r["exact_retrained"] for r in group),
            "exact_s3t_active": _verdict(r["exact_s3t_active"] for r in group),
        }
    return out


def _training_table(result: dict) -> list[str]:
    lines = ["| method | train s | fwd+bwd samples | storage MB | inference ms/sample | test AUC | baseline AUC |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    train = _by([r for r in result["rows"] if r["workload"] == "train"], "method")
    for method in _methods(result):
        group = train.get((method,))
        if not group:
            continue
        lines.append(f"| {method} | {_fmt(_mean(r['train_s'] for r in group))} "
                     f"| {_fmt(_mean(r['grad_samples'] for r in group))} "
                     f"| {_fmt(_mean(r['storage_bytes'] for r in group) / 1e6)} "
                     f"| {_fmt(_mean(r['inference_ms_per_sample'] for r in group))} "
                     f"| {_fmt_auc(_mean(r['auc'] for r in group))} | {_fmt_auc(_mean(r['baseline_auc'] for r in group))} |")
    return lines


def _workload_table(result: dict, stats: dict[str, dict]) -> list[str]:
    lines = ["| method | steps | unlearning s/request | speed-up vs retrain | fwd+bwd samples/request | "
             "sample speed-up | compliance s | restored s | AUC after last | ΔAUC vs retrain | "
             "mean abs ΔP(Yes) vs retrain | forget-set AUC after last | MIA AUC after last | solver residual | "
             "S3T retrains forced (last prefixes) | exact: retrained = scratch | exact: S3T served = stage |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for method in _methods(result):
        s = stats.get(method)
        if s is None:
            continue
        s3t = f"{s['retrains_forced']} ({s['prefixes_last']})" if s["retrains_forced"] is not None else "n/a"
        speed = f"{s['speedup']:.1f}x" if s["speedup"] else "n/a"
        grad_speed = (f"{s['grad_speedup']:.1f}x" if s["grad_speedup"]
                      else "no retraining" if s["grad_samples"] == 0 else "n/a")
        delta = f"{s['auc_delta']:+.3f}" if s["auc_delta"] is not None else "n/a"
        lines.append(f"| {method} | {s['steps']} | {_fmt(s['unlearn_s'])} | {speed} | {_fmt(s['grad_samples'])} "
                     f"| {grad_speed} | {_fmt(s['compliance_s'])} | {_fmt(s['restored_s'])} | {_fmt_auc(s['auc_last'])} "
                     f"| {delta} | {_fmt(s['distance'])} | {_fmt_auc(s['forget_auc_last'])} | {_fmt(s['mia_auc_last'])} "
                     f"| {_fmt(s['residual'])} | {s3t} | {s['exact_retrained']} | {s['exact_s3t_active']} |")
    return lines


def _corrections_table(rows: Sequence[dict]) -> list[str]:
    lines = ["| corruption | model | seconds | solver residual | test AUC | mean abs ΔP(Yes) vs retrain (test) | "
             "mean abs ΔP(Yes) vs retrain (corrected records) | corrected-record AUC | MIA AUC of the corrupted "
             "versions | gap closed (corrected records) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (workload, model), group in _by(rows, "workload", "model").items():
        if any("error" in r for r in group):
            lines.append(f"| {workload} | {model} | failed: {group[0].get('error')} | | | | | | | |")
            continue
        lines.append(f"| {workload} | {model} | {_fmt(_mean(r['seconds'] for r in group))} "
                     f"| {_fmt(_mean(r.get('relative_residual') for r in group))} "
                     f"| {_fmt_auc(_mean(r['auc'] for r in group))} | {_fmt(_mean(r['distance_to_retrain'] for r in group))} "
                     f"| {_fmt(_mean(r['distance_to_retrain_corrected'] for r in group))} "
                     f"| {_fmt_auc(_mean(r['corrected_auc'] for r in group))} | {_fmt(_mean(r['mia_auc'] for r in group))} "
                     f"| {_percent(_mean(r.get('gap_closed') for r in group))} |")
    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def approximate_rows(result: dict) -> list[dict]:
    """Per influence step of the request streams: its quality beside the exact retrain of the same step."""
    exact = {(r["seed"], r["workload"], r["step"]): r for r in result["rows"] if r["method"] == "retrain"}
    out = []
    for r in result["rows"]:
        if r["method"] != "influence" or r["workload"] == "train":
            continue
        ref = exact.get((r["seed"], r["workload"], r["step"]), {})
        out.append({**r, "retrain_s": ref.get("unlearn_s"), "mia_auc_retrain": ref.get("mia_auc"),
                    "speedup": _speedup(ref.get("unlearn_s"), r["unlearn_s"])})
    return out


def _approximate_lines(result: dict) -> list[str]:
    rows = approximate_rows(result)
    if not rows:
        return []
    return _section(
        "Approximate path: forgetting measured against the exact retrain",
        "Per request step of `influence` beside `retrain`'s exact retrain of the same step. Gap closed: "
        "1 − ‖P_approx − P_retrain‖ / ‖P_original − P_retrain‖ over the erased records' P(Yes) (1: the retrain's "
        "predictions; 0: no closer than the adapter as trained; negative: further away). MIA AUC: loss-based "
        "membership inference of the erased records against as many test records, under the adapter as "
        "trained, the approximate update and the retrain. Update s: the whole step (receive and crypto-shred, "
        "the solve, writing and logging the version), beside the exact retrain's step. Backward passes: the solve's "
        "single-example backward passes (b, and the Fisher's columns) plus its double-backward HVP examples (none for "
        "the default direct solver).",
        ["workload", "step", "erased", "gap closed", "test AUC change", "MIA AUC original", "approximate", "retrain",
         "update s", "retrain s", "speed-up", "backward passes", "residual"],
        [(r["workload"].upper(), r["step"], r["erased_total"], _percent(r.get("gap_closed")),
          "n/a" if r.get("auc_change") is None else f"{r['auc_change']:+.3f}", _fmt(r.get("mia_auc_original")),
          _fmt(r.get("mia_auc")), _fmt(r["mia_auc_retrain"]), _fmt(r["unlearn_s"]), _fmt(r["retrain_s"]),
          _x(r["speedup"]), _fmt(r["grad_samples"]), _fmt(r.get("relative_residual")))
         for r in rows])


def _correction_losses(rows: Sequence[dict]) -> list[str]:
    notes = []
    for (workload, model), group in _by(rows, "workload", "model").items():
        if not model.startswith("influence") or any("error" in r for r in group):
            continue
        corrupted = [r for r in rows if r["workload"] == workload and r["model"] == "corrupted"]
        mine, before = _mean(r["distance_to_retrain"] for r in group), _mean(r["distance_to_retrain"] for r in corrupted)
        if mine is not None and before is not None and mine >= before:
            notes.append(f"{model}: {workload.upper()} update is no closer to the exact retrain than the corrupted "
                         f"adapter (mean abs ΔP(Yes) {mine:.3f} vs {before:.3f})")
        residual = _mean(r["relative_residual"] for r in group)
        if residual is not None and residual > POOR_RESIDUAL:
            notes.append(f"{model}: {workload.upper()} solve left relative residual {residual:.2f}")
    return notes


def losses(result: dict) -> list[str]:
    """Where a method does worse than retrain (or than the heuristic baseline), from the numbers."""
    notes = []
    train = {m: g for (m,), g in _by([r for r in result["rows"] if r["workload"] == "train"], "method").items()}
    ref = train.get("retrain")
    for method, group in train.items():
        auc, baseline = _mean(r["auc"] for r in group), _mean(r["baseline_auc"] for r in group)
        if auc is not None and baseline is not None and auc <= baseline:
            notes.append(f"{method}: after training, test AUC {auc:.3f} is not above the history-positivity "
                         f"baseline's {baseline:.3f}")
        if ref is None or method == "retrain":
            continue
        for field, what, factor in (("grad_samples", "training cost (fwd+bwd samples)", 1.2),
                                    ("inference_ms_per_sample", "inference time per sample", 1.2),
                                    ("storage_bytes", "storage", 1.5)):
            mine, theirs = _mean(r[field] for r in group), _mean(r[field] for r in ref)
            if mine and theirs and mine > factor * theirs:
                notes.append(f"{method}: {what} {mine / theirs:.1f}x retrain's")
    for workload in _streams(result):
        stats = workload_stats(result, workload)
        reference = stats.get("retrain", {}).get("mia_auc_last")
        for method, s in stats.items():
            if method == "retrain":
                continue
            if s["auc_delta"] is not None and s["auc_delta"] < -LOSS_MARGIN:
                notes.append(f"{method}: {workload.upper()} ends {s['auc_delta']:+.3f} AUC below retrain")
            if s["speedup"] is not None and round(s["speedup"], 2) < 1:  # 1.00x is parity, not a loss
                notes.append(f"{method}: {workload.upper()} unlearning is slower than retrain ({s['speedup']:.2f}x)")
            if "FAIL" in s["exact_retrained"] + s["exact_s3t_active"]:
                notes.append(f"{method}: {workload.upper()} exactness check FAILED")
            if s["residual"] is not None and s["residual"] > POOR_RESIDUAL:
                notes.append(f"{method}: {workload.upper()} solves left mean relative residual {s['residual']:.2f}")
            if s["mia_auc_last"] is not None and reference is not None and s["mia_auc_last"] > reference + LOSS_MARGIN:
                notes.append(f"{method}: {workload.upper()} erased records stay more recognisable than after a "
                             f"retrain (MIA AUC {s['mia_auc_last']:.3f} vs {reference:.3f})")
    return notes + _correction_losses(result.get("corrections", []))


# --- APA's Movie protocol (preset seed): cost two ways, S3T capacity, equal wall-clock, targets ----

EXCLUSION_METHODS = ("sisa", "apa-d", "apa-nd", "s3t-b1", "s3t-bL")
S3T_FORMULA_MARGIN = 0.10  # measured deletion counts within 10 % of the coupon-collector expectation


def _speedup(reference: float | None, mine: float | None) -> float | None:
    return reference / mine if reference and mine else None


def _x(value: float | None) -> str:
    return f"{value:.1f}x" if value is not None else "n/a"


def _train_rows(result: dict) -> dict[str, list[dict]]:
    return {m: g for (m,), g in _by([r for r in result["rows"] if r["workload"] == "train"], "method").items()}


def _prefix_lines(result: dict) -> list[str]:
    prefixes = result.get("prefixes")
    if not prefixes:
        return []
    return [f"Frozen-prefix states of {prefixes['sequences']} sequences (training records with their answers, "
            f"validation and test prompts) were computed once in {_fmt(prefixes['seconds'])} s before anything was "
            "timed, and shared by every method: a one-off cost, like the initial training.", ""]


def _section(title: str, intro: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
             numbers: bool = True) -> list[str]:
    """A summary section: title, a paragraph, and a table (numbers right-aligned after the first column)."""
    return [f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |",
            "|---|" + ("---:|" if numbers else "---|") * (len(columns) - 1),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows), ""]


def _epoch_lines(result: dict) -> list[str]:
    selection = result.get("epoch_selection")
    if not selection:
        return []
    return _section(
        "Epoch selection (once, on validation AUC)",
        f"One retrain run, scored on the {selection['validation']} validation records at each candidate "
        f"({_fmt(selection['seconds'])} s); every method then trains {selection['chosen']:g} epochs.",
        ["epochs", "validation AUC"],
        [(f"{e:g}{' (chosen)' if e == selection['chosen'] else ''}", _fmt_auc(auc))
         for e, auc in zip(selection["grid"], selection["validation_auc"], strict=True)])


def _cost_lines(result: dict) -> list[str]:
    submodel = {m: _mean(r.get("one_submodel_s") for r in g) for m, g in _train_rows(result).items()}
    streams = _streams(result)
    stats = {w: workload_stats(result, w) for w in streams}

    columns = {m: _mean(r.get("validation_column_s") for r in g) for m, g in _train_rows(result).items()}

    def cells(method: str) -> list[str]:
        out = [method, _fmt(submodel.get(method)), _x(_speedup(submodel.get("retrain"), submodel.get(method))),
               _fmt(columns.get(method))]
        for w in streams:
            mine = stats[w].get(method, {}).get("per_request_s")
            out += [_fmt(mine), _x(_speedup(stats[w].get("retrain", {}).get("per_request_s"), mine))]
        return out

    return _section(
        "Unlearning cost per request, two ways",
        "APA's protocol (RecEraser's): exactly one sub-model retrained per request — one shard's components from "
        "scratch (SISA: all its slices; S3T: all its orders and stages; APA: its adapter), the mean over shards of "
        "their training seconds; retrain: the whole model. APA also recomputes that adapter's validation column "
        "(its predictions on the validation records, forward only), shown apart. The product's: what the service "
        "did per request in each workload (coalesced: a step's seconds over its requests; SISA resumes from the "
        "last clean slice, S3T truncates instead of retraining).",
        ["method", "one sub-model s (APA's protocol)", "speed-up vs retrain", "+ validation column s (APA)",
         *(f"{w.upper()} {c}" for w in streams for c in ("s/request (product)", "speed-up"))],
        [cells(m) for m in _methods(result)])


def _s3t_lines(result: dict) -> list[str]:
    simulations = result.get("s3t_deletions")
    if not simulations:
        return []
    return _section(
        "S3T deletion capacity",
        "Uniform random single-record deletions on each trained S3T version (its own manifests, "
        f"{next(iter(simulations.values()))['trials']} simulated streams, no training): how many until the first "
        "shard, and until every shard, has no valid order left and must be retrained. The expectations are the "
        "coupon collector's over the m·B' first-position slices, each hit with probability 1/(mL): "
        "E[every shard] = mL·H_{mB'} (reference §4b), E[first shard] = mL ∫₀¹ (1-(1-u)^B')^m / u du. The keyed "
        "slice cut makes slices unequal: \"these slices\" is the same expectation with each first-position "
        "slice's actual share of the records.",
        ["method", "m", "L", "B", "B'", "first shard: measured", "expected", "these slices", "every shard: measured",
         "mL·H_{mB'}", "these slices"],
        [(method, sim["shards"], sim["slices"], sim["orders"], sim["first_position_slices"],
          _fmt(sim["measured_first"]), _fmt(sim["formula_first"]), _fmt(sim.get("sized_first")),
          _fmt(sim["measured_all"]), _fmt(sim["formula_all"]), _fmt(sim.get("sized_all")))
         for method, sim in simulations.items()])


def _equal_time_lines(result: dict) -> list[str]:
    compared = result.get("equal_time")
    if not compared:
        return []
    return _section(
        "Top-N cached layers vs all layers at equal wall-clock (retrain)",
        "The all-layers retrain trains on the same records and recipe for as many samples as fit into the top-N "
        "retrain's training seconds (the top-N side's prefix states are the one-off cost above).",
        ["LoRA layers", "training s", "samples", "epochs", "test AUC"],
        [(c["lora_layers"], _fmt(c["seconds"]), c["samples"], _fmt(c["epochs"]), _fmt_auc(c["auc"]))
         for c in (compared["top"], compared["all"])])


def targets(result: dict) -> list[tuple[str, str, bool | None]]:
    """The seed preset's targets: (target, measured, met; None where nothing was measured)."""
    train = _train_rows(result)
    auc = {m: _mean(r["auc"] for r in g) for m, g in train.items()}
    submodel = {m: _mean(r.get("one_submodel_s") for r in g) for m, g in train.items()}
    columns = {m: _mean(r.get("validation_column_s") for r in g) for m, g in train.items()}
    out: list[tuple[str, str, bool | None]] = []

    def auc_of(method: str) -> str:
        return _fmt_auc(auc[method]) if method in auc else "not run"

    ref, baseline = auc.get("retrain"), _mean(r["baseline_auc"] for r in train.get("retrain", []))
    out.append(("retrain test AUC above the history heuristic and >= 0.70",
                f"{_fmt_auc(ref)} (heuristic {_fmt_auc(baseline)})",
                None if ref is None or baseline is None else ref > baseline and ref >= 0.70))
    for method in ("apa-d", "apa-nd"):
        delta = auc[method] - ref if auc.get(method) is not None and ref is not None else None
        out.append((f"{method} test AUC within 0.02 of retrain",
                    f"{auc_of(method)}" + (f" (Δ {delta:+.3f})" if delta is not None else ""),
                    None if delta is None else delta >= -0.02))
    w1 = workload_stats(result, "w1") if "w1" in _streams(result) else {}
    for method in ("sisa", "apa-d", "apa-nd"):
        speed = _speedup(submodel.get("retrain"), submodel.get(method))
        product = _speedup(w1.get("retrain", {}).get("per_request_s"), w1.get(method, {}).get("per_request_s"))
        column = columns.get(method)
        with_column = (f", {_x(_speedup(submodel.get('retrain'), submodel[method] + column))} with the validation "
                       "column" if column is not None and submodel.get(method) is not None else "")
        out.append((f"{method} unlearning >= 3.5x faster per request than retrain (one sub-model, APA's protocol)",
                    f"{_x(speed)}{with_column} (product, W1: {_x(product)})", None if speed is None else speed >= 3.5))
    served = [r for r in result["rows"] if r["method"] in EXCLUSION_METHODS and r["workload"] != "train"
              and r["compliance_s"] is not None and (r["restored_s"] is None or r["compliance_s"] < r["restored_s"])]
    worst = max((r["compliance_s"] for r in served), default=None)
    out.append(("exact compliance by exclusion < 1 s (SISA, APA, S3T; every request served by an exclusion)",
                f"max {_fmt(worst)} s over {len(served)} requests", None if worst is None else worst < 1))
    for method, sim in result.get("s3t_deletions", {}).items():
        measured, formula = sim["measured_all"], sim["formula_all"]
        close = None if measured is None else abs(measured - formula) <= S3T_FORMULA_MARGIN * formula
        out.append((f"{method} deletions until every shard must retrain within 10 % of mL·H_{{mB'}}",
                    f"{_fmt(measured)} vs {_fmt(formula)} ({_fmt(sim.get('sized_all'))} for these slices; first shard "
                    f"{_fmt(sim['measured_first'])} vs {_fmt(sim['formula_first'])}); test AUC {auc_of(method)} beside SISA's {auc_of('sisa')}",
                    close))
    speeds = [(w, _speedup(s.get("retrain", {}).get("per_request_s"), s.get("influence", {}).get("per_request_s")))
              for w in _streams(result) if (s := workload_stats(result, w)).get("influence")]
    speeds = [(w, x) for w, x in speeds if x is not None]
    out.append(("influence update >= 10x faster than retrain",
                ", ".join(f"{w.upper()} {_x(x)}" for w, x in speeds) or "n/a",
                all(x >= 10 for _, x in speeds) if speeds else None))
    closed = _mean(r.get("gap_closed") for r in approximate_rows(result))
    out.append(("influence closes >= 50 % of the gap to the exact retrain on the forget set's P(Yes), on average",
                _percent(closed), None if closed is None else closed >= 0.5))
    for (workload, model), group in _by(result.get("corrections", []), "workload", "model").items():
        if not model.startswith("influence"):
            continue
        corrupted = [r for r in result["corrections"] if r["workload"] == workload and r["model"] == "corrupted"]
        mine = _mean(r.get("distance_to_retrain_corrected") for r in group)
        before = _mean(r.get("distance_to_retrain_corrected") for r in corrupted)
        out.append((f"{workload.upper()} {model} correction closer to the exact correction than the corrupted adapter "
                    "(corrected records' P(Yes))", f"{_fmt(mine)} vs {_fmt(before)} (gap closed "
                    f"{_percent(_mean(r.get('gap_closed') for r in group))})",
                    None if mine is None or before is None else mine < before))
    wall = result.get("wall_s")
    over = None if wall is None else wall > 90 * 60
    out.append(("whole preset wall time <= 90 min", f"{wall / 60:.1f} min" + ("" if result["complete"] else " so far")
                if wall is not None else "n/a", None if over is None or not (result["complete"] or over) else not over))
    return out


def _protocol_lines(result: dict) -> list[str]:
    lines = [*_cost_lines(result), *_s3t_lines(result), *_equal_time_lines(result), *_approximate_lines(result)]
    if result["settings"].get("window"):  # the targets are those of APA's Movie protocol
        lines += _section("Targets", "The issue's targets for APA's Movie protocol, from the numbers above.",
                          ["target", "measured", "verdict"],
                          [(t, m, "n/a" if met is None else "met" if met else "MISSED") for t, m, met in targets(result)],
                          numbers=False)
    return lines


def write_summary(result: dict, path: Path) -> None:
    settings, env, data = result["settings"], result.get("environment", {}), result["data"]
    done = {(r["method"], r["workload"]) for r in result["rows"]}
    expected = {(m, w) for m in settings["methods"] for w in ["train", *_streams(result)]}
    skipped = _skipped_influence(settings)
    expected -= {("influence", w) for w in skipped}
    missing = sorted(expected - done) + ([("retrain+influence", "w4")]
                                         if "w4" in settings["workloads"] and not result.get("corrections") else [])
    status = "complete" if result["complete"] else (
        f"PARTIAL: still running or stopped after {len(result['rows'])} rows"
        + ("; not measured yet: " + ", ".join(f"{m}/{w}" for m, w in missing) if missing else ""))
    lines = [
        f"# Unlearning benchmark, preset `{result['preset']}` ({status})", "",
        f"Base `{settings['base']}`, {data['train']} training and {data['test']} test records (MovieLens-100K"
        + (f", APA's chronological protocol: the last {settings['window']} samples by target time split 8:1:1, "
           f"{data['valid']} validation records, users across the splits" if settings.get("window") else "")
        + f"), {settings['shards']} shards x {settings['slices']} slices, {settings['epochs']} epochs"
        + (" (chosen on validation AUC)" if result.get("epoch_selection") else "")
        + (f", LoRA on the {settings['lora_layers']} layers" if settings.get("lora_layers", "all") != "all" else "")
        + f", lr {settings['lr']}, "
        f"batch {settings['batch_size']}, {settings['precision']}, seeds 0..{settings['seeds'] - 1}. "
        f"torch {env.get('torch')} on {env.get('device')}, {env.get('threads')} threads, "
        f"{env.get('cpu_count')} CPUs visible. Prompts hold the last {settings['history']} ratings"
        + (f"; the base model alone (zero-shot) scores test AUC {_fmt_auc(result['zero_shot'].get('auc'))}."
           if result.get("zero_shot") else ".")
        + (" S3T stages train 2E/(L+1) epochs each (SISA's slice schedule: an order costs what a SISA shard "
           "does; the paper trains E per stage)." if settings.get("s3t_sisa_schedule") else "")
        + (" APA(D) and APA(ND) are one trained and unlearned model scored with both merges (merge is "
           "inference-only: the adapters and the aggregator are the same bits), so they share every cost column."
           if settings.get("apa_shared") else ""), "",
        f"Workloads: {_workload_names(result)}. Unlearning time is everything "
        "the method does for a request (receive + crypto-shred, exact exclusion, retraining); certification and "
        "registration are not included (`erasure bench forget`). `influence` is the approximate path alone: the "
        f"trained retrain adapter moved by one influence update removing every record erased so far ({_solver(settings)}; "
        "its fwd+bwd count adds the solve's backward passes and HVP examples); it never gives exact compliance. Forget-set AUC scores the erased records with their true answers; MIA AUC is a "
        "loss-based membership inference of the erased records against as many test records (0.5: they look "
        "unseen)." + (f" `influence` does not run {', '.join(w.upper() for w in skipped)} in this preset (a full "
                      "solve per request)." if skipped else ""), "",
        *_prefix_lines(result),
        "## Initial training (one-off cost)", "", *_training_table(result), "",
        *_epoch_lines(result),
    ]
    for workload in _streams(result):
        stats = workload_stats(result, workload)
        if stats:
            lines += [f"## {_title(result, workload)}", "", *_workload_table(result, stats), ""]
    if result.get("corrections"):
        lines += [f"## {WORKLOAD_TITLES['w4']}", "",
                  "10 % of the training records corrupted (rc: answer flipped; qm: a random movie added to the liked "
                  "history), one adapter trained on them, then corrected: `retrain` is the exact correction (the same "
                  "recipe on the clean records), `influence-*` the approximate one from the corrupted adapter.", "",
                  *_corrections_table(result["corrections"]), ""]
    lines += _protocol_lines(result)
    notes = losses(result)
    lines += ["## Where methods lose", "", *(f"- {n}" for n in notes or ["nothing beyond the tables' margins"]), ""]
    path.write_text("\n".join(lines))


# --- plots ------------------------------------------------------------------------------------

def write_plots(result: dict, out: Path) -> list[Path]:
    """The three PNGs (Agg, no display): AUC vs erasures, unlearning cost per request, time to
    exact compliance vs utility after the request."""
    from matplotlib.figure import Figure  # a Figure alone renders with Agg; no pyplot state

    methods, workloads = _methods(result), _streams(result)
    rows = result["rows"]
    paths = []

    fig = Figure(figsize=(5 * max(1, len(workloads)), 4), layout="constrained")
    for ax, workload in zip(fig.subplots(1, max(1, len(workloads)), squeeze=False)[0], workloads, strict=False):
        for method in methods:
            mine = [r for r in rows if r["method"] == method and r["workload"] in ("train", workload)]
            points = _by(mine, "erased_total")
            xs = sorted(x for (x,) in points)
            if len(xs) > 1:
                ax.plot(xs, [_mean(r["auc"] for r in points[(x,)]) for x in xs], marker="o", label=method)
        baseline = _mean(r["baseline_auc"] for r in rows)
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle="--", label="history baseline")
        ax.set(title=_title(result, workload), xlabel="records erased", ylabel="test AUC")
    fig.axes[0].legend(fontsize="small")
    paths.append(_save(fig, out / PLOTS[0]))

    fig = Figure(figsize=(11, 4), layout="constrained")
    seconds_ax, samples_ax = fig.subplots(1, 2)
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        stats = [workload_stats(result, w).get(method, {}) for w in workloads]
        positions = [k + i * width for k in range(len(workloads))]
        seconds_ax.bar(positions, [s.get("unlearn_s") or 0 for s in stats], width, label=method)
        samples_ax.bar(positions, [s.get("grad_samples") or 0 for s in stats], width, label=method)
    for ax, label in ((seconds_ax, "wall seconds per request"), (samples_ax, "fwd+bwd samples per request")):
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(workloads))], [w.upper() for w in workloads])
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylabel(label)
    seconds_ax.legend(fontsize="small")
    fig.suptitle("Unlearning cost per request")
    paths.append(_save(fig, out / PLOTS[1]))

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    markers = dict(zip(workloads, "os^", strict=False))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for workload in workloads:
        for method, s in workload_stats(result, workload).items():
            if s["compliance_s"] is not None and s["auc"] is not None:
                ax.scatter(s["compliance_s"], s["auc"], color=colors.get(method, "k"), marker=markers[workload],
                           label=f"{method} {workload.upper()}")
    ax.set_xscale("log")
    ax.set(xlabel="time to exact compliance per request (s)", ylabel="test AUC after the request",
           title="Compliance time vs utility")
    ax.legend(fontsize="x-small", ncol=2)
    paths.append(_save(fig, out / PLOTS[2]))
    return paths


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.savefig(path, dpi=100)
    return path
