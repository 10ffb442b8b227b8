"""`erasure report`: reports for regulators and DPOs, computed from the ledger alone."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import print_json
from ledger.workspace import Workspace

app = typer.Typer(help="Reports computed from the ledger alone (every figure lists its ledger indices).",
                  no_args_is_help=True)


@app.command()
def compliance(
    start: str = typer.Option(..., "--from", help="First day (2026-01-01, in the timezone of erasure.toml's deadlines, default UTC) "
                              "or an ISO 8601 time with a timezone."),
    end: str = typer.Option(..., "--to", help="Last day, included (or an ISO 8601 time: excluded)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html_file: Path = typer.Option(None, "--html", help="Write the report as a static, self-contained HTML page."),
) -> None:
    """Requests of a period and what became of them (CCPA §7102-style figures).

    Counts requests whose legal clock started in the period: received, complied (exact: a
    certified exclusion from every planned model), open, failed, rejected by reason; median
    and mean days to exact compliance and to restoration (every planned shard retrained);
    deadlines met, missed, pending and extended. As a whole, per legal basis and per model.
    Every count lists the ledger indices behind it (`erasure ledger show`, `prove`), and the
    report names the ledger size and root it was computed at.
    """
    from unlearning.operations.report import compliance_report, to_html

    report = compliance_report(Workspace.from_env(), start, end)
    if html_file is not None:
        html_file.write_text(to_html(report), encoding="utf-8")
    if json_out:
        print_json(report)
    elif html_file is not None:
        typer.echo(f"wrote {html_file}")
    else:
        _summary(report)


def _summary(report: dict) -> None:
    period = report["period"]
    typer.echo(f"requests from {period['from']} until {period['to']} (as of {report['as_of']}, ledger size "
               f"{report['ledger']['size']})")
    for name, figures in {"all": report["requests"], **{f"basis {b}": f for b, f in report["by_legal_basis"].items()},
                          **{f"model {m}": f for m, f in report["by_model"].items()}}.items():
        days, deadlines = figures["days_to_compliance"], figures["deadlines"]
        typer.echo(f"  {name}: received {figures['received']['count']}, complied {figures['complied']['count']}, "
                   f"open {figures['open']['count']}, failed {figures['failed']['count']}; days to compliance "
                   f"median {days['median']} mean {days['mean']}; deadlines met {deadlines['met']['count']}, "
                   f"missed {deadlines['missed']['count']}, extended {deadlines['extended']['count']}")
    rejected = report["rejected"]
    typer.echo(f"  rejected: {rejected['count']}" + "".join(
        f"\n    {r['count']} x {reason}" for reason, r in rejected["by_reason"].items()))
