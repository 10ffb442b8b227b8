"""`erasure bench`: benchmarks with JSON results (performance is measured here, never in tests)."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Benchmarks: JSON results, side-by-side comparisons.", no_args_is_help=True)


@app.command()
def unlearning() -> None:
    """Retrain vs SISA vs APA vs S3T on the same data and seeds."""
    not_yet("erasure bench unlearning")
