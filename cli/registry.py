"""`erasure forget | rectify | verify | pull`: certified unlearning and its verification."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import print_json
from ledger.workspace import Workspace

JSON_OUT = typer.Option(False, "--json", help="Print JSON.")


APPROXIMATE = typer.Option(False, "--approximate", help="Also publish an APPROXIMATE influence-function update "
                           "(retrain and sisa models), after the exclusion; the retrain supersedes it. Here the "
                           "retrain starts after the solve; `erasure serve` solves beside the exact path.")
SOLVER = typer.Option("direct", "--solver", help="Approximate updates: direct (closed form of the factored Fisher, "
                      "default), cg (conjugate gradients; any curvature) or adam (the LLMEraser paper's: mini-batch "
                      "products; ggn or hessian).")
SOLVER_STEPS = typer.Option(50, "--solver-steps", min=1, help="Approximate updates: at most this many CG products, "
                            "or Adam steps (direct takes none).")
DAMPING = typer.Option(None, "--damping", min=0.0, help="Approximate updates: lambda in (C + lambda I) delta = b "
                       "[default: a tenth of the curvature along b].")
CURVATURE = typer.Option("fisher", "--curvature", help="Approximate updates: fisher (the Gauss-Newton matrix as "
                         "per-token gradient columns: exact over the two most likely answer tokens, sampled over the "
                         "rest; default), ggn (the Gauss-Newton matrix as a matrix-free product, for cg) or hessian "
                         "(exact, often indefinite away from a minimum). fisher and ggn are positive semi-definite.")


def approximate_settings(solver: str, steps: int, damping: float | None, curvature: str):  # type: ignore[no-untyped-def]
    """The solver settings the approximate-update options describe."""
    from unlearning.methods.influence.solver import SolverSettings

    return SolverSettings(solver=solver, steps=steps, damping=damping, curvature=curvature)


def forget(
    name: str = typer.Argument(..., help="Model name."),
    subject: str = typer.Option(..., "--subject", help="Subject id whose data must be forgotten."),
    record: list[str] = typer.Option(None, "--record", help="Forget only these record ids of the subject (repeatable)."),
    request_id: str = typer.Option(None, "--request-id", help="Request id (default: derived from model and subject)."),
    no_retrain: bool = typer.Option(False, "--no-retrain", help="Stop after the certified exclusion version."),
    approximate: bool = APPROXIMATE,
    solver: str = SOLVER,
    solver_steps: int = SOLVER_STEPS,
    damping: float | None = DAMPING,
    curvature: str = CURVATURE,
    legal_basis: str = typer.Option("GDPR Art. 17", "--legal-basis", help="Why the data must go; sets the "
                                    "deadline by policy (GDPR Art. 17: one month, CCPA: 45 days, DROP: 45 days)."),
    as_json: bool = JSON_OUT,
) -> None:
    """Erase a subject from a model, synchronously.

    Logs the request and crypto-shreds the records; certifies an exact exclusion version
    (affected components dropped) and moves the `certified` alias to it; retrains the affected
    shards from their last clean checkpoints (coalesced) and certifies that version too; then
    purges every version that saw the data. Running it again is a no-op.
    """
    from unlearning.operations.forget import forget as run_forget

    result = run_forget(Workspace.from_env(), name, subject, record or None, request_id, retrain=not no_retrain,
                        approximate=approximate_settings(solver, solver_steps, damping, curvature) if approximate else None,
                        legal_basis=legal_basis)
    _report(name, result, "erased", as_json)


def rectify(
    name: str = typer.Argument(..., help="Model name."),
    record: str = typer.Option(..., "--record", help="Id of the record to correct."),
    prompt: str = typer.Option(None, "--prompt", help="The corrected prompt (query modification)."),
    answer: str = typer.Option(None, "--answer", help="The corrected answer (response correction)."),
    request_id: str = typer.Option(None, "--request-id", help="Request id (default: derived from model, record "
                                   "and new content)."),
    approximate: bool = APPROXIMATE,
    solver: str = SOLVER,
    solver_steps: int = SOLVER_STEPS,
    damping: float | None = DAMPING,
    curvature: str = CURVATURE,
    as_json: bool = JSON_OUT,
) -> None:
    """Correct a training record, synchronously.

    Replaces the record's content in the record store under a fresh commitment and logs the old
    commitment like an erasure; certifies an exact exclusion version, retrains the affected
    shard on the corrected data and certifies that version; then purges every version trained
    on the old content. Running it again is a no-op.
    """
    from unlearning.operations.forget import rectify as run_rectify

    result = run_rectify(Workspace.from_env(), name, record, prompt, answer, request_id,
                         approximate=approximate_settings(solver, solver_steps, damping, curvature) if approximate else None)
    _report(name, result, "replaced", as_json)


def measured_lines(updated: dict) -> list[str]:
    """Per updated component, what the update did to its old records and held-out records."""
    lines = []
    for cid, report in updated.items():
        m = report.get("measured")
        if m:
            lines.append(f"{cid}: old records' P(Yes) {m['oldPYesOriginal']} -> {m['oldPYesUpdated']}, "
                         f"membership-inference AUC {m['miaAucOriginal']} -> {m['miaAucUpdated']} (0.5: unseen), "
                         f"held-out AUC {m['heldOutAucOriginal']} -> {m['heldOutAucUpdated']} "
                         f"({m['oldRecords']} old, {m['heldOutRecords']} held-out records)")
    return lines


def _report(name: str, result, what: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print_json(result.to_json())
        return
    typer.echo(f"request {result.request_id}: {result.commitments} records {what}")
    if result.excluded_version is not None:  # in the order they were made
        typer.echo(f"excluded version  models:/{name}/{result.excluded_version} certified "
                   f"({result.timings['excluded_s']:.1f} s)")
    if result.approximate_version is not None:
        residuals = ", ".join(f"{cid} residual {r['relativeResidual']}" for cid, r in result.approximation.items())
        typer.echo(f"approximate version models:/{name}/{result.approximate_version} APPROXIMATE, no alias "
                   f"({residuals}; {result.timings['approximate_s']:.1f} s)")
        for line in measured_lines(result.approximation):
            typer.echo(f"  {line}")
    if result.approximate_error is not None:
        typer.echo(f"approximate update not published: {result.approximate_error}")
    if result.restored_version is not None:
        typer.echo(f"restored version  models:/{name}/{result.restored_version} certified "
                   f"({result.timings['restored_s']:.1f} s)")
    if result.purged_versions:
        typer.echo(f"purged local versions {', '.join(f'v{n}' for n in result.purged_versions)}")
    if result.excluded_version is None and result.restored_version is None:
        typer.echo("no certified version held these records: nothing to retrain")


def verify(
    target: str = typer.Argument(..., help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle directory."),
    trust: Path = typer.Option(None, "--trust", help="Trust file (default: this workspace's public keys)."),
    state: Path = typer.Option(None, "--state", help="Auditor state dir: audit the whole ledger against it."),
    replay: int = typer.Option(0, "--replay", min=0, help="Retrain N sampled components and compare digests."),
    log: str = typer.Option(None, "--log", help="Check the ledger against the log served as tiles at this URL "
                            "(or directory) instead of a local ledger.db; with --state, against the checkpoint "
                            "verified there last time."),
    as_json: bool = JSON_OUT,
) -> None:
    """Verify a certified model version: signature, files, manifests, non-membership proofs,
    ledger inclusion and consistency, registry binding and aliases. Exit 0 only if all pass."""
    from unlearning.registry.verify import verify_target

    result = verify_target(Workspace.from_env(), target, trust, state, replay, log)
    if as_json:
        print_json(result.to_json())
    else:
        for c in result.checks:
            typer.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.check:20} {c.detail}")
        typer.echo(f"{'verified' if result.verified else 'NOT VERIFIED'}: claim {result.claim or '-'}")
        if result.claim == "APPROXIMATE":
            typer.echo(f"APPROXIMATE: {result.predicate.approximation.get('doesNotGuarantee', '')}")
            for line in measured_lines(result.predicate.approximation.get("updated", {})):
                typer.echo(f"measured when made: {line}")
    if not result.verified:
        failed = next((c for c in result.checks if not c.ok), None)
        if failed is not None:
            typer.echo(f"erasure: error: {failed.check}: {failed.detail}", err=True)
        raise typer.Exit(1)


def pull(
    target: str = typer.Argument(..., help="models:/NAME@ALIAS (resolved once, then pinned)."),
    dest: Path = typer.Option(..., "--dest", help="Directory to place the verified bundle in."),
    trust: Path = typer.Option(None, "--trust", help="Trust file (default: this workspace's public keys)."),
    allow_approximate: bool = typer.Option(False, "--allow-approximate", help="Accept APPROXIMATE certificates."),
    as_json: bool = JSON_OUT,
) -> None:
    """Download a certified version, verify it, and only then move it into DEST."""
    from unlearning.registry.verify import pull as run_pull

    result, registered = run_pull(Workspace.from_env(), target, dest, trust, allow_approximate)
    if not result.verified:
        failed = next(c for c in result.checks if not c.ok)
        typer.echo(f"erasure: error: refusing {target} (v{registered.version}): {failed.check}: {failed.detail}", err=True)
        raise typer.Exit(1)
    if as_json:
        print_json({"version": registered.version, "dest": str(dest), **result.to_json()})
    else:
        typer.echo(f"verified v{registered.version} ({result.claim}) -> {dest}")


def register(app: typer.Typer) -> None:
    app.command()(forget)
    app.command()(rectify)
    app.command()(verify)
    app.command()(pull)
