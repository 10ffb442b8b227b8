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

