"""`erasure bench`: benchmarks with JSON results (performance is measured here, never in tests)."""

import typer

from cli.output import not_yet, print_json
from ledger.bench import run_ledger_benchmark
from ledger.errors import BadInput

app = typer.Typer(help="Benchmarks: JSON results, side-by-side comparisons.", no_args_is_help=True)


@app.command()
def unlearning() -> None:
    """Retrain vs SISA vs APA vs S3T on the same data and seeds."""
    not_yet("erasure bench unlearning")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise BadInput(f"--sizes {text!r} is not a comma-separated list of integers") from None
    if any(s < 1 for s in sizes):
        raise BadInput("--sizes must be positive")
    return sizes


@app.command()
def ledger(
    sizes: str = typer.Option("1000,100000,1000000", "--sizes", help="Comma-separated log sizes."),
    batch: int = typer.Option(1000, "--batch", min=1, help="Entries per append transaction."),
    proofs: int = typer.Option(1000, "--proofs", min=1, help="Proofs generated and verified per size."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Ledger append throughput and proof generation/verification time at each size."""
    result = run_ledger_benchmark(_sizes(sizes), batch=batch, proofs=proofs)
    if as_json:
        print_json(result)
        return
    for row in result["results"]:
        typer.echo(
            f"{row['entries']:>9} entries: {row['appends_per_s']:>9.0f} appends/s, "
            f"inclusion {row['inclusion_prove_ms']:.3f} + {row['inclusion_verify_ms']:.3f} ms, "
            f"consistency {row['consistency_prove_ms']:.3f} + {row['consistency_verify_ms']:.3f} ms, "
            f"audit {row['audit_s']:.1f} s"
        )
