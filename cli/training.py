"""`erasure train | eval | predict | replay`.

torch, transformers and peft are imported inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from cli.models import print_components, version_summary
from cli.output import fail, print_json, registry_where
from ledger.errors import BadInput
from ledger.workspace import Workspace
from unlearning.training.config import TrainConfig

JSON_OUT = typer.Option(False, "--json", help="Print machine-readable JSON.")
VERSION = typer.Option(None, "--version", help="Model version (default: the newest).")


@contextmanager
def _progress() -> Iterator[object]:
    """Rich progress bars on stderr (only when it is a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        yield progress


def train(
    name: str = typer.Argument(..., help="Model name."),
    method: str = typer.Option("retrain", "--method", help="retrain, sisa, apa or s3t."),
    base: str = typer.Option("smollm2-135m", "--base", help="tiny, smollm2-135m or a local HF checkpoint directory."),
    shards: int | None = typer.Option(None, "--shards", min=1, help="Shards (default 4; retrain: 1)."),
    slices: int | None = typer.Option(None, "--slices", min=1,
                                      help="SISA/S3T slices per shard (default 4; retrain, apa: 1)."),
    epochs: float = typer.Option(1.0, "--epochs", help="Epochs E (fractions allowed); SISA spends the same compute."),
    seed: int = typer.Option(0, "--seed", help="Seed of LoRA init, dropout and data order."),
    lora_r: int = typer.Option(8, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", help="LoRA alpha."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="LoRA dropout."),
    target_modules: str = typer.Option("q_proj,v_proj", "--target-modules", help="Comma-separated module names."),
    lora_layers: str = typer.Option("auto", "--lora-layers",
                                    help="all, or top-N: LoRA on the top N layers only, the frozen layers' states "
                                         "computed once per record and cached encrypted (auto: top-4 on a CPU, "
                                         "where it is ~7x faster per step; all on a GPU or the tiny base)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", help="Linear warm-up steps, then a constant rate."),
    batch_size: int = typer.Option(4, "--batch-size", help="Examples per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", help="Longest allowed prompt + answer, in tokens."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the device has native bf16: "
                                  "CUDA, AVX-512 BF16 or AMX; else fp32), fp32 or bf16."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads (default: up to 4)."),
    partition: str | None = typer.Option(None, "--partition",
                                         help="APA shards: subject (keyed hash, default) or public-centroid."),
    catalogue: str | None = typer.Option(None, "--catalogue", help="public-centroid: movielens-100k (default) or a "
                                         "file of public item labels, one a line."),
    merge: str | None = typer.Option(None, "--merge", help="APA merge: d (A and B averaged) or nd (sum w B A, default)."),
    tau: float | None = typer.Option(None, "--tau", help="APA temperature of softmax(-tau * error) (default 1000)."),
    neighbours: int | None = typer.Option(None, "--neighbours", help="APA validation neighbours per input (default 20)."),
    layers_per_group: int | None = typer.Option(None, "--layers-per-group", help="S3T layers per LoRA group (default 1)."),
    budget: int | None = typer.Option(None, "--budget", help="S3T slice orders per shard (default: --slices)."),
    order_selection: str | None = typer.Option(None, "--order-selection",
                                               help="S3T orders: cyclic (default) or bms (needs --deletion-prior)."),
    deletion_prior: str | None = typer.Option(None, "--deletion-prior",
                                              help="S3T bms: comma-separated deletion probability of each slice."),
    as_json: bool = JSON_OUT,
) -> None:
    """Train version 1 of a LoRA model on the store's training records and print its components."""
    from unlearning import methods
    from unlearning.operations.build import train_model
    from unlearning.training.engine import bf16_supported, default_lora_layers, default_precision

    if precision == "auto":
        precision = default_precision(base)
    elif precision == "bf16" and not bf16_supported():
        typer.echo("warning: this device has no native bf16 (no AVX-512 BF16, AMX or CUDA bf16): bf16 autocast is "
                   "emulated here, about 30x slower than fp32", err=True)
    if lora_layers == "auto":
        lora_layers = default_lora_layers(base)
    chosen = methods.get(method)
    slices = slices or chosen.default_slices
    given = {"partition": partition, "catalogue": catalogue, "merge": merge, "tau": tau, "neighbours": neighbours,
             "layers_per_group": layers_per_group, "budget": budget, "order_selection": order_selection,
             "deletion_prior": _floats(deletion_prior, "--deletion-prior")}
    given = {**chosen.default_fields(slices), **{k: v for k, v in given.items() if v is not None}}
    config = TrainConfig(
        method=method, base=base, shards=shards or chosen.default_shards, slices=slices,
        epochs=epochs, seed=seed, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()), lora_layers=lora_layers,
        lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, batch_size=batch_size, max_length=max_length,
        precision=precision, threads=threads or min(4, os.cpu_count() or 1),
        **given,
    )
    ws = Workspace.from_env()
    with _progress() as progress:
        version = train_model(ws, name, config, progress)
    summary = version_summary(version.name, version.version)
    summary["registered"] = _register(ws, version)
    if as_json:
        print_json(summary)
    else:
        print_components(summary)


def _register(ws: Workspace, version) -> dict | None:  # type: ignore[no-untyped-def]
    """Certify and register the new version when keys and a registry are at hand; say why not otherwise."""
    from unlearning.operations.publish import register_trained, registry_unready

    reason = registry_unready(ws)
    if reason is not None:
        typer.echo(f"note: v{version.version} is not certified or registered yet ({reason}); "
                   "`erasure forget` certifies it before its first erasure", err=True)
        return None
    registered = register_trained(ws, version)
    typer.echo(f"certified and registered as models:/{version.name}/{registered.version} "
               f"(alias {', '.join(registered.aliases) or '-'}); registry: {registry_where(ws)[0]}", err=True)
    return {"version": registered.version, "status": registered.status, "aliases": list(registered.aliases),
            "certificate_sha256": registered.certificate_sha256}


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a comma-separated list of numbers") from None


def evaluate(
    name: str = typer.Argument(..., help="Model name."),
    version: int | None = VERSION,
    split: str = typer.Option("test", "--split", help="Held-out subjects to evaluate on: test or valid."),
    as_json: bool = JSON_OUT,
) -> None:
    """AUC and accuracy on held-out subjects, beside the history-positivity baseline AUC."""
    from unlearning.data.records import RecordStore
    from unlearning.evaluation import evaluate as run
    from unlearning.versions.store import ModelStore

    workspace = Workspace.from_env()
    model = ModelStore(workspace).get(name, version)
    with RecordStore.open(workspace) as store:
        records = store.records(split)
    with _progress() as progress:
        result = run(model, records, progress)
    if as_json:
        print_json(result.to_dict())
        return

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    typer.echo(f"{name} v{model.version} on {result.n} {split} samples: AUC {fmt(result.auc)} "
               f"(history-positivity baseline AUC {fmt(result.baseline_auc)}), accuracy {fmt(result.accuracy)}")


def predict(
    name: str = typer.Argument(..., help="Model name."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt to score."),
    version: int | None = VERSION,
    as_json: bool = JSON_OUT,
) -> None:
    """P(Yes) for one prompt (mean over the aggregated components)."""
    from unlearning.inference import Predictor
    from unlearning.versions.store import ModelStore

    model = ModelStore(Workspace.from_env()).get(name, version)
    p_yes = Predictor(model).p_yes([prompt])[0]
    if as_json:
        print_json({"p_yes": p_yes, "answer": "Yes" if p_yes >= 0.5 else "No"})
    else:
        typer.echo(f"P(Yes) = {p_yes:.4f}")


def replay(
    name: str = typer.Argument(..., help="Model name."),
    component: str = typer.Option(..., "--component", help="Component id, e.g. shard0-slice3."),
    version: int | None = VERSION,
    as_json: bool = JSON_OUT,
) -> None:
    """Retrain a component from the retained records and compare digests (exit 0 equal, 1 different)."""
    from unlearning.operations.build import replay_component
    from unlearning.versions.store import ModelStore

    workspace = Workspace.from_env()
    model = ModelStore(workspace).get(name, version)
    with _progress() as progress:
        result = replay_component(workspace, model, component, progress)
    if as_json:
        print_json({"component": result.component, "equal": result.equal, "expected_sha256": result.expected_sha256,
                    "replayed_sha256": result.replayed_sha256, "manifest_size": result.manifest_size,
                    "missing_records": result.missing_records})
    elif result.equal:
        typer.echo(f"{component}: replay reproduces weights sha256 {result.expected_sha256}")
    if not result.equal:
        missing = f" ({result.missing_records} of its records are no longer in the store)" if result.missing_records else ""
        fail(f"{component}: replayed weights sha256 {result.replayed_sha256} != recorded "
             f"{result.expected_sha256}{missing}", 1)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("eval")(evaluate)
    app.command()(predict)
    app.command()(replay)
