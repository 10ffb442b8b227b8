"""`erasure models`: inspect trained models and their components."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Inspect trained models and their components.", no_args_is_help=True)


@app.command()
def show(name: str) -> None:
    """Show a model's components."""
    not_yet("erasure models show")
