"""Restore: rebuild what erasures changed on the retained records, then certify it.

`restore` re-plans the method on the retained records and rebuilds only what changed, each
changed component resuming from its last clean checkpoint (SISA) or from scratch. A restore is
announced in the model's journal before it starts (`Journal`), because a restored version's
`model.json` does not say what it was for; `finish_restore` certifies it, purges what saw the
records, logs `request_restored` per request and shard, and clears the journal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ledger import entries
from ledger.errors import CorruptState
from ledger.log import open_ledger
from ledger.manifest import Manifest
from ledger.workspace import Workspace
from unlearning.data.records import NO_SHARD, RecordStore
from unlearning.operations.affected import affected_components, erased_by
from unlearning.operations.context import Context
from unlearning.operations.publish import publish
from unlearning.operations.purge import purge
from unlearning.operations.receive import Receipt, receipts_of
from unlearning.registry.mlflow import RegisteredVersion
from unlearning.versions.lock import pipeline_dir
from unlearning.versions.store import ModelVersion


def restore(ws: Workspace, clean: ModelVersion, receipts: list[Receipt], shards: set[int] | None = None,
            progress=None) -> ModelVersion:  # type: ignore[no-untyped-def]
    """Rebuild what the erasures changed, on the retained records (all pending erasures at once).

    With `shards`, only those shards are rebuilt (one executor's job); the other shards keep
    exactly the components `clean` has, so a shard still waiting for its own job stays excluded.
    Components without a shard (aggregators) are always brought up to date.
    """
    from unlearning import methods
    from unlearning.operations.build import build_version, engine_for

    config = clean.config
    erased = erased_by(receipts)
    with RecordStore.open(ws) as store:
        # every split: APA's aggregator pools the validation records (plan() picks per method)
        records = [r for r in store.records() if r.commitment not in erased]
        partition = methods.get(config.method).version_partition(clean.meta, store.partition)
        plan = methods.plan(config, partition, records)
        if shards is not None:
            present = {c.id: c.manifest_root for c in clean.components}

            def wanted(spec) -> bool:  # type: ignore[no-untyped-def]
                if spec.shard is None or spec.shard in shards:
                    return True
                return present.get(spec.id) == Manifest.from_commitments(spec.commitments).root

            kept = [spec for spec in plan.components if wanted(spec)]
            ids = {spec.id for spec in kept}
            plan = replace(plan, components=kept, aggregate=[cid for cid in plan.aggregate if cid in ids])
            plan = methods.get(config.method).restrict(clean, plan, shards)
        engine = engine_for(config, expected_base=clean.meta.base)
        return build_version(ws, store, clean.name, plan, engine, reuse=clean, progress=progress)


class Journal:
    """The restore in progress for a model (written before the retrain, removed after logging).

    Embedded: a file in ERASURE_HOME/pipeline, replaced atomically. Shared (a database URL): a
    row of `restore_journal` (model, the intent's JSON text), whose writes are fenced by the
    model's lease when this context holds it (`Lease.fence`: a holder whose lease was taken over
    gets `LeaseLost` and changes nothing). Same API and the same corruption handling either way.
    """

    SUFFIX = ".restore.json"

    def __init__(self, ws: Workspace, name: str) -> None:
        self.name = name
        self.url = ws.database_url()
        self.path: Path | None = None if self.url else pipeline_dir(ws) / f"{name}{self.SUFFIX}"

    @classmethod
    def every(cls, ws: Workspace) -> list["Journal"]:
        """The journals that exist (a restore announced and not yet finished), by model."""
        if ws.database_url():
            with _database(ws.database_url()) as conn:
                names = [row[0] for row in conn.execute("SELECT model FROM restore_journal ORDER BY model")]
            return [cls(ws, name) for name in names]
        if not (ws.home / "pipeline").is_dir():
            return []
        return [cls(ws, path.name.removesuffix(cls.SUFFIX)) for path in sorted(pipeline_dir(ws).glob("*" + cls.SUFFIX))]

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"restore_journal/{self.name} in the shared database"

    def read(self) -> dict | None:
        if self.path is None:
            with _database(self.url) as conn:
                row = conn.execute("SELECT intent FROM restore_journal WHERE model = %s", (self.name,)).fetchone()
            if row is None:
                return None
            text = row[0]
            damaged = "the database was damaged; restore it from a backup"
        else:
            if not self.path.exists():
                return None
            text = None
            damaged = "the workspace was damaged; restore it from a backup"
        try:
            intent = json.loads(self.path.read_text() if text is None else text)
            if not isinstance(intent, dict) or not isinstance(intent.get("requests"), list):
                raise ValueError("not a restore intent")
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptState(f"restore journal {self.where} is unreadable ({err}): it is written atomically, "
                               f"so {damaged}") from None
        if "shard" in intent:  # written by an earlier release: one shard per restore
            intent["shards"] = [intent.pop("shard")]
        return intent

    def write(self, base: int, shards: list[int], requests: list[str], jobs: list[str]) -> dict:
        intent = {"base": base, "shards": shards, "requests": requests, "jobs": jobs}
        if self.path is None:
            with _database(self.url) as conn, self._fenced(conn):
                conn.execute("INSERT INTO restore_journal (model, intent) VALUES (%s, %s) "
                             "ON CONFLICT (model) DO UPDATE SET intent = EXCLUDED.intent",
                             (self.name, json.dumps(intent)))
            return intent
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(intent, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        return intent

    def clear(self) -> None:
        if self.path is None:
            with _database(self.url) as conn, self._fenced(conn):
                conn.execute("DELETE FROM restore_journal WHERE model = %s", (self.name,))
            return
        self.path.unlink(missing_ok=True)

    @contextmanager
    def _fenced(self, conn):  # type: ignore[no-untyped-def]
        """A transaction that holds the model's lease row (if this context holds the lease)."""
        from unlearning.versions.lease import current_lease, database_errors

        lease = current_lease(self.name)
        if lease is not None:
            with lease.fence(conn):
                yield
        else:
            with database_errors(), conn.transaction():
                yield


@contextmanager
def _database(url: str | None):  # type: ignore[no-untyped-def]
    """A connection to the shared database for one journal operation (its failures `ServiceError`)."""
    from unlearning.versions.lease import connect, database_errors

    assert url is not None
    conn = connect(url)
    try:
        with database_errors():
            yield conn
    finally:
        conn.close()


def served_clean(version: ModelVersion, shards: Iterable[int], receipts: list[Receipt]) -> set[int]:
    """The `shards` that `version` serves with none of the erased records (nothing left to
    retrain): after an exclusion, S3T's (another order's valid prefix), a shard an earlier
    coalesced retrain already rebuilt, and `NO_SHARD` once the exclusion rewrote APA's
    aggregator without the records."""
    shard_of = {c.id: NO_SHARD if c.meta.shard is None else c.meta.shard for c in version.components}
    dirty = {shard_of[c] for c in affected_components(version, receipts)}  # every manifest read once
    served = {shard_of[c] for c in version.aggregate} | {NO_SHARD}
    return {s for s in shards if s in served and s not in dirty}


def finish_restore(ctx: Context, version: ModelVersion, intent: dict,
                   parent: ModelVersion | None) -> tuple[RegisteredVersion, list[int]]:
    """Certify and register a restored version, purge what saw the records, log, drop the
    journal: (the registered version, the local versions purged)."""
    receipts = receipts_of(ctx.ws, intent["requests"])
    published = publish(ctx.ws, ctx.registry, version, receipts, parent=parent)
    purged = purge(ctx.ws, ctx.registry, version.name, receipts)
    log_restored(ctx, version, published.version, published.certificate_sha256, intent)
    Journal(ctx.ws, version.name).clear()
    return published, purged


def log_restored(ctx: Context, version: ModelVersion, registry_version: int, sha: str, intent: dict) -> None:
    """`request_restored` per request and restored shard that the request's plan named (every
    restore follows its requests' `request_planned`)."""
    with open_ledger(ctx.ws) as ledger:
        planned = {r: entries.planned_shards(ledger, r).get(version.name, []) for r in intent["requests"]}
        ledger.append_many([
            entries.request_restored(r, version.name, shard, version.version, registry_version, sha, intent["jobs"],
                                     ctx.instance)
            for r in intent["requests"] for shard in intent["shards"] if shard in planned[r]])
