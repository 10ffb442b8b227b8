"""`erasure models`: inspect trained models and their components."""

from __future__ import annotations

import typer

from cli.output import print_json
from ledger.workspace import Workspace

app = typer.Typer(help="Inspect trained models and their components.", no_args_is_help=True)


def version_summary(name: str, version: int | None = None) -> dict:
    from unlearning import methods
    from unlearning.versions.store import ModelStore

    v = ModelStore(Workspace.from_env()).get(name, version)
    summary = {
        "name": v.name, "version": v.version, "method": v.meta.method, "base": v.meta.base["name"],
        "config_sha256": v.meta.config_sha256, "aggregate": v.aggregate,
        "components": [c.summary() for c in v.components],
    }
    return {**summary, **methods.get(v.meta.method).describe(v)}


def print_components(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['name']} v{summary['version']} ({summary['method']}, base {summary['base']})")
    for column in ("component", "shard", "slice", "records", "manifest root", "weights sha256", "aggregated"):
        table.add_column(column)
    for c in summary["components"]:
        shard, slice_ = ("" if x is None else str(x) for x in (c["shard"], c["slice"]))  # None: APA's aggregator
        table.add_row(c["id"], shard, slice_, str(c["manifest_size"]), c["manifest_root"][:16],
                      c["weights_sha256"][:16], "yes" if c["id"] in summary["aggregate"] else "")
    console = Console(width=140)
    console.print(table)
    for shard in summary.get("s3t_orders", []):
        orders = ", ".join(f"{'-'.join(map(str, o['order']))} valid {o['valid_prefix']}" for o in shard["orders"])
        console.print(f"shard {shard['shard']} slice orders: {orders}")


@app.command()
def show(
    name: str = typer.Argument(..., help="Model name."),
    version: int | None = typer.Option(None, "--version", help="Version (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """A model version's components: id, shard, slice, manifest root and size, weights digest."""
    summary = version_summary(name, version)
    if as_json:
        print_json(summary)
    else:
        print_components(summary)
