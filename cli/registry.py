"""`erasure forget | verify | pull`: certified unlearning and its verification."""

import typer

from cli.output import not_yet

# Stubs accept any arguments so scripts written against the final interface already run.
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def forget(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Erase a subject from a model: exclusion, retrain, certificates, purge."""
    not_yet("erasure forget")


def verify(target: str = typer.Argument(..., help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle dir.")) -> None:
    """Verify a certified model version offline."""
    not_yet("erasure verify")


def pull(target: str = typer.Argument(..., help="models:/NAME@ALIAS")) -> None:
    """Download a certified version, verify it, then hand over its path."""
    not_yet("erasure pull")


def register(app: typer.Typer) -> None:
    app.command(context_settings=_ANY_ARGS)(forget)
    app.command(context_settings=_ANY_ARGS)(verify)
    app.command(context_settings=_ANY_ARGS)(pull)
