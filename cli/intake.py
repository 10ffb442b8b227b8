"""`erasure intake`: the senders the HTTP intake (`erasure serve --role intake`) takes requests from."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import print_json
from ledger.workspace import Workspace

app = typer.Typer(help="Register the senders of the HTTP intake (erasure serve --role intake) and the dashboard's "
                  "viewer token.", no_args_is_help=True)


@app.command("add-sender")
def add_sender(
    name: str = typer.Argument(..., help="The sender's name: its requests' requester, and its DDRF issuer unless "
                               "--ddrf-issuer says otherwise."),
    ddrf_keys: Path = typer.Option(None, "--ddrf-keys", help="The sender's dsrdelete.json (publicKey) or a JWKS "
                                   "(keys): the public EC P-256 / RSA keys its IAB DDRF JWTs are signed with."),
    ddrf_issuer: str = typer.Option(None, "--ddrf-issuer", help="The iss its DDRF JWTs carry (its eTLD+1); "
                                    "default: NAME."),
    replace: bool = typer.Option(False, "--replace", help="Give an existing sender a new token (the old one stops "
                                 "working) and these keys."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Register a sender and print its bearer token, once: only its SHA-256 is kept
    ($ERASURE_HOME/intake/senders.json, mode 0600). The running intake picks it up at once."""
    from consumers.intake.senders import Senders

    keys = None
    if ddrf_keys is not None:
        from producers.ddrf import read_public_keys

        keys = read_public_keys(ddrf_keys)
    senders = Senders(Workspace.from_env())
    token = senders.add(name, keys, ddrf_issuer, replace)
    if json_out:
        print_json({**senders.all()[name].public(), "token": token})
    else:
        typer.echo(token)


@app.command()
def senders(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the registered senders (never their tokens)."""
    from consumers.intake.senders import Senders

    rows = [s.public() for s in Senders(Workspace.from_env()).all().values()]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        ddrf = f"  DDRF issuer {row['ddrf_issuer']}, keys {', '.join(map(str, row['ddrf_keys']))}" if row["ddrf_issuer"] else ""
        typer.echo(f"{row['name']}  since {row['created_at']}{ddrf}")


@app.command("remove-sender")
def remove_sender(name: str = typer.Argument(..., help="The sender to remove.")) -> None:
    """Remove a sender: its token and DDRF keys stop working at once."""
    from consumers.intake.senders import Senders

    Senders(Workspace.from_env()).remove(name)
    typer.echo(f"removed sender {name}", err=True)


@app.command("dashboard-token")
def dashboard_token() -> None:
    """Create the dashboard's viewer token and print it once (a previous one stops working).

    The dashboard (`/dashboard` on the intake's port) is off until a token exists. Log in with
    `http://HOST:PORT/dashboard/login?token=TOKEN`, or send `Authorization: Bearer TOKEN`.
    """
    from consumers.intake.dashboard import new_token

    typer.echo(new_token(Workspace.from_env()))
    typer.echo("the dashboard's viewer token, shown once (only its SHA-256 is kept)", err=True)
