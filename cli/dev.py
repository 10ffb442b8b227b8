"""`erasure dev`: local Apache Kafka (KRaft) and MLflow tracking server."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Start, check and stop local Kafka and MLflow.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Start a local Kafka broker and MLflow server."""
    not_yet("erasure dev up")
