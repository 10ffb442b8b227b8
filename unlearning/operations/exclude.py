"""Exclude: an exact version without the components that saw erased records, in seconds.

`exclude` builds the version (no training); `finish_exclusion` certifies, registers and aliases
it, purges every version that saw the records and logs `request_excluded` per request.
"""

from __future__ import annotations

from ledger import entries
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning import methods
from unlearning.operations.affected import affected_components, erased_by
from unlearning.operations.context import Context
from unlearning.operations.publish import publish
from unlearning.operations.purge import purge
from unlearning.operations.receive import Receipt
from unlearning.registry.mlflow import RegisteredVersion
from unlearning.versions.store import ModelStore, ModelVersion


def exclude(ws: Workspace, version: ModelVersion, receipts: list[Receipt], attest: bool = False) -> ModelVersion | None:
    """An exact version without the affected components, or None when nothing servable remains.

    What stays is the method's call (`Method.exclude`): retrain and SISA drop the affected
    components; S3T truncates every order at the affected position and serves each shard's
    longest valid prefix; APA drops the affected adapters and rewrites its aggregator without
    their prediction columns and without erased validation rows. No training in any case.

    Nothing affected gives None too, unless `attest`: then the new version keeps every
    component, so that its certificate names the requests (the pipeline certifies every request
    within seconds, also when an earlier exclusion already removed its shard).
    """
    affected = affected_components(version, receipts)
    if not affected and not attest:
        return None
    exclusion = methods.get(version.meta.method).exclude(version, affected, erased_by(receipts))
    aggregation = exclusion.aggregation
    if not aggregation["components"]:
        return None
    kept = [version.component(cid) for cid in exclusion.kept]
    removed = sorted({c.id for c in version.components} - {c.id for c in kept})
    with ModelStore(ws).draft(version.name) as draft:
        for component in kept:
            draft.reuse_component(component)
        if exclusion.rewritten is not None:
            rewritten_id, aggregator = exclusion.rewritten
            draft.write_aggregator(rewritten_id, aggregator, version.component(rewritten_id).meta.environment)
        excluded = draft.commit({**version.meta.fields(), "parent_version": version.version, "aggregation": aggregation,
                                 "operation": {"kind": "exclusion", "requests": [r.request_id for r in receipts],
                                               "removed": removed}})
    logged = []
    if exclusion.rewritten is not None:  # a new component: log it like a trained one, so certificates can cite it
        c = excluded.component(exclusion.rewritten[0])
        logged.append(entries.component_trained(
            excluded.name, excluded.version, c.id, None, None, None, c.meta.manifest.root, c.manifest_size,
            c.weights_sha256, excluded.meta.config_sha256))
    logged.append(entries.version_excluded(excluded.name, excluded.version, version.version, removed,
                                           aggregation["components"], [r.request_id for r in receipts]))
    with open_ledger(ws) as ledger:
        ledger.append_many(logged)
    return excluded


def finish_exclusion(ctx: Context, version: ModelVersion, receipts: list[Receipt],
                     parent: ModelVersion | None) -> tuple[RegisteredVersion, list[int]]:
    """Certify and register an exclusion version, purge what saw the records, log
    `request_excluded` per request: (the registered version, the local versions purged)."""
    published = publish(ctx.ws, ctx.registry, version, receipts, parent=parent)
    purged = purge(ctx.ws, ctx.registry, version.name, receipts)
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([entries.request_excluded(
            r.request_id, version.name, version.version, published.version, published.certificate_sha256,
            version.meta.operation.removed) for r in receipts])
    return published, purged
