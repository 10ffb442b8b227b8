"""`erasure keys`: ledger and certifier signing keys, verifier keys and trust files, and the
OpenSSF model-signing key (`ledger.model_signature`)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import print_json
from ledger import model_signature
from ledger.errors import BadInput
from ledger.keys import ROLES, WitnessPolicy, build_trust, init_keys, private_key_path, role_vkey, write_trust
from ledger.workspace import Workspace

app = typer.Typer(help="Create signing keys, print verifier keys, write trust files.", no_args_is_help=True)


@app.command()
def init(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Create the ledger and certifier Ed25519 keys and the model-signing ECDSA P-256 key in
    ERASURE_KEY_DIR (existing keys are kept)."""
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
    rows[model_signature.NAME] = _model_signing_row(workspace)
    if as_json:
        print_json(rows)
        return
    for role, row in rows.items():
        typer.echo(f"{role}: {'created' if row['created'] else 'kept existing'} {row['path']}")
        if "vkey" in row:
            typer.echo(f"  vkey {row['vkey']}")
        else:
            typer.echo(f"  public key {row['public_key']}")


def _model_signing_row(workspace: Workspace) -> dict:
    created = model_signature.init_model_signing_key(workspace.key_dir)
    key = model_signature.load_public(workspace.key_dir)
    return {"created": created, "path": str(model_signature.private_path(workspace.key_dir)),
            "public_key": str(model_signature.public_path(workspace.key_dir)), "hint": model_signature.key_hint(key)}


@app.command("model-signing")
def model_signing(
    out: Path | None = typer.Option(None, "--out", help="Write the public key PEM here instead of stdout."),
) -> None:
    """Create the OpenSSF model-signing key if missing (ECDSA P-256; an existing key is kept) and
    print its public key PEM: what registry consumers pass to
    `model_signing verify key BUNDLE --signature BUNDLE/model.sig --public_key FILE`."""
    workspace = Workspace.from_env()
    row = _model_signing_row(workspace)
    pem = model_signature.public_pem(model_signature.load_public(workspace.key_dir))
    if out is None:
        typer.echo(pem, nl=False)
    else:
        out.write_text(pem)
        typer.echo(f"wrote {out} (model-signing key {row['hint'][:16]}…)", err=True)


@app.command()
def vkey(role: str = typer.Option("ledger", "--role", help=f"One of: {', '.join(ROLES)}.")) -> None:
    """Print a role's C2SP verifier key (name+keyid+base64 key)."""
    typer.echo(role_vkey(Workspace.from_env(), role))


@app.command()
def trust(
    out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout."),
    witnesses: list[str] = typer.Option([], "--witness", help="A witness's verifier key (repeatable): checkpoints "
                                        "then need its cosignature (`erasure witness vkey` prints it)."),
    threshold: int | None = typer.Option(None, "--witness-threshold", min=1, help="How many of the --witness keys "
                                         "must cosign a checkpoint (default: all of them)."),
) -> None:
    """Write the trust file auditors pin: origins and verifier keys per role (public keys only),
    and the witnesses whose cosignatures the ledger's checkpoints need (k of n)."""
    if threshold is not None and not witnesses:
        raise BadInput("--witness-threshold needs --witness")
    policy = WitnessPolicy(tuple(witnesses), threshold or len(witnesses)) if witnesses else None
    document = build_trust(Workspace.from_env(), policy)
    if out is None:
        print_json(document.to_json())
    else:
        write_trust(document, out)
        typer.echo(f"wrote {out}", err=True)


@app.command()
def intake(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Create the HTTP intake's acknowledgement key if missing (ECDSA P-256: the ES256 key its IAB
    DDRF acJWTs are signed with; an existing key is kept) and print its key id and path.

    Its public key is published by the running intake at GET /.well-known/dsrdelete.json.
    """
    from ledger.intake_key import init_intake_key, key_id, load_public, private_path

    key_dir = Workspace.from_env().key_dir
    created = init_intake_key(key_dir)
    row = {"created": created, "path": str(private_path(key_dir)), "kid": key_id(load_public(key_dir))}
    if as_json:
        print_json(row)
    else:
        typer.echo(f"intake: {'created' if created else 'kept existing'} {row['path']} (kid {row['kid']})")
