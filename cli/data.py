"""`erasure data`: ingest records into the encrypted record store and inspect them."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import fail, print_json
from ledger.workspace import Workspace
from unlearning.data.partition import SPLITS
from unlearning.data.records import RecordStore, parse_jsonl

app = typer.Typer(help="Ingest and inspect training records.", no_args_is_help=True)

JSON_OUT = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command()
def ingest(
    file: Path | None = typer.Argument(None, help="JSONL: one {record_id, subject_id, prompt, answer} a line."),
    movielens: bool = typer.Option(False, "--movielens", help="TALLRec-style samples from the packaged MovieLens-100K."),
    max_users: int | None = typer.Option(None, "--max-users", min=1, help="MovieLens: only the first N users."),
    per_user: int = typer.Option(3, "--per-user", min=1, help="MovieLens: each user's N most recent targets."),
    as_json: bool = JSON_OUT,
) -> None:
    """Ingest records from JSONL or the packaged MovieLens-100K (all or nothing)."""
    if (file is None) == (not movielens):
        fail("give either FILE.jsonl or --movielens")
    if movielens:
        from unlearning.data import movielens as ml

        records = ml.build_samples(ml.load(), per_user=per_user, max_users=max_users)
    else:
        records = parse_jsonl(file)
    with RecordStore.open(Workspace.from_env()) as store:
        count = store.ingest(records)
    subjects = len({r.subject_id for r in records})
    if as_json:
        print_json({"records": count, "subjects": subjects})
    else:
        typer.echo(f"ingested {count} records of {subjects} subjects")


@app.command()
def stats(as_json: bool = JSON_OUT) -> None:
    """Records and subjects, in all and per split."""
    with RecordStore.open(Workspace.from_env()) as store:
        result = store.stats()
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['records']} records, {result['subjects']} subjects")
    for split in SPLITS:
        s = result["splits"][split]
        typer.echo(f"  {split:5}  {s['records']} records, {s['subjects']} subjects")


@app.command()
def subjects(
    split: str | None = typer.Option(None, "--split", help="train, valid or test."),
    as_json: bool = JSON_OUT,
) -> None:
    """Subject ids (all, or of one split)."""
    with RecordStore.open(Workspace.from_env()) as store:
        ids = store.subjects(split)
    if as_json:
        print_json(ids)
    else:
        for subject in ids:
            typer.echo(subject)
