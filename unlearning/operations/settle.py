"""Settle: finish a version a crash left uncertified, before anyone builds on the model again.

Versions are linear per model and made only under the model's lock (`unlearning.versions.lock`),
each from the model's newest exact version. The next holder of the lock finishes what a killed
holder left (call `settle` under the lock):
- an exclusion version names its requests in `model.json`;
- a restore is announced in the model's journal (`restore.Journal`) before it starts;
- a version trained without a registry at hand is certified and registered.
"""

from __future__ import annotations

import os
import shutil

from ledger import entries
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning.operations.approximate import latest_exact
from unlearning.operations.certify import certified_bundle
from unlearning.operations.context import Context
from unlearning.operations.exclude import finish_exclusion
from unlearning.operations.publish import publish
from unlearning.operations.receive import receipts_of
from unlearning.operations.restore import Journal, finish_restore
from unlearning.versions.store import ModelStore, ModelVersion


def settle(ctx: Context, name: str) -> ModelVersion:
    """Finish a version a crash left uncertified; returns the model's newest exact version (an
    approximate influence update is never the base of further work). Call under `model_lock`."""
    _remove_dead_drafts(ctx.ws, name)
    journal = Journal(ctx.ws, name)
    intent = journal.read()
    newest = latest_exact(ctx.ws, name)
    operation = newest.meta.operation
    if operation is not None and operation.kind == "exclusion":
        with open_ledger(ctx.ws) as ledger:
            done = all(ledger.find(entries.excluded_key(r, name)) is not None for r in operation.requests)
        if not done:
            finish_exclusion(ctx, newest, receipts_of(ctx.ws, operation.requests),
                             _version(ctx, name, newest.meta.parent_version))
    elif intent is not None and newest.meta.parent_version == intent["base"]:
        finish_restore(ctx, newest, intent, _version(ctx, name, intent["base"]))
    elif certified_bundle(ctx.ws, name, newest.version) is None:
        publish(ctx.ws, ctx.registry, newest, [])  # trained without a registry at hand
    journal.clear()
    return newest


def _version(ctx: Context, name: str, number: int) -> ModelVersion | None:
    """A version, or None once purged (a re-publish after a crash needs no parent: the
    certificate exists already)."""
    return ctx.models.get(name, number) if number in ctx.models.versions(name) else None


def _remove_dead_drafts(ws: Workspace, name: str) -> None:
    """Staging directories of killed processes are garbage: drafts (`.staging-vN-PID`) and half
    downloads from the object store (`.fetch-vN-PID`, of versions and of bundles, which may hold
    a version purged since): drop them."""
    models = ModelStore(ws)
    dirs = [models.root / name, models.bundles / name]
    for staging in [p for d in dirs for pattern in (".staging-v*-*", ".fetch-v*-*") for p in d.glob(pattern)]:
        pid = int(staging.name.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass
