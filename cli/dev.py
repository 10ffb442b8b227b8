"""`erasure dev`: local Apache Kafka (KRaft) and MLflow tracking server."""

import typer

from cli.output import print_json
from ledger.workspace import Workspace

app = typer.Typer(help="Start, check and stop a local Kafka broker and MLflow server.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Start a single-node KRaft Kafka broker and an MLflow server on free 127.0.0.1 ports.

    The broker's jars are resolved with Maven on first use (cached under ~/.cache/erasure).
    Pids and endpoints are recorded in $ERASURE_HOME/dev.json; running services are reused, and
    one that died is restarted on its recorded port, so clients holding its address (a running
    `erasure serve`) reconnect. If another process holds that port, up stops with a one-line
    error naming it (exit 2): free the port, or run `erasure dev down` to start on new ports.
    """
    from services import local as local_services

    ws = Workspace.from_env()
    services = local_services.up(ws)
    typer.echo(f"kafka   {services['kafka'].endpoint}  (pid {services['kafka'].pid})")
    typer.echo(f"mlflow  {services['mlflow'].endpoint}  (pid {services['mlflow'].pid})")
    typer.echo(f"export ERASURE_KAFKA={services['kafka'].endpoint} MLFLOW_TRACKING_URI={services['mlflow'].endpoint}")


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report whether the recorded Kafka broker and MLflow server are reachable."""
    from services import local as local_services

    report = local_services.status(Workspace.from_env())
    if json_out:
        print_json(report)
        return
    for name, info in report.items():
        where = info.get("bootstrap") or info.get("url") or "-"
        state = "reachable" if info["reachable"] else ("running, not answering" if info["running"] else "down")
        typer.echo(f"{name:7} {where:28} {state}")


@app.command()
def down() -> None:
    """Stop exactly the processes `erasure dev up` started (by recorded pid), nothing else."""
    from services import local as local_services

    stopped = local_services.down(Workspace.from_env())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("fetch-kafka")
def fetch_kafka() -> None:
    """Resolve the Kafka broker jars with Maven into the user cache (idempotent)."""
    from services import local as local_services

    typer.echo(local_services.resolve_kafka(quiet=False))
