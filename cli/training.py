"""`erasure train | eval | predict | replay`."""

import typer

from cli.output import not_yet


def train(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Train a sharded LoRA model on the record store."""
    not_yet("erasure train")


def evaluate(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Evaluate a model (AUC, accuracy) on test subjects."""
    not_yet("erasure eval")


def predict(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Predict P(Yes) for one prompt."""
    not_yet("erasure predict")


def replay(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Retrain one component from the retained records and compare digests."""
    not_yet("erasure replay")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("eval")(evaluate)
    app.command()(predict)
    app.command()(replay)
