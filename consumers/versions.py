"""Making model versions from consumers: one writer per model, and crash recovery.

Versions are linear per model (v1, v2, ...), and both the excluder (exclusions) and executors
(restores of different shards) make them. A process makes a version only while it holds the
model's exclusive `flock` (released by the kernel when the process dies), and each new version
starts from the model's newest one, so no two writers race for a number or lose a change.

A version made but not yet certified (the process died in between) is finished by the next
holder of the lock, before it makes another (`settle`):
- an exclusion names its requests in `model.json`;
- a restore is announced in a journal file (base version, shard, requests) before it starts,
  because `model.json` of a restored version does not say what it was for; the journal is
  removed once the restore is certified and logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property

from consumers import stages
from consumers.stages import Outbox
from ledger.certificate import ENVELOPE_FILE
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning.operations.approximate import latest_exact
from unlearning.operations.certify import Receipt, bundle_dir
from unlearning.operations.forget import lookup_receipt, publish, purge
from unlearning.registry.mlflow import Registry
from unlearning.versions.lock import pipeline_dir
from unlearning.versions.store import ModelStore, ModelVersion


@dataclass
class Context:
    """What a consumer's work needs: the workspace, the registry, and who is working."""

    ws: Workspace
    instance: str  # names this consumer in ledger entries (never a person)

    @cached_property
    def registry(self) -> Registry:
        return Registry.for_workspace(self.ws)

    @property
    def models(self) -> ModelStore:
        return ModelStore(self.ws)

    def model_names(self) -> list[str]:
        root = self.models.root
        return sorted(p.name for p in root.iterdir() if self.models.versions(p.name)) if root.is_dir() else []


class Journal:
    """The restore in progress for a model (written before the retrain, removed after logging)."""

    def __init__(self, ws: Workspace, name: str) -> None:
        self.path = pipeline_dir(ws) / f"{name}.restore.json"

    def read(self) -> dict | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def write(self, base: int, shard: int, requests: list[str], jobs: list[str]) -> dict:
        intent = {"base": base, "shard": shard, "requests": requests, "jobs": jobs}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(intent, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        return intent

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _remove_dead_drafts(ws: Workspace, name: str) -> None:
    """Staging directories of killed processes (`.staging-vN-PID`) are garbage: drop them."""
    model_dir = ModelStore(ws).root / name
    for staging in model_dir.glob(".staging-v*-*"):
        pid = int(staging.name.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def registered(ctx: Context, version: ModelVersion) -> tuple[int, str]:
    """(registry version, certificate sha256) of a published version, from the ledger."""
    sha = hashlib.sha256((bundle_dir(ctx.ws, version.name, version.version) / ENVELOPE_FILE).read_bytes()).hexdigest()
    with open_ledger(ctx.ws) as ledger:
        entry = stages.read(ledger, f"model_registered/{version.name}/{sha}")
    if entry is None:
        raise LookupError(f"{version.name} v{version.version} is certified but not registered")
    return entry["registry_version"], sha


def settle(ctx: Context, name: str, outbox: Outbox) -> ModelVersion:
    """Finish a version a crash left uncertified; returns the model's newest exact version (an
    approximate influence update is never the base of further work). Call under `model_lock`."""
    _remove_dead_drafts(ctx.ws, name)
    journal = Journal(ctx.ws, name)
    intent = journal.read()
    newest = latest_exact(ctx.ws, name)
    operation = newest.meta.get("operation", {})
    if operation.get("kind") == "exclusion":
        with open_ledger(ctx.ws) as ledger:
            done = all(ledger.find(stages.excluded_key(r, name)) is not None for r in operation["requests"])
        if not done:
            receipts = [lookup_receipt(ctx.ws, r) for r in operation["requests"]]
            finish_exclusion(ctx, newest, receipts, _version(ctx, name, newest.meta["parent_version"]), outbox)
    elif intent is not None and newest.meta.get("parent_version") == intent["base"]:
        finish_restore(ctx, newest, intent, outbox)
    elif not (bundle_dir(ctx.ws, name, newest.version) / ENVELOPE_FILE).exists():
        publish(ctx.ws, ctx.registry, newest, [])  # trained without a registry at hand, as `forget` does
    journal.clear()
    return newest


def _version(ctx: Context, name: str, number: int) -> ModelVersion | None:
    """A version, or None once purged (a re-publish after a crash needs no parent: the
    certificate exists already)."""
    return ctx.models.get(name, number) if number in ctx.models.versions(name) else None


def finish_exclusion(ctx: Context, version: ModelVersion, receipts: list[Receipt], parent: ModelVersion | None,
                     outbox: Outbox) -> None:
    """Certify and register an exclusion version, purge what saw the records, log, queue events."""
    published = publish(ctx.ws, ctx.registry, version, receipts, parent=parent)
    purge(ctx.ws, ctx.registry, version.name, receipts)
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([("request_excluded", {
            "request_id": r.request_id, "model": version.name, "version": version.version,
            "registry_version": published.version, "certificate_sha256": published.certificate_sha256,
            "removed": version.meta["operation"]["removed"],
        }, stages.excluded_key(r.request_id, version.name)) for r in receipts])
    excluded_events(ctx, version.name, [r.request_id for r in receipts], outbox)


def excluded_events(ctx: Context, name: str, request_ids: list[str], outbox: Outbox) -> None:
    """Per request with an exclusion outcome for `name`, from the ledger (so a redelivered message
    sends them again): `excluded` (version built) and `certified` (registered, aliased), or a
    `planned` event saying why there is no exclusion."""
    with open_ledger(ctx.ws) as ledger:
        built: dict[int, dict | None] = {}
        for r in request_ids:
            entry = stages.read(ledger, stages.excluded_key(r, name))
            if entry is None:
                continue
            timing = stages.timing(ledger, r)
            if entry["type"] == "exclusion_deferred":
                outbox.event(r, "planned", model=name, reason=entry["reason"], **timing)
                continue
            version = entry["version"]
            if version not in built:
                built[version] = stages.read(ledger, f"version_built/{name}/v{version}")
            common = {"model": name, "version": entry["registry_version"], **timing}
            outbox.event(r, "excluded", at=built[version]["at"] if built[version] else None, **common)
            outbox.event(r, "certified", at=entry["at"], certificate_sha256=entry["certificate_sha256"], **common)


def finish_restore(ctx: Context, version: ModelVersion, intent: dict, outbox: Outbox) -> None:
    """Certify and register a restored version, purge what saw the records, log, drop the journal.
    Events: the caller's (`restored_events`), from the ledger."""
    receipts = [lookup_receipt(ctx.ws, r) for r in intent["requests"]]
    published = publish(ctx.ws, ctx.registry, version, receipts, parent=_version(ctx, version.name, intent["base"]))
    purge(ctx.ws, ctx.registry, version.name, receipts)
    log_restored(ctx, version, published.version, published.certificate_sha256, intent)
    Journal(ctx.ws, version.name).clear()
    restored_events(ctx, version.name, intent["requests"], outbox)


def log_restored(ctx: Context, version: ModelVersion, registry_version: int, sha: str, intent: dict) -> None:
    with open_ledger(ctx.ws) as ledger:
        ledger.append_many([("request_restored", {
            "request_id": r, "model": version.name, "shard": intent["shard"], "version": version.version,
            "registry_version": registry_version, "certificate_sha256": sha, "jobs": intent["jobs"],
            "executor": ctx.instance,
        }, stages.restored_key(r, version.name, intent["shard"])) for r in intent["requests"]])


def restored_events(ctx: Context, name: str, request_ids: list[str], outbox: Outbox) -> None:
    """A `restored` event for each request whose every planned shard of `name` is restored."""
    with open_ledger(ctx.ws) as ledger:
        for r in request_ids:
            shards = stages.planned_shards(ledger, r).get(name, [])
            entries = [stages.read(ledger, stages.restored_key(r, name, s)) for s in shards]
            if not shards or any(e is None for e in entries):
                continue
            last = max(entries, key=lambda e: e["index"])
            outbox.event(r, "restored", at=last["at"], model=name, version=last["registry_version"], shards=shards,
                         certificate_sha256=last["certificate_sha256"], **stages.timing(ledger, r))
