"""`erasure keys`: ledger and certifier signing keys, verifier keys and trust files."""

import typer

from cli.output import not_yet

app = typer.Typer(help="Create signing keys, print verifier keys, write trust files.", no_args_is_help=True)


@app.command()
def init() -> None:
    """Create the ledger and certifier Ed25519 keys in ERASURE_KEY_DIR."""
    not_yet("erasure keys init")
