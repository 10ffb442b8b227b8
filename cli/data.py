"""`erasure data`: ingest records into the encrypted record store and inspect them."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Ingest and inspect training records.", no_args_is_help=True)


@app.command()
def ingest() -> None:
    """Ingest records from JSONL or the packaged MovieLens-100K."""
    not_yet("erasure data ingest")
