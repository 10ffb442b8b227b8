"""`erasure monitor`: follow a log served as tiles and report a fork with both signed checkpoints."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from ledger.errors import ServiceError
from ledger.keys import build_trust, read_trust
from ledger.monitor import ForkDetected, Monitor, Observation
from ledger.workspace import Workspace


def monitor(
    log: str = typer.Option(..., "--log", help="The log's URL (its tiles: checkpoint, tile/...), or a directory."),
    trust: Path | None = typer.Option(None, "--trust", help="Trust file naming the log's origin and key (default: "
                                      "this workspace's keys)."),
    state: Path | None = typer.Option(None, "--state", help="Where the last verified checkpoint is kept, per origin "
                                      "(default: $ERASURE_HOME/monitor)."),
    interval: float = typer.Option(60.0, "--interval", min=0.1, help="Seconds between two looks at the log."),
    once: bool = typer.Option(False, "--once", help="Look once and exit."),
    entries: bool = typer.Option(False, "--entries", help="Also fetch every new entry and check it against its "
                                 "leaf hash (the log serves what it signed)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object a line."),
) -> None:
    """Follow a log: verify each new checkpoint's signature and its consistency with the one
    verified before (proofs from the log's tiles). Exits 1 on a fork, after printing both signed
    checkpoints as evidence (also kept in the state dir); an unreachable log is retried, or with
    --once exits 2."""
    workspace = Workspace.from_env()
    trusted = read_trust(trust) if trust is not None else build_trust(workspace)
    watcher = Monitor(log, trusted, state or workspace.home / "monitor", entries)
    last: Observation | None = None
    while True:
        try:
            seen = watcher.poll()
        except ForkDetected as fork:
            if as_json:
                _json_line({"kind": "fork", "origin": fork.fork.origin, "reason": fork.fork.reason,
                            "before": fork.fork.before, "served": fork.fork.served,
                            "evidence": None if fork.evidence is None else str(fork.evidence)})
            else:
                typer.echo(fork.fork.text(), nl=False)
            raise
        except ServiceError as err:
            if once:
                raise
            typer.echo(f"erasure: warning: {err}; retrying in {interval:g} s", err=True)
        else:
            if once or last is None or seen.kind != "same" or seen.size != last.size:
                if as_json:
                    _json_line(seen.to_json())
                else:
                    typer.echo(seen.line())
            last = seen
        if once:
            return
        sys.stdout.flush()
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


def _json_line(doc: dict) -> None:
    typer.echo(json.dumps(doc, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.command()(monitor)
