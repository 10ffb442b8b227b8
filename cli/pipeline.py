"""`erasure request | serve | status`: the Kafka event pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import not_yet, print_json
from ledger.workspace import Workspace

# Stubs accept any arguments so scripts written against the final interface already run.
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

request_app = typer.Typer(help="Produce erasure requests to Kafka (topic erasure.requests).", no_args_is_help=True)


def _send(requests: list) -> list[str]:
    from consumers.topics import ensure_topics
    from producers.producer import RequestProducer

    ws = Workspace.from_env()
    ensure_topics(ws.kafka_bootstrap())
    with RequestProducer(ws) as producer:
        return producer.send(requests)


@request_app.command()
def erase(
    subject: str = typer.Option(..., "--subject", help="Subject id whose data must be erased."),
    record: list[str] = typer.Option(None, "--record", help="Erase only these record ids (repeatable)."),
    model: str = typer.Option(None, "--model", help="Limit the erasure to one model (default: every model)."),
    deadline: str = typer.Option(None, "--deadline", help="ISO 8601 deadline with a timezone, e.g. 2026-12-01T00:00:00Z."),
    legal_basis: str = typer.Option("GDPR Art. 17", "--legal-basis", help="Why the data must go."),
    requester: str = typer.Option("cli", "--requester", help="Who asked (system or person)."),
    request_id: str = typer.Option(None, "--request-id", help="Reuse an id to make a resend idempotent."),
) -> None:
    """Send one erasure request and print its request id."""
    from producers.schemas import ErasureRequest, parse_request

    fields = {"kind": "erase_records" if record else "erase_subject", "subject_id": subject,
              "record_ids": record or None, "model": model, "legal_basis": legal_basis, "requester": requester,
              "deadline": deadline, "request_id": request_id,
              "schema": "erasure.request/v1"}
    req: ErasureRequest = parse_request({k: v for k, v in fields.items() if v is not None})
    typer.echo(_send([req])[0])


@request_app.command("import")
def import_requests(
    file: Path = typer.Argument(..., help="A .jsonl (one request object per line) or .csv file."),
    json_out: bool = typer.Option(False, "--json", help="Print the request ids as JSON."),
) -> None:
    """Send every request of a file; a bad line sends nothing and exits 2 naming the line."""
    from producers.importers import read_requests

    ids = _send(read_requests(file))
    if json_out:
        print_json({"sent": len(ids), "request_ids": ids})
    else:
        typer.echo(f"sent {len(ids)} requests")


@request_app.command()
def schema(out: Path = typer.Option(None, "--out", help="Write one <schema>.json file per message type here.")) -> None:
    """Print (or write) the JSON Schemas of the request, job and outcome-event messages."""
    import json

    from producers.schemas import json_schemas

    schemas = json_schemas()
    if out is None:
        print_json(schemas)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        (out / f"{name.replace('/', '.')}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {len(schemas)} schemas to {out}")


def serve() -> None:
    """Run the planner and executor consumers."""
    not_yet("erasure serve")


def status(request_id: str = typer.Argument(..., help="Request id.")) -> None:
    """Show where an erasure request stands."""
    not_yet("erasure status")


def register(app: typer.Typer) -> None:
    app.add_typer(request_app, name="request")
    app.command(context_settings=_ANY_ARGS)(serve)
    app.command(context_settings=_ANY_ARGS)(status)
