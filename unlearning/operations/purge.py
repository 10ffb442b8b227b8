"""Purge: delete every local and registered version that saw an erased record (logged).

With an object store the shared copies go too (indexes, then the model's blobs no remaining
version names); other hosts delete their copies when they next list the model's versions
(`ModelStore`)."""

from __future__ import annotations

import shutil

from ledger import entries, failpoints
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning.operations.affected import affected_components
from unlearning.operations.certify import bundle_dir
from unlearning.operations.receive import Receipt
from unlearning.registry.mlflow import Registry
from unlearning.versions.store import ModelStore


def purge(ws: Workspace, registry: Registry, name: str, receipts: list[Receipt], local: bool = True) -> list[int]:
    """Delete every local and registered version of `name` whose components saw an erased record.

    With `local=False` only the registered copies go (aliases, artifacts): the local versions
    stay as the starting point of a retrain when no exclusion version could be built.
    """
    models = ModelStore(ws)
    request_ids = [r.request_id for r in receipts]
    dirty = [v for v in (models.get(name, n) for n in models.versions(name)) if affected_components(v, receipts)]
    dirty_numbers = {v.version for v in dirty}
    if not dirty:  # a registered copy goes before its local version: none is left either
        return []
    for registered in registry.versions(name):
        if registered.local_version in dirty_numbers:
            registry.purge(ws, registered, request_ids)
    if not local:
        return sorted(dirty_numbers)
    failpoints.reach("purge.before_local")
    with open_ledger(ws) as ledger:
        for v in dirty:
            shutil.rmtree(bundle_dir(ws, name, v.version), ignore_errors=True)
            shutil.rmtree(v.path, ignore_errors=True)
            ledger.append_many([entries.local_version_purged(name, v.version, request_ids)])
    if models.remote is not None:  # then the shared copies (a retry finds them still listed there);
        models.remote.delete(name, sorted(dirty_numbers))  # every host drops its own on sight
    return sorted(dirty_numbers)

