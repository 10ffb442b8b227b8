"""Shared CLI plumbing: one-line errors with the design's exit codes, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer


def fail(reason: str, code: int = 2) -> NoReturn:
    """Print a one-line reason on stderr and exit (1 = verification failed, 2 = bad input)."""
    typer.echo(f"erasure: error: {reason}", err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")



def registry_where(ws: Any) -> tuple[str, bool]:
    """(the registry the commands use, said for people; whether it is the embedded store)."""
    uri = ws.mlflow_uri()
    if uri == ws.mlflow_embedded_uri:
        return f"embedded ({ws.mlflow_db})", True
    return uri, False


def serve_until_interrupted(server, banner: str) -> None:  # type: ignore[no-untyped-def]
    """Print `banner`, then serve an http.server until Ctrl-C, and close it."""
    import sys

    typer.echo(banner)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
