"""`erasure ledger`: the transparency log, its proofs and its auditor checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.output import print_json, serve_until_interrupted
from cli.witness import ledger_app as witness_ledger_app
from ledger.audit import audit_log
from ledger.errors import BadInput, ErasureError
from ledger.keys import key_name, read_trust, role_vkey
from ledger.log import open_ledger, open_log_store
from ledger.note import Checkpoint, b64encode, parse_vkey, verify_checkpoint
from ledger.proofs import check_proof_json, consistency_json, inclusion_json
from ledger.store import SqliteStore
from ledger.tiles.publish import default_tiles_target
from ledger.tiles.publish import publish as publish_tiles
from ledger.tiles.serve import make_server, server_url
from ledger.tiles.verify import verify_log
from ledger.witness.policy import served_anchor
from ledger.workspace import Workspace

app = typer.Typer(help="Append to, prove and verify the transparency log.", no_args_is_help=True)
app.add_typer(witness_ledger_app, name="witness")

JSON_OUT = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise BadInput(f"{what} is not valid JSON: {err}") from None


def _checkpoint_json(checkpoint: Checkpoint) -> dict:
    return {"origin": checkpoint.origin, "size": checkpoint.size, "root": b64encode(checkpoint.root)}


@app.command()
def append(
    entry_type: str = typer.Option(..., "--type", help="Entry type, e.g. key_event."),
    data: str = typer.Option("{}", "--data", help="Entry fields as a JSON object (no floats)."),
    key: str | None = typer.Option(None, "--key", help="Natural key: appending it again returns the first index."),
    as_json: bool = JSON_OUT,
) -> None:
    """Append an entry (administrators only: services append through the Python API)."""
    with open_ledger(Workspace.from_env()) as ledger:
        index = ledger.append(entry_type, _parse_json(data, "--data"), key)
    if as_json:
        print_json({"index": index})
    else:
        typer.echo(index)


@app.command()
def checkpoint(as_json: bool = JSON_OUT) -> None:
    """Sign a checkpoint for the current log size (if it has grown) and print it."""
    with open_ledger(Workspace.from_env(), sign=True) as ledger:
        note = ledger.checkpoint()
        checkpoint = verify_checkpoint(note, [ledger.signer.verifier], ledger.origin)
    if as_json:
        print_json({**_checkpoint_json(checkpoint), "note": note})
    else:
        typer.echo(note, nl=False)


@app.command()
def show(
    start: int = typer.Option(0, "--from", min=0, help="First index."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="At most this many entries."),
    as_json: bool = JSON_OUT,
) -> None:
    """Show log entries, verbatim."""
    with open_ledger(Workspace.from_env(), create=False) as ledger:
        rows = ledger.entries(start, limit)
    if as_json:
        print_json([{"index": i, "entry": json.loads(data)} for i, data in rows])
    else:
        for index, data in rows:
            typer.echo(f"{index}\t{data.decode()}")


@app.command()
def prove(
    index: int = typer.Argument(..., min=0, help="Entry index."),
    size: int | None = typer.Option(None, "--size", min=1, help="Tree size (default: the current size)."),
) -> None:
    """Print an inclusion proof: {leafIdx, treeSize, root, leafHash, proof} (base64)."""
    with open_ledger(Workspace.from_env(), create=False) as ledger:
        size = ledger.size if size is None else size
        proof = ledger.inclusion_proof(index, size)
        print_json(inclusion_json(index, size, ledger.root(size), ledger.leaf_hash(index), proof))


@app.command()
def consistency(
    size1: int = typer.Argument(..., min=0), size2: int = typer.Argument(..., min=0)
) -> None:
    """Print a consistency proof: {size1, size2, root1, root2, proof} (base64)."""
    with open_ledger(Workspace.from_env(), create=False) as ledger:
        proof = ledger.consistency_proof(size1, size2)
        print_json(consistency_json(size1, size2, ledger.root(size1), ledger.root(size2), proof))


def _check_file(path: Path) -> tuple[dict, int]:
    """Result row and exit code (0 valid, 1 invalid, 2 unreadable) for one proof file."""
    try:
        kind = check_proof_json(_parse_json(path.read_text(), str(path)))
    except OSError as err:
        return {"file": str(path), "valid": False, "reason": f"cannot read: {err.strerror}"}, 2
    except ErasureError as err:
        return {"file": str(path), "valid": False, "reason": str(err)}, err.exit_code
    return {"file": str(path), "valid": True, "reason": f"valid {kind} proof"}, 0


@app.command("check-proof")
def check_proof(
    files: list[Path] = typer.Argument(..., help="Inclusion or consistency proof JSON files."),
    as_json: bool = JSON_OUT,
) -> None:
    """Verify proof files (transparency-dev/merkle formats); exit 1 if any is invalid."""
    results = [_check_file(path) for path in files]
    if as_json:
        print_json([row for row, _ in results])
    else:
        for row, code in results:
            typer.echo(f"{row['file']}: {'ok' if code == 0 else 'FAILED'}: {row['reason']}", err=code != 0)
    code = max(code for _, code in results)
    if code:
        raise typer.Exit(code)


@app.command()
def verify(
    trust: Path | None = typer.Option(None, "--trust", help="Trust file (default: this workspace's ledger key)."),
    state: Path | None = typer.Option(None, "--state", help="Auditor state dir (default: $ERASURE_HOME/auditor)."),
    db: Path | None = typer.Option(None, "--db", help="Ledger database file (default: the workspace's ledger: "
                                   "$ERASURE_HOME/ledger.db, or PostgreSQL when a database URL is set)."),
    log: str | None = typer.Option(None, "--log", help="Verify the log served as tiles at this URL (or directory) "
                                   "instead of a database: its checkpoint, its consistency with the last audit."),
    entries: list[int] = typer.Option([], "--entry", min=0, help="With --log: also fetch and verify this entry "
                                      "(repeatable) and print it."),
    as_json: bool = JSON_OUT,
) -> None:
    """Recompute the whole log, check its checkpoints and its consistency with the last audit.
    With --log, verify a served log from its tiles: no database needed. When the trust file
    requires witnesses, the newest (or served) checkpoint must carry their cosignatures."""
    workspace = Workspace.from_env()
    trusted = read_trust(trust) if trust is not None else None
    witnesses = None if trusted is None else trusted.witnesses
    if trusted is not None:
        role = trusted.role("ledger")
        origin, verifiers = role.origin, role.verifiers()
    else:
        origin, verifiers = key_name(workspace, "ledger"), [parse_vkey(role_vkey(workspace, "ledger"))]
    if log is not None:
        cosigned = None
        if trusted is not None and witnesses is not None:
            cosigned = [c.signature.name for c in served_anchor(log, trusted).cosigned]
        return _verify_served(log, origin, verifiers, state or workspace.auditor_state, entries, as_json, cosigned)
    if entries:
        raise BadInput("--entry needs --log (`erasure ledger show` prints the local ledger's entries)")
    store = SqliteStore.open(db, create=False) if db else open_log_store(workspace, create=False)
    try:
        report = audit_log(store, verifiers, origin, state or workspace.auditor_state, witnesses)
    finally:
        store.close()
    if as_json:
        print_json(report.to_json())
        return
    typer.echo(f"ok: {report.entries} entries, checkpoint size {report.checkpoint_size} ({origin})")
    if report.cosigned_by:
        typer.echo(f"cosigned by the witnesses {', '.join(report.cosigned_by)}")
    if report.previous_size is not None:
        typer.echo(f"consistent with the checkpoint of size {report.previous_size} verified before")
    if report.unsigned_entries:
        typer.echo(f"{report.unsigned_entries} entries are not covered by a checkpoint yet")


def _verify_served(url: str, origin: str, verifiers: list, state: Path, entries: list[int], as_json: bool,
                   cosigned: list[str] | None = None) -> None:
    report = verify_log(url, verifiers, origin, state, entries)
    if as_json:
        print_json({**report.to_json(), **({} if cosigned is None else {"cosigned_by": cosigned})})
        return
    typer.echo(f"ok: checkpoint size {report.checkpoint_size} ({origin}) served at {report.url}")
    if cosigned:
        typer.echo(f"cosigned by the witnesses {', '.join(cosigned)}")
    if report.previous_size is not None:
        typer.echo(f"consistent with the checkpoint of size {report.previous_size} verified before")
    for index, data in sorted(report.entries.items()):
        typer.echo(f"{index}\t{data.decode('utf-8', errors='replace')}")
    typer.echo(f"fetched {report.fetched['requests']} resources, {report.fetched['bytes']} bytes")


TARGET_HELP = ("a directory, or an object store URL (s3://BUCKET/PREFIX?endpoint=URL); default: \\[ledger] tiles_dir "
               "in erasure.toml, else $ERASURE_HOME/tiles")


def _target(value: str | None, workspace: Workspace) -> Path | str:
    if value is None:
        return default_tiles_target(workspace)
    return value if "://" in value else Path(value)


@app.command()
def publish(
    to: str | None = typer.Option(None, "--to", help=f"Where to publish: {TARGET_HELP}."),
    as_json: bool = JSON_OUT,
) -> None:
    """Publish the log as C2SP tiles (checkpoint, hash tiles, entry bundles) to a directory or an object store."""
    workspace = Workspace.from_env()
    target = _target(to, workspace)
    with open_ledger(workspace, create=False) as ledger:
        result = publish_tiles(ledger.store, target)
    if as_json:
        print_json(result.to_json())
        return
    before = "" if result.previous_size is None else f", was {result.previous_size}"
    typer.echo(f"published checkpoint size {result.size}{before} to {result.target} "
               f"({result.tiles} tiles, {result.bundles} entry bundles written)")


@app.command()
def serve(
    source: str | None = typer.Option(None, "--from", "--dir", help=f"The published tiles: {TARGET_HELP}."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one, printed)."),
) -> None:
    """Serve published tiles over HTTP on 127.0.0.1 (C2SP tlog-tiles) until interrupted."""
    target = _target(source, Workspace.from_env())
    server = make_server(target, port)
    serve_until_interrupted(server, f"serving {target} at {server_url(server)}")


@app.command("verify-checkpoint")
def verify_checkpoint_cmd(
    file: Path = typer.Argument(..., help="Signed checkpoint note."),
    vkeys: list[str] = typer.Option(..., "--vkey", help="Trusted verifier key (repeatable)."),
    origin: str | None = typer.Option(None, "--origin", help="Required origin line."),
    as_json: bool = JSON_OUT,
) -> None:
    """Verify a signed checkpoint note against verifier keys."""
    try:
        note = file.read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read {file}: {err.strerror}") from None
    checkpoint = verify_checkpoint(note, [parse_vkey(v) for v in vkeys], origin)
    if as_json:
        print_json(_checkpoint_json(checkpoint))
    else:
        typer.echo(f"ok: {checkpoint.origin} size {checkpoint.size} root {b64encode(checkpoint.root)}")
