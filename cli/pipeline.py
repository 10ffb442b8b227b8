"""`erasure request | serve | status`: the Kafka event pipeline."""

import typer

from cli.output import not_yet

# Stubs accept any arguments so scripts written against the final interface already run.
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

request_app = typer.Typer(help="Produce erasure requests to Kafka.", no_args_is_help=True)


@request_app.command(context_settings=_ANY_ARGS)
def erase(subject: str = typer.Option(..., "--subject", help="Subject id to erase.")) -> None:
    """Send an erasure request for a subject."""
    not_yet("erasure request erase")


def serve() -> None:
    """Run the planner and executor consumers."""
    not_yet("erasure serve")


def status(request_id: str = typer.Argument(..., help="Request id.")) -> None:
    """Show where an erasure request stands."""
    not_yet("erasure status")


def register(app: typer.Typer) -> None:
    app.add_typer(request_app, name="request")
    app.command(context_settings=_ANY_ARGS)(serve)
    app.command(context_settings=_ANY_ARGS)(status)
