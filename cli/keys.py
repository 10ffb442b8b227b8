"""`erasure keys`: ledger and certifier signing keys, verifier keys and trust files."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import print_json
from ledger.keys import ROLES, build_trust, init_keys, private_key_path, role_vkey, write_trust
from ledger.workspace import Workspace

app = typer.Typer(help="Create signing keys, print verifier keys, write trust files.", no_args_is_help=True)


@app.command()
def init(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Create the ledger and certifier Ed25519 keys in ERASURE_KEY_DIR (existing keys are kept)."""
    workspace = Workspace.from_env()
    created = init_keys(workspace.key_dir)
    rows = {
        role: {
            "created": created[role],
            "path": str(private_key_path(workspace.key_dir, role)),
            "vkey": role_vkey(workspace, role),
        }
        for role in ROLES
    }
    if as_json:
        print_json(rows)
        return
    for role, row in rows.items():
        typer.echo(f"{role}: {'created' if row['created'] else 'kept existing'} {row['path']}")
        typer.echo(f"  vkey {row['vkey']}")


@app.command()
def vkey(role: str = typer.Option("ledger", "--role", help=f"One of: {', '.join(ROLES)}.")) -> None:
    """Print a role's C2SP verifier key (name+keyid+base64 key)."""
    typer.echo(role_vkey(Workspace.from_env(), role))


@app.command()
def trust(out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout.")) -> None:
    """Write the trust file auditors pin: origins and verifier keys per role (public keys only)."""
    document = build_trust(Workspace.from_env())
    if out is None:
        print_json(document.to_json())
    else:
        write_trust(document, out)
        typer.echo(f"wrote {out}", err=True)
