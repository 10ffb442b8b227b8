"""`erasure ledger`: the transparency log, its proofs and its auditor checks."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Append to, prove and verify the transparency log.", no_args_is_help=True)


@app.command()
def show() -> None:
    """Show log entries."""
    not_yet("erasure ledger show")
