"""`erasure witness`: run a C2SP tlog-witness that cosigns the checkpoints of the logs it follows."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cli.output import print_json, serve_until_interrupted
from ledger.errors import BadInput
from ledger.witness.key import init_witness_key, load_cosigner, private_path, witness_vkey
from ledger.witness.state import DEFAULT_NAME, WitnessState, default_state_dir
from ledger.workspace import Workspace

app = typer.Typer(help="Run a witness (C2SP tlog-witness): it cosigns a log's checkpoint only if it is consistent "
                  "with the last one it cosigned.", no_args_is_help=True)

STATE = typer.Option(None, "--state", help="Witness state dir (default: $ERASURE_HOME/witness).")
JSON_OUT = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _state(state: Path | None, create: bool = False) -> WitnessState:
    return WitnessState.open(state or default_state_dir(Workspace.from_env()), create=create)


def _name(witness: WitnessState) -> str:
    name = witness.name()
    if name is None:
        raise BadInput(f"the witness at {witness.path.parent} has no name: run `erasure witness init`")
    return name


@app.command()
def init(
    name: str = typer.Option(DEFAULT_NAME, "--name", help="The witness's name (a schema-less URL naming it)."),
    state: Path | None = STATE,
    as_json: bool = JSON_OUT,
) -> None:
    """Create the witness's key and state; print its verifier key (vkey) for logs and auditors.

    The Ed25519 key goes to ERASURE_KEY_DIR (mode 0600; an existing key is kept), the name to the
    state, which keeps it: the key never cosigns under another name."""
    key_dir = Workspace.from_env().key_dir
    created = init_witness_key(key_dir)
    with _state(state, create=True) as witness:
        witness.set_name(name)
        row = {"created": created, "path": str(private_path(key_dir)), "state": str(witness.path.parent),
               "vkey": witness_vkey(key_dir, name)}
    if as_json:
        print_json(row)
        return
    typer.echo(f"witness: {'created' if created else 'kept existing'} {row['path']}")
    typer.echo(f"  vkey {row['vkey']}")


@app.command()
def vkey(state: Path | None = STATE) -> None:
    """Print the witness's verifier key (type 0x04: cosignature/v1)."""
    with _state(state) as witness:
        typer.echo(witness_vkey(Workspace.from_env().key_dir, _name(witness)))


@app.command("add-log")
def add_log(
    origin: str = typer.Argument(..., help="The log's origin line (its key name)."),
    vkey: str = typer.Argument(..., help="The log's verifier key (`erasure keys vkey` on the log's side)."),
    state: Path | None = STATE,
) -> None:
    """Witness a log: its checkpoints are cosigned once signed by this key (repeat for a second key)."""
    with _state(state) as witness:
        added = witness.add_log(origin, vkey)
    typer.echo(f"{'added' if added else 'already known'}: {origin}")


@app.command("remove-log")
def remove_log(origin: str = typer.Argument(...), state: Path | None = STATE) -> None:
    """Stop witnessing a log (what was cosigned for it is kept)."""
    with _state(state) as witness:
        if not witness.remove_log(origin):
            raise BadInput(f"the witness does not follow {origin!r}")
    typer.echo(f"removed: {origin}")


@app.command()
def logs(state: Path | None = STATE, as_json: bool = JSON_OUT) -> None:
    """The logs witnessed: their keys, the size last cosigned, refused checkpoints kept as evidence."""
    with _state(state) as witness:
        rows = []
        for origin, vkeys in witness.logs().items():
            latest = witness.latest(origin)
            refused = witness.refusals(origin)
            rows.append({"origin": origin, "vkeys": vkeys, "cosigned_size": latest.size if latest.note else None,
                         "refused": len(refused)})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        size = "nothing cosigned yet" if row["cosigned_size"] is None else f"cosigned size {row['cosigned_size']}"
        refused = f", {row['refused']} refused checkpoints kept" if row["refused"] else ""
        typer.echo(f"{row['origin']}: {size}{refused}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port (0: a free one, printed)."),
    state: Path | None = STATE,
) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness) until interrupted."""
    from ledger.witness.server import make_server, server_url
    from ledger.witness.service import Witness

    witness_state = _state(state)
    try:
        name = _name(witness_state)
        witness = Witness(witness_state, load_cosigner(Workspace.from_env().key_dir, name))
        server = make_server(witness, host, port)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        serve_until_interrupted(server, f"witness {name} serving at {server_url(server)}/ "
                                        f"({len(witness_state.logs())} logs)")
    finally:
        witness_state.close()


# `erasure ledger witness ...`: the witnesses this workspace's ledger sends its checkpoints to.
ledger_app = typer.Typer(help="The witnesses each checkpoint of this ledger is sent to for cosigning.",
                         no_args_is_help=True)


@ledger_app.command("add")
def ledger_add(
    url: str = typer.Argument(..., help="The witness's submission prefix, e.g. http://127.0.0.1:8081/."),
    vkey: str = typer.Argument(..., help="Its verifier key (`erasure witness vkey` on the witness's side)."),
) -> None:
    """Send every new checkpoint to this witness and keep its cosignature in the checkpoint."""
    from ledger.witness.collect import add_witness

    added = add_witness(Workspace.from_env(), url, vkey)
    typer.echo(f"{'added' if added else 'already configured'}: {vkey.split('+', 1)[0]} at {url}")


@ledger_app.command("remove")
def ledger_remove(name: str = typer.Argument(..., help="The witness's name (or its vkey).")) -> None:
    """Stop sending checkpoints to a witness."""
    from ledger.witness.collect import remove_witness

    if not remove_witness(Workspace.from_env(), name):
        raise BadInput(f"no witness {name!r} is configured")
    typer.echo(f"removed: {name}")


@ledger_app.command("list")
def ledger_list(as_json: bool = JSON_OUT) -> None:
    """The configured witnesses and how the last request to each went."""
    from ledger.witness.collect import read_status, read_witnesses

    workspace = Workspace.from_env()
    witnesses, timeout = read_witnesses(workspace)
    status = read_status(workspace)
    rows = []
    for w in witnesses:
        last = status.get(w.vkey)
        rows.append({"name": w.name, "url": w.url, "vkey": w.vkey,
                     "last": None if last is None else {"size": last.size, "cosigned": last.cosigned,
                                                        "error": last.error, "at": last.at}})
    if as_json:
        print_json({"timeout_s": timeout, "witnesses": rows})
        return
    for row in rows:
        last = row["last"]
        said = ("no checkpoint sent yet" if last is None else f"cosigned size {last['size']}" if last["cosigned"]
                else f"failed at size {last['size']}: {last['error']}")
        typer.echo(f"{row['name']} {row['url']}: {said}")
