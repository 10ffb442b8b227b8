"""The `erasure` command: thin typer commands over the packages (design §9).

Sub-modules import only light dependencies at module level, so `--help` and the auditor's
commands start fast and work without torch, transformers or Kafka installed.
"""

from __future__ import annotations

import sys

import typer

from cli import bench, data, dev, keys, ledger, models, pipeline, registry, training
from ledger.errors import ErasureError

app = typer.Typer(
    name="erasure",
    help="Certified, exact machine unlearning for LoRA-tuned LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(dev.app, name="dev")
app.add_typer(keys.app, name="keys")
app.add_typer(data.app, name="data")
training.register(app)  # train, eval, predict, replay
app.add_typer(models.app, name="models")
pipeline.register(app)  # request, serve, status
app.add_typer(ledger.app, name="ledger")
registry.register(app)  # forget, verify, pull
app.add_typer(bench.app, name="bench")


def main() -> None:
    try:
        app()
    except ErasureError as err:
        typer.echo(f"erasure: error: {err}", err=True)
        sys.exit(err.exit_code)
