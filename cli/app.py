"""The `erasure` command: thin typer commands over the packages (design §9).

Sub-modules import only light dependencies at module level, so `--help` and the auditor's
commands start fast and work without torch, transformers or Kafka installed.
"""

from __future__ import annotations

import sqlite3

import typer
from typer.core import TyperGroup

from cli import admin, bench, data, dev, keys, ledger, models, monitor, pipeline, registry, report, training, witness
from ledger.errors import ErasureError


class _ErasureGroup(TyperGroup):
    """Maps package errors to a one-line reason on stderr and the design's exit code.

    Done in the root group (not in `main`) so in-process callers such as typer's CliRunner see
    exactly what a shell user sees.
    """

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except ErasureError as err:
            typer.echo(f"erasure: error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except sqlite3.DatabaseError as err:
            # SQLite's own corruption errors ("malformed", "not a database") met outside the
            # stores' own checks; its subclasses (locks, constraints) are bugs and keep a traceback
            if type(err) is not sqlite3.DatabaseError:
                raise
            from ledger.workspace import Workspace
            from unlearning.operations.check import check_sqlite

            named = "; ".join(f.line() for f in check_sqlite(Workspace.from_env()) if f.problem)
            typer.echo(f"erasure: error: a local store is corrupt: {named or err}: restore the workspace from a "
                       "backup", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as err:
            # A missing top-level module is an optional dependency that the auditor's base install
            # leaves out (e.g. `verify --replay` needs torch); a missing submodule is a bug and keeps its traceback.
            if not err.name or "." in err.name:
                raise
            typer.echo(f"erasure: error: this needs {err.name}, which is not installed: install erasure "
                       "with its full extra (pip install '.[full]')", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_ErasureGroup,
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
app.add_typer(report.app, name="report")
app.add_typer(witness.app, name="witness")
monitor.register(app)  # monitor
app.add_typer(admin.app, name="admin")


def main() -> None:
    app()
