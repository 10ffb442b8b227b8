"""`erasure request | serve | status`: the Kafka event pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import fail, print_json, registry_where
from cli.registry import CURVATURE, DAMPING, SOLVER, SOLVER_STEPS, approximate_settings
from ledger.workspace import Workspace

DEADLINE = typer.Option(None, "--deadline", help="ISO 8601 deadline with a timezone, e.g. 2026-12-01T00:00:00Z.")
REQUESTER = typer.Option("cli", "--requester", help="Who asked (system or person).")
REQUEST_ID = typer.Option(None, "--request-id", help="Reuse an id to make a resend idempotent.")
APPROXIMATE = typer.Option(False, "--approximate", help="Ask for an APPROXIMATE influence update too (retrain and "
                           "sisa models; schema v1.1): solved beside the exact path, published after the exclusion "
                           "unless the retrain came first, always superseded by it.")

request_app = typer.Typer(help="Produce erasure and rectification requests to Kafka (topic erasure.requests).", no_args_is_help=True)


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
    deadline: str = DEADLINE,
    legal_basis: str = typer.Option("GDPR Art. 17", "--legal-basis", help="Why the data must go."),
    requester: str = REQUESTER,
    request_id: str = REQUEST_ID,
    approximate: bool = APPROXIMATE,
) -> None:
    """Send one erasure request and print its request id."""
    _send_one({"kind": "erase_records" if record else "erase_subject", "subject_id": subject,
               "record_ids": record or None, "model": model, "legal_basis": legal_basis, "requester": requester,
               "deadline": deadline, "request_id": request_id, "approximate": approximate or None})


@request_app.command()
def rectify(
    subject: str = typer.Option(..., "--subject", help="Subject id the record belongs to."),
    record: str = typer.Option(..., "--record", help="Record id to correct."),
    prompt: str = typer.Option(None, "--prompt", help="The corrected prompt (query modification)."),
    answer: str = typer.Option(None, "--answer", help="The corrected answer (response correction)."),
    model: str = typer.Option(None, "--model", help="Limit the retrain to one model (default: every model)."),
    deadline: str = DEADLINE,
    legal_basis: str = typer.Option("GDPR Art. 16", "--legal-basis", help="Why the data must change."),
    requester: str = REQUESTER,
    request_id: str = REQUEST_ID,
    approximate: bool = APPROXIMATE,
) -> None:
    """Send one rectification request (schema erasure.request/v1.1) and print its request id.

    The record store takes the corrected content under a new commitment; every model trained on the old content is handled as for an erasure of it (exclusion, retrain on the corrected data).
    """
    _send_one({"kind": "rectify_record", "subject_id": subject, "record_ids": [record], "prompt": prompt,
               "answer": answer, "model": model, "legal_basis": legal_basis, "requester": requester,
               "deadline": deadline, "request_id": request_id, "approximate": approximate or None})


def _send_one(fields: dict) -> None:
    from producers.schemas import new_request

    typer.echo(_send([new_request({k: v for k, v in fields.items() if v is not None})])[0])


@request_app.command()
def extend(
    request_id: str = typer.Argument(..., help="The request whose deadline to extend."),
    reason: str = typer.Option(..., "--reason", help="Why more time is needed (logged; the person must be told it)."),
    days: int = typer.Option(None, "--days", min=1, help="Extend by this many days (default: as far as the request's "
                             "policy allows)."),
    json_out: bool = typer.Option(False, "--json", help="Print the deadline and its extensions as JSON."),
) -> None:
    """Extend a received request's legal deadline, logged in the ledger (request_extended).

    Allowed as the policy the request was received under says: GDPR Art. 17 and 16 up to two
    further months, CCPA once by up to 45 days, DROP never; and only before the deadline set at
    receipt passes (the person must be told within the first period). Anything else exits 2.
    """
    from unlearning.operations.deadlines import extend as extend_deadline

    deadline = extend_deadline(Workspace.from_env(), request_id, reason, days).to_json()
    if json_out:
        print_json(deadline)
    else:
        last = deadline["extensions"][-1]
        typer.echo(f"{request_id}: deadline {last['previous']} -> {deadline['at']} (+{last['days']} days, "
                   f"extension {len(deadline['extensions'])}, ledger index {last['index']})")


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


def serve(
    role: str = typer.Option("all", "--role", help="planner, executor, all (planner and executor) or intake (the "
                             "HTTP intake alone: run it beside them)."),
    window: float = typer.Option(2.0, "--window", min=0.0, help="Executor: seconds to coalesce jobs of one shard."),
    prefix: str = typer.Option("", "--prefix", help="Prefix of topic and consumer-group names (e.g. 'staging.')."),
    instance: str = typer.Option(None, "--instance", help="This process's name in groups, transactions and the "
                                 "ledger (default: host-pid); keep it across restarts."),
    solver: str = SOLVER,
    solver_steps: int = SOLVER_STEPS,
    damping: float | None = DAMPING,
    curvature: str = CURVATURE,
    host: str = typer.Option("127.0.0.1", "--host", help="Intake: the address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Intake: the port (0: a free one, logged)."),
) -> None:
    """Run the planner and/or an executor, or the HTTP intake, until SIGINT/SIGTERM (a second
    signal stops at once).

    On the first signal the unit of work in flight finishes and commits; everything else is
    handed back uncommitted to the group. One log line per handled message on stderr.

    The intake (`--role intake`) takes requests over HTTP from registered senders (`erasure
    intake add-sender`): POST /v1/requests (our schema, bearer token), POST /v1/ddrf (IAB DDRF
    rqJWT, answered with an acJWT signed by the key of `erasure keys intake`), GET
    /.well-known/dsrdelete.json; it produces them to the requests topic for the planner.
    """
    import logging
    import os
    import signal

    from consumers.serve import ROLES, Service, default_instance
    from consumers.topics import Topics

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    ws = Workspace.from_env()
    registry, embedded = registry_where(ws)
    if embedded and role != "intake":
        logging.getLogger("erasure.serve").warning(
            "registry: %s: SQLite in this process; several processes (planner and executors apart) need an "
            "MLflow server: `erasure dev up` or MLFLOW_TRACKING_URI", registry)
    service = Service(ws, role, Topics(prefix), window, instance or default_instance(),
                      solver=approximate_settings(solver, solver_steps, damping, curvature), host=host, port=port).start()

    def on_signal(signum: int, frame: object) -> None:
        if service.stopping:
            logging.getLogger("erasure.serve").warning("stopping now: work in flight is redone after a restart")
            os._exit(130)
        logging.getLogger("erasure.serve").info("stopping: finishing the work in flight")
        service.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not service.wait(0.5):
        pass
    if service.errors:
        fail(str(service.errors[0]))


def status(
    request_id: str = typer.Argument(..., help="Request id."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Where an erasure request stands: stage, timestamps, deadline, versions and certificates."""
    from unlearning.operations.status import request_status

    report = request_status(Workspace.from_env(), request_id)
    if json_out:
        print_json(report)
        return
    typer.echo(f"{report['request_id']}: {report['stage']}" + (f" ({report['reason']})" if report["reason"] else ""))
    for stage, at in report["stages"].items():
        if at:
            typer.echo(f"  {stage:9} {at}")
    if report["deadline"]:
        left, policy = report["time_left_s"], report["deadline_policy"]
        met = {True: "met", False: "missed", None: ""}[report["deadline_met"]]
        rule = [policy.get("policy"), "the sender's, earlier" if policy.get("set_by") == "sender" else None,
                f"extended {len(policy['extensions'])}x" if policy["extensions"] else None]
        when = met if left is None else f"{_duration(abs(left))} " + ("left" if left >= 0 else "overdue")
        typer.echo(f"  deadline  {report['deadline']} ({', '.join(r for r in [*rule, when] if r)})")
    for model, info in report["models"].items():
        typer.echo(f"  model {model}, shards {info['shards']}")
        if info["approximate"]:
            a = info["approximate"]
            typer.echo(f"    approximate {a['at']}: " + (f"models:/{model}/{a['version']} APPROXIMATE (never aliased) "
                                                       f"sha256:{a['certificate_sha256']}" if a["version"] else a["reason"]))
        if info["exclusion_deferred"]:
            typer.echo(f"    no exclusion: {info['exclusion_deferred']}")
        if info["excluded"]:
            e = info["excluded"]
            typer.echo(f"    excluded  {e['excluded_at']}, certified {e['certified_at']}: "
                       f"models:/{model}/{e['version']} sha256:{e['certificate_sha256']}")
        for shard, r in info["restored"].items():
            typer.echo(f"    shard {shard}  " + (f"restored {r['at']}: models:/{model}/{r['version']} "
                                                  f"sha256:{r['certificate_sha256']}" if r else "retrain pending"))


def _duration(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds:.0f} s"


def check(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the workspace's local stores, as `erasure serve` does before it starts.

    SQLite's quick_check on ledger.db, records.db and the record keys; every restore journal
    parses; the newest version of each model matches the digests its component.json recorded.
    Exit 0 if all are sound, 2 (with one line per corrupt store) otherwise.
    """
    from unlearning.operations.check import check_workspace

    findings = check_workspace(Workspace.from_env())
    if json_out:
        print_json([{"store": f.store, "path": str(f.path), "problem": f.problem} for f in findings])
    else:
        for f in findings:
            typer.echo(f.line())
    bad = [f for f in findings if f.problem]
    if bad:
        fail(f"{len(bad)} of {len(findings)} stores corrupt: restore the workspace from a backup")


def register(app: typer.Typer) -> None:
    from cli import intake

    app.add_typer(request_app, name="request")
    app.add_typer(intake.app, name="intake")
    app.command()(serve)
    app.command()(status)
    app.command()(check)
