"""`erasure admin`: workspace administration (moving an embedded workspace into the shared deployment)."""

from __future__ import annotations

import os

import typer

from cli.output import print_json
from ledger.workspace import Workspace

app = typer.Typer(help="Administer the workspace: move it from one machine into the shared deployment.",
                  no_args_is_help=True)


@app.command()
def migrate(
    database: str = typer.Option(..., "--database", metavar="URL",
                                 help="The shared PostgreSQL database (postgresql://USER@HOST:PORT/DB; credentials "
                                 "are libpq's: PGPASSWORD, passfile=, ~/.pgpass)."),
    object_store: str = typer.Option(..., "--object-store", metavar="URL",
                                     help="The shared object store: s3://BUCKET/PREFIX?endpoint=URL&credentials=FILE "
                                     "(prefix and query optional)."),
    mlflow: str = typer.Option(None, "--mlflow", metavar="URL",
                               help="The MLflow server to move the embedded registry to (default: "
                               "MLFLOW_TRACKING_URI; with neither the registry stays embedded)."),
    keys_database: str = typer.Option(None, "--keys-database", metavar="URL",
                                      help="Where the records' data keys go (default: keys_url in erasure.toml's database section, "
                                      "ERASURE_KEYS_DATABASE_URL, else the database's name + _keys on the same "
                                      "server); never the records' own database."),
    as_json: bool = typer.Option(False, "--json", help="Print the proof as JSON (the step lines go to stderr)."),
) -> None:
    """Move this embedded workspace (ERASURE_HOME) into the shared backends, and prove it moved intact.

    In order: the ledger (ledger.db: entries with their natural keys, tree hashes and signed
    checkpoints, verbatim, in one transaction); the encrypted records (records.db: sealed rows,
    provenance, cached activations) with their data keys (record-keys.db) into the keys database;
    every model version and certified bundle under artifacts/ into the object store; the
    embedded registry (mlflow.db) to the MLflow server, keeping every version number, tag and
    alias (the ledger binds the numbers); finally erasure.toml gains the url of its database and
    object_store sections and, when the registry moved, the mlflow section's tracking_uri, so every later command on
    this host uses the shared backends. Other hosts use the same settings and the same key
    directory.

    The proof: the ledger's size, root (stored, and recomputed from the copied entries) and
    latest checkpoint are the same in ledger.db and in the database, checked after the copy and
    again at the end; every record-store table holds the same rows on both sides and a sample of
    records decrypts the same from PostgreSQL; every version is listed in the object store; the
    registry lists the same versions, statuses, certificates and aliases on both sides.

    Resumable: run it again after an interruption and it completes what is missing, duplicating
    nothing (a second run after success changes nothing). Refused before anything is written,
    exit 2 with one line: erasure.toml or the environment naming other backends, a restore in
    progress, a database holding another ledger (or more entries than ledger.db), an object store
    or registry holding other versions under the same names. A proof that does not hold is exit 1.

    Stop `erasure serve` and other writers of this workspace first. Once the workspace points at
    the shared backends, what a later erasure would not reach is deleted: the record store and
    its data keys (records.db, record-keys.db) and the moved embedded registry (mlflow.db,
    mlflow-artifacts/). ledger.db stays as a backup (commitments, no personal data), no longer
    read or written.
    """
    from unlearning.operations.migrate import migrate as run_migrate

    def progress(step: str, line: str) -> None:
        typer.echo(f"{step}: {line}", err=as_json)

    ws = Workspace.from_env()
    result = run_migrate(ws, database, object_store, mlflow or os.environ.get("MLFLOW_TRACKING_URI") or None,
                         progress, keys_database)
    if as_json:
        print_json(result)
        return
    before, after = result["ledger"]["before"], result["ledger"]["final"]
    typer.echo(f"proof: ledger size {before['size']} root {before['root']} in ledger.db")
    typer.echo(f"proof: ledger size {after['size']} root {after['root']} in the database "
               f"(latest checkpoint of size {after['checkpoint_size']} identical)")
    if result["retired"]:
        typer.echo(f"deleted (later erasures would not reach them): {', '.join(result['retired'])}")
    if result["stale"]:
        typer.echo(f"now a stale backup, no longer used: {', '.join(result['stale'])}")
        typer.echo(f"note: {result['stale_note']}")
