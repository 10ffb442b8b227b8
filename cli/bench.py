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
    tile_checks: int = typer.Option(20, "--tile-checks", min=1, help="Verifications from the served tiles per size "
                                    "(a fresh client each: checkpoint, consistency, three entries)."),
    database: str | None = typer.Option(None, "--database", help="Shared mode: also run on this PostgreSQL "
                                        "database (in a schema of its own, dropped afterwards) and report it beside "
                                        "SQLite."),
    shared: bool = typer.Option(False, "--shared", help="Shared mode on the workspace's database URL "
                                "(ERASURE_DATABASE_URL, \\[database] url, or `erasure dev up --shared`'s server)."),
    single: int = typer.Option(200, "--single", min=1, help="Shared mode: single-entry appends timed on each store."),
    object_store: str | None = typer.Option(None, "--object-store", help="Also publish the tiles to this object "
                                            "store (s3://BUCKET/PREFIX?endpoint=URL, under a scratch prefix deleted "
                                            "afterwards) and verify from it, beside the directory; --shared: the "
                                            "workspace's, when it has one."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Ledger append throughput and proof generation/verification time at each size; the log
    published as tiles, and what verifying from them over HTTP costs (time, requests, bytes).
    Shared mode (--database/--shared): appends/s on PostgreSQL beside SQLite, in one run; with
    --object-store (or --shared), tiles published to and served from the object store too."""
    if shared:
        from ledger.workspace import Workspace

        workspace = Workspace.from_env()
        database = database or workspace.database_url()
        object_store = object_store or workspace.object_store_url()
        if database is None:
            raise BadInput("--shared: no database URL (set ERASURE_DATABASE_URL, [database] url in erasure.toml, or "
                           "run `erasure dev up --shared`), or give --database URL")
    result = run_ledger_benchmark(_sizes(sizes), batch=batch, proofs=proofs, tile_checks=tile_checks,
                                  database_url=database, single=single, object_store_url=object_store)
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
        typer.echo(
            f"{'':>9}          tiles: published in {row['tiles_publish_s']:.2f} s ({row['tiles_dir_bytes'] / 1e6:.1f} MB), "
            f"verify over HTTP {row['tiles_verify_ms']:.1f} ms (p99 {row['tiles_verify_p99_ms']:.1f}), "
            f"{row['tiles_requests']:.1f} requests, {row['tiles_fetched_bytes'] / 1024:.1f} KiB fetched"
        )
    if "shared" in result:
        report = result["shared"]
        typer.echo(f"PostgreSQL {report['postgresql']} at {report['database']} beside SQLite {result['sqlite']}:")
        for row in report["results"]:
            typer.echo(f"{row['entries']:>9} entries: {row['appends_per_s']:>9.0f} appends/s "
                       f"(SQLite {row['sqlite_appends_per_s']:.0f}, ratio {row['ratio']:.2f}), "
                       f"inclusion {row['inclusion_prove_ms']:.3f} ms, audit {row['audit_s']:.1f} s")
        one = report["single"]
        typer.echo(f"{'':>9} single-entry appends: {one['appends_per_s']:.0f}/s "
                   f"(SQLite {one['sqlite_appends_per_s']:.0f}/s, ratio {one['ratio']:.2f})")
    if "object_store" in result:
        typer.echo(f"tiles in the object store {result['object_store']['url']} beside the directory:")
        for row in result["object_store"]["results"]:
            typer.echo(f"{row['entries']:>9} entries: published in {row['publish_s']:.2f} s (directory "
                       f"{row['dir_publish_s']:.2f} s, ratio {row['publish_ratio'] or 0:.1f}), verify over HTTP "
                       f"{row['verify_ms']:.1f} ms (directory {row['dir_verify_ms']:.1f} ms, ratio "
                       f"{row['verify_ratio'] or 0:.1f}), {row['requests']:.1f} requests")


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
    rate: float = typer.Option(None, "--rate", min=0.01, help="Requests per second: the latency run's (default 5) "
                               "or the soak's (default 0.5)."),
    window: float = typer.Option(2.0, "--window", min=0.0, help="Executor coalescing window, seconds."),
    executors: int = typer.Option(None, "--executors", min=0, help="Executor processes (0: exclusions alone, no "
                                  "retrains); default 1, or 2 in a soak."),
    soak: float = typer.Option(0.0, "--soak", min=0.0, metavar="MINUTES", help="Instead: a soak, a steady request "
                               "stream for MINUTES, then a drain; reports percentiles, consumer lag, RSS growth "
                               "and any request not in a final stage."),
    drain: float = typer.Option(600.0, "--drain", min=0.0, help="Soak: seconds to wait after the stream for every "
                                "request to reach a final stage."),
    out: Path = typer.Option(Path("bench-results/soak"), "--out", help="Soak: directory for soak.json and soak.png."),
    users: int = typer.Option(None, "--users", min=4, help="Ingest only the first N MovieLens users [default: all "
                              "943]; fewer users: a faster setup, fewer requests possible."),
    shared: bool = typer.Option(False, "--shared", help="Shared mode: the same workload in one run on the embedded "
                                "backends (SQLite, local artifacts) and then on the shared ones (PostgreSQL + S3 "
                                "object store), side by side with the ratio shared/embedded. Uses the workspace's "
                                "database URL and object store (ERASURE_DATABASE_URL / ERASURE_OBJECT_STORE, "
                                "erasure.toml, `erasure dev up --shared`); for one not configured, a throwaway "
                                "PostgreSQL / SeaweedFS is started and purged afterwards."),
    database: str = typer.Option(None, "--database", metavar="URL", help="Shared mode on this PostgreSQL server: "
                                 "the run creates databases of its own there (the role needs CREATEDB) and drops "
                                 "them afterwards."),
    object_store: str = typer.Option(None, "--object-store", metavar="URL", help="Shared mode with this object "
                                     "store (s3://BUCKET/PREFIX?endpoint=...&credentials=FILE): the run writes "
                                     "under a prefix of its own and deletes it afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Planner throughput (requests/s from Kafka to ledger + jobs) and end-to-end latency
    percentiles (request -> excluded, certified, restored) on the configured Kafka and MLflow,
    with a scratch workspace, MovieLens-100K and the tiny base model; or, with --soak, a soak.
    Shared mode (--shared, --database, --object-store): the same measured on the embedded and on
    the shared backends in one run, side by side."""
    from ledger.workspace import Workspace

    ws = Workspace.from_env()
    shared_mode = shared or database is not None or object_store is not None
    if soak:
        if shared_mode or users is not None:
            raise BadInput("--soak takes neither --shared/--database/--object-store nor --users")
        _soak(ws, soak, rate or 0.5, 2 if executors is None else executors, window, drain, out, as_json)
        return
    from consumers.bench import run_pipeline_benchmark

    if shared and database is None:
        database = ws.database_url()
    if shared and object_store is None:
        object_store = ws.object_store_url()
    result = run_pipeline_benchmark(ws.kafka_bootstrap(), ws.mlflow_uri(embedded=False), requests, load,
                                    rate or 5.0, window, 1 if executors is None else executors, users=users,
                                    shared=shared_mode, database_url=database, object_store_url=object_store)
    if as_json:
        print_json(result)
        return
    if "shared" in result:
        typer.echo(f"embedded (SQLite {result['sqlite']}, local artifacts):")
    _print_pipeline(result)
    if "shared" in result:
        report, comparison = result["shared"], result["comparison"]
        typer.echo(f"shared (PostgreSQL {report['postgresql']} at {report['database']}, "
                   f"objects in {report['object_store']}):")
        _print_pipeline(report)
        planner = comparison["planner_requests_per_s"]
        typer.echo(f"shared / embedded: planner {planner['ratio']:.2f}" if planner["ratio"] is not None
                   else "shared / embedded: planner n/a")
        for status, cuts in comparison["latency_s"].items():
            typer.echo(f"  -> {status:9} p50 {_times(cuts['p50']['ratio'])}, p95 {_times(cuts['p95']['ratio'])}")


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _print_pipeline(result: dict) -> None:
    planner, latency = result["planner"], result["latency"]
    typer.echo(f"planner: {planner['requests']} requests in {planner['seconds']:.2f} s = "
               f"{planner['requests_per_s']:.0f} requests/s")
    typer.echo(f"latency ({latency['requests']} requests at {latency['rate_per_s']:g}/s, "
               f"{latency['executors']} executors):")
    for status, cuts in latency["seconds"].items():
        typer.echo(f"  -> {status:9} p50 {cuts['p50']:.2f} s, p95 {cuts['p95']:.2f} s, p99 {cuts['p99']:.2f} s")


def _soak(ws, minutes: float, rate: float, executors: int, window: float, drain: float, out: Path,  # type: ignore[no-untyped-def]
          as_json: bool) -> None:
    import json

    from consumers.soak import run_soak, write_soak_plot

    def progress(row: dict) -> None:
        rss = ", ".join(f"{k} {v:.0f}" for k, v in row["rss_mb"].items() if v is not None)
        lag = ", ".join(f"{k} {v}" for k, v in row["lag"].items())
        typer.echo(f"{row['t_s'] / 60:6.1f} min: sent {row['sent']}, final {row['final']}; lag {lag}; RSS MiB {rss}",
                   err=True)

    result = run_soak(ws.kafka_bootstrap(), ws.mlflow_uri(embedded=False), minutes, rate, executors, window, drain,
                      progress=progress, logs=out / "logs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    write_soak_plot(result, out / "soak.png")
    if as_json:
        print_json(result)
        return
    r = result["requests"]
    typer.echo(f"soak: {r['sent']} requests over {minutes:g} min at {rate:g}/s, {executors} executors; "
               f"{r['final']} final ({r['restored']} restored, {r['rejected']} rejected, {r['failed']} failed), "
               f"{len(r['not_final'])} not final after a {result['drain_s']:.0f} s drain")
    for failure in r["failures"]:
        typer.echo(f"  {failure['status']} {failure['request_id']}: {failure['reason']}")
    for status, cuts in result["seconds"].items():
        if cuts:
            typer.echo(f"  -> {status:9} p50 {cuts['p50']:.2f} s, p95 {cuts['p95']:.2f} s, p99 {cuts['p99']:.2f} s, "
                       f"max {cuts['max']:.2f} s ({cuts['requests']} requests)")
    for role, lag in result["lag"].items():
        typer.echo(f"  lag {role:9} max {lag['max']}, at the stream's end {lag['stream_end']}, drained {lag['drained']}")
    for proc, rss in result["rss"].items():
        if rss:
            typer.echo(f"  RSS {proc:11} {rss['first_mb']:.0f}, warm {rss['warm_mb']:.0f} -> {rss['last_mb']:.0f} MiB "
                       f"(max {rss['max_mb']:.0f}; growth since warm-up {rss['growth_after_warm_up_mb']:+.0f})")
    typer.echo(f"wrote {out}/soak.json and soak.png")
