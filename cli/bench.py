"""`erasure bench`: benchmarks with JSON results (performance is measured here, never in tests)."""

from pathlib import Path

import typer

from cli.output import print_json
from ledger.bench import run_ledger_benchmark
from ledger.errors import BadInput

app = typer.Typer(help="Benchmarks: JSON results, side-by-side comparisons.", no_args_is_help=True)


@app.command()
def unlearning(
    preset: str = typer.Option("tiny", "--preset", help="tiny (CI smoke test: tiny model, minutes), cpu (SmolLM2 + "
                               "MovieLens; about 1.5 hours on 2 idle cores, W1 of 5 requests), gpu (CUDA, 3 seeds), "
                               "seed (APA's Movie protocol, about 75 min on 2 idle cores: chronological split, "
                               "1024/500/1000 samples, 4 shards of 256, top-4 LoRA layers, epochs chosen on validation, "
                               "targets) or seed-tiny (the same protocol on the tiny model, seconds)."),
    seeds: int = typer.Option(None, "--seeds", min=1, help="Seeds 0..N-1 [default: the preset's]."),
    out: Path = typer.Option(Path("bench-results/unlearning"), "--out",
                             help="Directory for results.json, summary.md and the PNG plots (written as it goes)."),
    base: str = typer.Option(None, "--base", help="Base model [default: the preset's]: tiny, smollm2-135m or a "
                             "local Hugging Face checkpoint directory."),
    methods: str = typer.Option("retrain,sisa,apa-d,apa-nd,s3t-b1,s3t-bL,influence", "--methods",
                                help="Comma-separated methods (keep retrain: the reference for speed-ups and distances, run first; "
                                "influence is the approximate path, updating retrain's adapter)."),
    workloads: str = typer.Option(None, "--workloads",
                                  help="Comma-separated workloads, run in this order: w1 sequential single records, "
                                  "w2 one batch (5 % of the training records; the seed presets' share is smaller), w3 "
                                  "subjects, w4 corruption then correction (retrain and influence only) [default: the "
                                  "preset's: w1,w2,w3,w4; seed presets w1,w2,w3]."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads [default: the preset's]."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json instead of the summary."),
) -> None:
    """Retrain vs SISA vs APA (D, ND) vs S3T (B=1, B=L) vs the approximate influence update on the
    same data, base model, LoRA recipe, seeds and erasure requests: unlearning cost, time to
    compliance, utility, distance to retrain, forget-set AUC and membership inference, storage,
    inference cost and exactness checks."""
    from unlearning.bench.unlearning import preset_named, run_unlearning_benchmark

    def items(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    result = run_unlearning_benchmark(preset_named(preset), out, seeds, items(methods),
                                      items(workloads) if workloads is not None else None, base,
                                      threads, log=lambda line: typer.echo(line, err=True))
    if as_json:
        print_json(result)
        return
    typer.echo((out / "summary.md").read_text())
    typer.echo(f"wrote {out}/results.json, summary.md and the plots")


@app.command()
def speed(
    out: Path = typer.Option(Path("bench-results/speed"), "--out", help="Directory for results.json and summary.md."),
    base: str = typer.Option("smollm2-135m", "--base", help="tiny, smollm2-135m or a local checkpoint directory."),
    threads: int = typer.Option(2, "--threads", min=1, help="Torch threads of the reference path."),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps per path (after one warm-up step)."),
    layers: str = typer.Option("8,4", "--layers", help="Comma-separated N of the top-N paths timed."),
    bf16: bool = typer.Option(False, "--bf16", help="Also time bf16 autocast (emulated on most CPUs: minutes per step)."),
    compiled: bool = typer.Option(False, "--compile", help="Also time torch.compile of the trainable layers."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json instead of the summary."),
) -> None:
    """Seconds per training step of each exact path side by side: all LoRA layers, top-8 and top-4
    with and without the activation cache, threads, batch size, length bucketing, bf16, compile."""
    from unlearning.bench.speed import run_speed_benchmark

    result = run_speed_benchmark(out, base, threads, steps, _sizes(layers, "--layers"), bf16, compiled,
                                  log=lambda line: typer.echo(line, err=True))
    if as_json:
        print_json(result)
        return
    typer.echo((out / "summary.md").read_text())


def _sizes(text: str, option: str = "--sizes") -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a comma-separated list of integers") from None
    if not sizes or any(s < 1 for s in sizes):
        raise BadInput(f"{option} must be positive")
    return sizes


@app.command()
def ledger(
    sizes: str = typer.Option("1000,100000,1000000", "--sizes", help="Comma-separated log sizes."),
    batch: int = typer.Option(1000, "--batch", min=1, help="Entries per append transaction."),
    proofs: int = typer.Option(1000, "--proofs", min=1, help="Proofs generated and verified per size."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Ledger append throughput and proof generation/verification time at each size."""
    result = run_ledger_benchmark(_sizes(sizes), batch=batch, proofs=proofs)
    if as_json:
        print_json(result)
        return
    for row in result["results"]:
        typer.echo(
            f"{row['entries']:>9} entries: {row['appends_per_s']:>9.0f} appends/s, "
            f"inclusion {row['inclusion_prove_ms']:.3f} + {row['inclusion_verify_ms']:.3f} ms, "
            f"consistency {row['consistency_prove_ms']:.3f} + {row['consistency_verify_ms']:.3f} ms, "
            f"audit {row['audit_s']:.1f} s"
        )


@app.command("s3t-capacity")
def s3t_capacity(
    shards: int = typer.Option(4, "--shards", min=1, help="Shards m."),
    slices: int = typer.Option(4, "--slices", min=1, help="Slices L per shard."),
    budget: int = typer.Option(4, "--budget", min=1, help="S3T slice orders B per shard (cyclic rotations)."),
    trials: int = typer.Option(10000, "--trials", min=1, help="Simulated deletion sequences."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated deletions."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Mean uniformly random single-record deletions until every shard (and the first shard)
    must be retrained: S3T with B orders vs SISA slicing, beside the coupon-collector formulas."""
    from unlearning.methods.s3t.capacity import simulate

    result = simulate(shards, slices, budget, trials=trials, seed=seed)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{shards} shards x {slices} slices, {trials} trials: deletions until every shard is exhausted")
    for method, label in (("s3t", f"S3T (B={budget})"), ("sisa", "SISA")):
        typer.echo(f"  {label:10} {result[method + '_mean']:8.2f}  (formula {result[method + '_formula']:.2f}); "
                   f"first forced retrain after {result[method + '_first_retrain_mean']:.2f}")


@app.command()
def forget(
    methods: str = typer.Option("retrain,sisa,apa,s3t", "--methods", help="Comma-separated methods, compared in one run."),
    users: int = typer.Option(40, "--users", min=4, help="MovieLens users whose samples are ingested."),
    per_user: int = typer.Option(6, "--per-user", min=1, help="Most recent samples per user."),
    base: str = typer.Option("tiny", "--base", help="Base model: tiny, smollm2-135m or a local checkpoint."),
    shards: int = typer.Option(4, "--shards", min=1, help="Shards for sisa/apa/s3t."),
    slices: int = typer.Option(2, "--slices", min=1, help="Slices for sisa/s3t."),
    epochs: float = typer.Option(1.0, "--epochs", help="Training epochs."),
    certificate_sizes: str = typer.Option("1000,100000,1000000", "--certificate-sizes",
                                          help="Manifest sizes for the certificate issue/verify timings."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Time to exact compliance (certified exclusion, alias moved) and to restored utility
    (certified retrain) per method in one run, next to a full retrain; certificate issue/verify
    time and size for manifests of growing size."""
    from ledger.certificate_bench import run_certificate_benchmark
    from unlearning.bench.forget import run_forget_benchmark
    from unlearning.data import movielens
    from unlearning.training.config import TrainConfig

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    records = movielens.build_samples(movielens.load(), per_user=per_user, max_users=users)
    common = {"base": base, "epochs": epochs, "seed": 0, "lr": 0.01 if base == "tiny" else 1e-3}
    layout = {"retrain": {}, "sisa": {"shards": shards, "slices": slices}, "apa": {"shards": shards},
              "s3t": {"shards": shards, "slices": slices}}
    unknown = sorted(set(chosen) - layout.keys())
    if unknown:
        raise BadInput(f"unknown method {unknown[0]!r} (one of {', '.join(layout)})")
    configs = {m: TrainConfig(method=m, **common, **layout[m]) for m in chosen}
    result = {"forget": run_forget_benchmark(chosen, configs, records),
              "certificates": run_certificate_benchmark(_sizes(certificate_sizes))}
    if as_json:
        print_json(result)
        return
    for row in result["forget"]["results"]:
        exact = row["exact_compliance_s"]
        ratio = row["restore_vs_full_retrain"]
        typer.echo(f"{row['method']:8} exact compliance {f'{exact:.1f} s' if exact is not None else 'n/a (no exclusion)':>24}, "
                   f"restored utility {row['restored_utility_s'] or 0:.1f} s"
                   + (f" ({ratio:.2f} of a full retrain)" if ratio else ""))
    for row in result["certificates"]["results"]:
        typer.echo(f"certificate over {row['records']:>8} records: issue {row['issue_s']:.2f} s, verify "
                   f"{row['verify_s']:.2f} s, envelope {row['envelope_bytes']} B, leaves {row['leaves_bytes']} B")


@app.command()
def pipeline(
    requests: int = typer.Option(1500, "--requests", min=1, help="Requests waiting in the topic for the throughput run."),
    load: int = typer.Option(100, "--load", min=2, help="Requests sent at --rate for the latency run."),
    rate: float = typer.Option(5.0, "--rate", min=0.1, help="Requests per second in the latency run."),
    window: float = typer.Option(2.0, "--window", min=0.0, help="Executor coalescing window, seconds."),
    executors: int = typer.Option(1, "--executors", min=0, help="Executor processes in the latency run (0: "
                                  "exclusions alone, no retrains)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Planner throughput (requests/s from Kafka to ledger + jobs) and end-to-end latency
    percentiles (request -> excluded, certified, restored) on the configured Kafka and MLflow,
    with a scratch workspace, MovieLens-100K and the tiny base model."""
    from consumers.bench import run_pipeline_benchmark
    from ledger.workspace import Workspace

    ws = Workspace.from_env()
    result = run_pipeline_benchmark(ws.kafka_bootstrap(), ws.mlflow_uri(), requests, load, rate, window, executors)
    if as_json:
        print_json(result)
        return
    planner, latency = result["planner"], result["latency"]
    typer.echo(f"planner: {planner['requests']} requests in {planner['seconds']:.2f} s = "
               f"{planner['requests_per_s']:.0f} requests/s")
    typer.echo(f"latency ({latency['requests']} requests at {latency['rate_per_s']:g}/s, "
               f"{latency['executors']} executors):")
    for status, cuts in latency["seconds"].items():
        typer.echo(f"  -> {status:9} p50 {cuts['p50']:.2f} s, p95 {cuts['p95']:.2f} s, p99 {cuts['p99']:.2f} s")
