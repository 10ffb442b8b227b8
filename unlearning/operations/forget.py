"""Forgetting a subject: receipt → exact exclusion → coalesced retrain → purge (design §2).

Each step is idempotent, so a repeated request (a Kafka redelivery, or the same `forget` run
twice) finds its earlier effects instead of repeating them:

- `receive` logs `request_received` (natural key = request id) with the erased commitments,
  then crypto-shreds the records, so the data is gone before any model work starts;
- `exclude` builds, in seconds and without training, a version without every component whose
  manifest holds an erased commitment;
- `restore` re-plans the method on the retained records and rebuilds only what changed, each
  changed component resuming from its last clean checkpoint (SISA) or from scratch;
- `publish` certifies a version, registers it in MLflow, verifies the registered copy and only
  then moves the `certified` alias;
- `purge` deletes every local and registered version that saw an erased record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger.certificate import ENVELOPE_FILE
from ledger.errors import BadInput, ServiceError, VerificationFailed
from ledger.log import Ledger, open_ledger
from ledger.manifest import Manifest
from ledger.workspace import Workspace
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.data.secrets import subject_tag
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.approximate import check_supported, influence_version, is_approximate, latest_exact
from unlearning.operations.certify import Receipt, bundle_dir, certified_predicate, certify
from unlearning.registry.mlflow import RegisteredVersion, Registry, fetch
from unlearning.registry.verify import trust_for, verify_registered
from unlearning.training.config import TrainConfig
from unlearning.versions.lock import model_lock
from unlearning.versions.store import ModelStore, ModelVersion


def default_request_id(ws: Workspace, model: str | None, subject_id: str, record_ids: list[str] | None) -> str:
    """Deterministic, so the same `forget` command twice is one request (and names nobody)."""
    scope = json.dumps([model, subject_tag(ws, subject_id), sorted(record_ids or [])])
    return "forget-" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def lookup_receipt(ws: Workspace, request_id: str) -> Receipt | None:
    """The receipt of an already logged request."""
    with open_ledger(ws) as ledger:
        index = ledger.find(f"request/{request_id}")
        return None if index is None else _receipt(ledger, request_id, index)


def _receipt(ledger: Ledger, request_id: str, index: int) -> Receipt:
    return Receipt(request_id, tuple(json.loads(ledger.entry(index))["commitments"]), index)


@dataclass(frozen=True)
class Request:
    """One erasure request as `receive_many` takes it (no Kafka types: the planner converts)."""

    request_id: str
    subject_id: str
    record_ids: tuple[str, ...] | None = None
    model: str | None = None
    source: dict | None = None


def receive(ws: Workspace, request_id: str, subject_id: str, record_ids: list[str] | None = None,
            model: str | None = None, source: dict | None = None) -> Receipt:
    """Log the request with its commitments, then crypto-shred the records (idempotent)."""
    result = receive_many(ws, [Request(request_id, subject_id, tuple(record_ids) if record_ids else None,
                                       model, source)])[0]
    if isinstance(result, BadInput):
        raise result
    return result


def receive_many(ws: Workspace, requests: list[Request]) -> list[Receipt | BadInput]:
    """`receive` for a batch, in one ledger and one record-store transaction; per request its
    receipt, or BadInput (e.g. unknown subject) with nothing logged for it.

    A request logged before is not logged again, but its records are shredded again: a crash
    between the two transactions must not leave them readable.
    """
    results: dict[str, Receipt | BadInput] = {}
    with open_ledger(ws) as ledger, RecordStore.open(ws) as store:
        new: dict[str, tuple[Request, list[bytes]]] = {}
        for req in requests:
            if req.request_id in results or req.request_id in new:
                continue
            index = ledger.find(f"request/{req.request_id}")
            if index is not None:
                results[req.request_id] = _receipt(ledger, req.request_id, index)
                continue
            try:
                new[req.request_id] = (req, store.commitments_of(req.subject_id, req.record_ids))
            except BadInput as err:
                results[req.request_id] = err
        indices = ledger.append_many([("request_received", {
            "request_id": req.request_id, "kind": "erase_records" if req.record_ids else "erase_subject",
            "subject_tag": subject_tag(ws, req.subject_id), "model": req.model,
            "commitments": [c.hex() for c in commitments], "source": req.source or {"via": "cli"},
        }, f"request/{req.request_id}") for req, commitments in new.values()])
        for (req, commitments), index in zip(new.values(), indices):
            results[req.request_id] = Receipt(req.request_id, tuple(c.hex() for c in commitments), index)
        # the ledger holds the commitments now: the records themselves can go
        store.erase_commitments(bytes.fromhex(c) for r in results.values() if isinstance(r, Receipt)
                                for c in r.commitments)
    return [results[req.request_id] for req in requests]


def _erased(receipts: list[Receipt]) -> set[bytes]:
    return {bytes.fromhex(c) for r in receipts for c in r.commitments}


def affected_components(version: ModelVersion, receipts: list[Receipt]) -> set[str]:
    erased = _erased(receipts)
    return {c.id for c in version.components if not erased.isdisjoint(c.manifest().leaves)}  # each read once


def exclude(ws: Workspace, version: ModelVersion, receipts: list[Receipt], attest: bool = False) -> ModelVersion | None:
    """An exact version without the affected components, or None when nothing servable remains.

    Per aggregation rule: mean P(Yes) (retrain, SISA) drops the affected components; S3T
    truncates every order at the affected position and serves each shard's longest valid
    prefix; APA drops the affected adapters and rewrites its aggregator without their
    prediction columns and without erased validation rows. No training in any case.

    Nothing affected gives None too, unless `attest`: then the new version keeps every
    component, so that its certificate names the requests (the pipeline certifies every request
    within seconds, also when an earlier exclusion already removed its shard).
    """
    affected = affected_components(version, receipts)
    if not affected and not attest:
        return None
    kept, aggregation, aggregator = _excluded(version, affected, _erased(receipts))
    if not aggregation["components"]:
        return None
    meta = {k: v for k, v in version.meta.items() if k not in ("name", "version", "components", "created_at")}
    removed = sorted({c.id for c in version.components} - {c.id for c in kept})
    with ModelStore(ws).draft(version.name) as draft:
        for component in kept:
            draft.reuse_component(component)
        if aggregator is not None:
            draft.write_aggregator(aggregation["aggregator"], aggregator,
                                   version.component(aggregation["aggregator"]).meta["environment"])
        excluded = draft.commit({**meta, "parent_version": version.version, "aggregation": aggregation,
                                 "operation": {"kind": "exclusion", "requests": [r.request_id for r in receipts],
                                               "removed": removed}})
    entries = []
    if aggregator is not None:  # a new component: log it like a trained one, so certificates can cite it
        c = excluded.component(aggregation["aggregator"])
        entries.append(("component_trained", {
            "model": excluded.name, "version": excluded.version, "component": c.id, "shard": None, "slice": None,
            "parent": None, "manifest_root": c.meta["manifest"]["root"], "manifest_size": c.manifest_size,
            "weights_sha256": c.weights_sha256, "config_sha256": excluded.meta["config_sha256"],
        }, f"component_trained/{excluded.name}/v{excluded.version}/{c.id}"))
    entries.append(("version_built", {"model": excluded.name, "version": excluded.version, "kind": "exclusion",
                                      "parent_version": version.version, "removed": removed,
                                      "aggregate": aggregation["components"],
                                      "requests": [r.request_id for r in receipts]},
                    f"version_built/{excluded.name}/v{excluded.version}"))
    with open_ledger(ws) as ledger:
        ledger.append_many(entries)
    return excluded


def _needs_restore(version: ModelVersion) -> bool:
    """S3T serves the longest valid prefix of another order instead of retraining: it retrains
    only once a shard has no valid order left. The other methods always restore utility."""
    if "s3t" not in version.meta["aggregation"]:  # S3T serves by mean_p_yes: its order state marks it
        return True
    from unlearning.methods.s3t.orders import order_state

    return bool(order_state(version.meta).exhausted_shards())


def _excluded(version: ModelVersion, affected: set[str], erased: set[bytes]):  # type: ignore[no-untyped-def]
    """(components kept as they are, the new aggregation, a rewritten APA aggregator or None)."""
    aggregation = version.meta["aggregation"]
    rule = aggregation["rule"]
    if "s3t" in aggregation:  # rule mean_p_yes over the served stages; the order state marks S3T
        from unlearning.methods.s3t.orders import excluded_aggregation, order_state

        new = excluded_aggregation(version, erased)
        retained = set(order_state({"aggregation": new}).retained_components())
        return [c for c in version.components if c.id in retained], new, None
    if rule == "apa":
        from unlearning.methods.apa.aggregation import Aggregator

        pool_id = aggregation["aggregator"]
        dropped = affected - {pool_id}
        aggregator = Aggregator.load(version.component(pool_id).path).without_records(erased).without_adapters(dropped)
        kept = [c for c in version.components if c.id not in affected and c.id != pool_id]
        return kept, {**aggregation, "components": [cid for cid in version.aggregate if cid not in affected]}, aggregator
    kept = [c for c in version.components if c.id not in affected]
    return kept, {**aggregation, "components": [cid for cid in version.aggregate if cid not in affected]}, None


def restore(ws: Workspace, clean: ModelVersion, receipts: list[Receipt], shards: set[int] | None = None,
            progress=None) -> ModelVersion:  # type: ignore[no-untyped-def]
    """Rebuild what the erasures changed, on the retained records (all pending erasures at once).

    With `shards`, only those shards are rebuilt (one executor's job); the other shards keep
    exactly the components `clean` has, so a shard still waiting for its own job stays excluded.
    Components without a shard (aggregators) are always brought up to date.
    """
    from unlearning import methods
    from unlearning.methods.apa import centroids
    from unlearning.operations.build import build_version, engine_for

    config = clean.config
    erased = _erased(receipts)
    with RecordStore.open(ws) as store:
        # every split: APA's aggregator pools the validation records (plan() picks per method)
        records = [r for r in store.records() if r.commitment not in erased]
        plan = methods.plan(config, centroids.version_partition(clean.meta, store.partition), records)
        if shards is not None:
            present = {c.id: c.manifest_root for c in clean.components}

            def wanted(spec) -> bool:  # type: ignore[no-untyped-def]
                if spec.shard is None or spec.shard in shards:
                    return True
                return present.get(spec.id) == Manifest.from_commitments(spec.commitments).root

            kept = [spec for spec in plan.components if wanted(spec)]
            ids = {spec.id for spec in kept}
            plan = replace(plan, components=kept, aggregate=[cid for cid in plan.aggregate if cid in ids])
            if "s3t" in plan.details:  # the other shards keep serving their truncated orders
                from unlearning.methods.s3t.orders import order_state

                state = order_state(clean.meta).with_shards(order_state({"aggregation": plan.details}), shards)
                plan = replace(plan, aggregate=state.active_components(), details={"s3t": state.to_json()})
        engine = engine_for(config, expected_base=clean.meta["base"])
        return build_version(ws, store, clean.name, plan, engine, reuse=clean, progress=progress)


def _lineage(parent: ModelVersion, child: ModelVersion) -> tuple[dict[str, str], dict[str, str | None], list[str]]:
    """Per component of `child`: kept (same weights as in `parent`) or retrained (and from what)."""
    before = {c.id: c.weights_sha256 for c in parent.components}
    actions, resumed = {}, {}
    for c in child.components:
        if before.get(c.id) == c.weights_sha256:
            actions[c.id] = "kept"
        else:
            actions[c.id] = "retrained"
            resumed[c.id] = c.parent
    removed = sorted(before.keys() - {c.id for c in child.components})
    return actions, resumed, removed


def publish(ws: Workspace, registry: Registry, version: ModelVersion, receipts: list[Receipt],
            parent: ModelVersion | None = None, approximation: dict | None = None) -> RegisteredVersion:
    """Certify, register, verify the registered copy, then move the `certified` alias to it.

    With `approximation` (an influence update of `parent`) the claim is APPROXIMATE: the
    changed components are `updated`, not retrained, and the version gets no alias. An EXACT
    version supersedes every approximate one whose requests its certificate covers.
    """
    if approximation is None and is_approximate(version):
        raise VerificationFailed(f"{version.name} v{version.version} is an approximate update: it is never certified EXACT")
    actions, resumed, removed = _lineage(parent, version) if parent else ({}, {}, [])
    if approximation is not None:
        actions = {cid: "updated" if action == "retrained" else action for cid, action in actions.items()}
        resumed = {}
    bundle = certify(ws, version, receipts, actions, resumed, removed,
                     claim="EXACT" if approximation is None else "APPROXIMATE", approximation=approximation)
    predicate = certified_predicate(bundle, ws)
    envelope_sha = hashlib.sha256((bundle / ENVELOPE_FILE).read_bytes()).hexdigest()
    with open_ledger(ws) as ledger:
        certificate_index = ledger.find(f"certificate/{envelope_sha}")
    registered = registry.register(ws, bundle, predicate, certificate_index)
    with fetch(registry, registered) as tmp:
        check = verify_registered(ws, registry, registered, Path(tmp) / "bundle", trust_for(ws, None),
                                  check_aliases=False)
    if not check.verified:
        failed = next(c for c in check.checks if not c.ok)
        registry.set_status(registered, "rejected")
        raise VerificationFailed(f"registered v{registered.version} failed {failed.check}: {failed.detail}")
    if predicate.claim == "EXACT":
        registry.move_alias(ws, registered)
        _supersede_approximations(ws, registry, registered, {e.requestId for e in predicate.erasures})
    else:
        registry.set_status(registered, "approximate")
    return registry.get(registered.name, registered.version)


def _supersede_approximations(ws: Workspace, registry: Registry, exact: RegisteredVersion, handled: set[str]) -> None:
    """Mark every registered approximate version whose requests `exact` handles as superseded
    (and log it: the purge that follows deletes the version from the registry)."""
    for other in registry.versions(exact.name):
        if other.status != "approximate":
            continue
        with fetch(registry, other) as tmp:
            requests = {r["requestId"] for r in certified_predicate(Path(tmp) / "bundle", ws).approximation["requests"]}
        if requests <= handled:
            registry.set_status(other, "superseded")
            with open_ledger(ws) as ledger:
                ledger.append("version_superseded", {
                    "model": exact.name, "registry_version": other.version, "version": other.local_version,
                    "claim": "APPROXIMATE", "by_registry_version": exact.version, "requests": sorted(requests),
                }, natural_key=f"version_superseded/{exact.name}/registry/{other.version}")


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
    with open_ledger(ws) as ledger:
        for v in dirty:
            shutil.rmtree(bundle_dir(ws, name, v.version), ignore_errors=True)
            shutil.rmtree(v.path)
            ledger.append("version_purged", {"model": name, "version": v.version, "request_ids": request_ids},
                          natural_key=f"version_purged/{name}/v{v.version}")
    return sorted(dirty_numbers)


@dataclass
class ForgetResult:
    request_id: str
    commitments: int
    approximate_version: int | None = None  # registry version numbers
    excluded_version: int | None = None
    restored_version: int | None = None
    purged_versions: list[int] = field(default_factory=list)  # local version numbers
    timings: dict[str, float] = field(default_factory=dict)
    approximation: dict = field(default_factory=dict)  # per updated component: solver report
    approximate_error: str | None = None  # why no approximate version was published

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "commitments": self.commitments,
                "approximate_version": self.approximate_version, "approximation": self.approximation,
                "approximate_error": self.approximate_error,
                "excluded_version": self.excluded_version, "restored_version": self.restored_version,
                "purged_versions": self.purged_versions, "timings": self.timings}


def forget(ws: Workspace, name: str, subject_id: str, record_ids: list[str] | None = None,
           request_id: str | None = None, retrain: bool = True, progress=None,  # type: ignore[no-untyped-def]
           approximate: SolverSettings | None = None) -> ForgetResult:
    """The synchronous path of design §2 (the event pipeline runs the same steps).

    With `approximate`, an influence-function update of the served adapters is published first
    (APPROXIMATE, from the records held in memory after the store shredded them); the exact
    path always follows and supersedes it.
    """
    with model_lock(ws, name, urgent=True):  # a pipeline serving the same workspace waits, and vice versa
        return _forget(ws, name, subject_id, record_ids, request_id, retrain, progress, approximate)


def _forget(ws: Workspace, name: str, subject_id: str, record_ids: list[str] | None, request_id: str | None,
            retrain: bool, progress, approximate: SolverSettings | None) -> ForgetResult:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    current = latest_exact(ws, name)  # BadInput for unknown models, before anything is logged
    registry = Registry.for_workspace(ws)
    request_id = request_id or default_request_id(ws, name, subject_id, record_ids)
    held = []  # the records as trained, for the approximate update (a repeated request has none left)
    if lookup_receipt(ws, request_id) is None:
        with RecordStore.open(ws) as store:
            store.commitments_of(subject_id, record_ids)  # BadInput for unknown subjects, before any effect
            if approximate is not None:
                _check_approximate(current, retrain)
                held = [r for r in store.records("train")
                        if r.subject_id == subject_id and (not record_ids or r.record_id in record_ids)]
    _certify_first(ws, registry, current)
    receipt = receive(ws, request_id, subject_id, record_ids, model=name)
    result = ForgetResult(request_id, len(receipt.commitments))
    result.timings["received_s"] = round(time.monotonic() - start, 3)
    if held:
        _approximate(ws, registry, current, held, [], receipt, approximate, result, start)
    return _exact(ws, registry, current, receipt, result, start, retrain, progress)


def rectify(ws: Workspace, name: str, record_id: str, prompt: str | None = None, answer: str | None = None,
            request_id: str | None = None, progress=None,  # type: ignore[no-untyped-def]
            approximate: SolverSettings | None = None) -> ForgetResult:
    """Correct a record (query modification: a new prompt; response correction: a new answer).

    The record store replaces its content under a fresh commitment; the old commitment is
    logged like an erasure, so the exact path (exclusion, retrain of the affected shard on the
    corrected data, purge) is the erasure's. With `approximate`, an influence update from the
    old to the new content is published first, as in `forget`.
    """
    with model_lock(ws, name, urgent=True):
        return _rectify(ws, name, record_id, prompt, answer, request_id, progress, approximate)


def _rectify(ws: Workspace, name: str, record_id: str, prompt: str | None, answer: str | None,
             request_id: str | None, progress, approximate: SolverSettings | None) -> ForgetResult:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    current = latest_exact(ws, name)
    registry = Registry.for_workspace(ws)
    old, new = correction(ws, record_id, prompt, answer)
    request_id = request_id or _rectify_request_id(ws, name, new)
    receipt = logged_rectification(ws, request_id, old, new)
    if receipt is None:
        check_trainable([current.config], new)  # before any effect
        if approximate is not None:
            _check_approximate(current, retrain=True)
    _certify_first(ws, registry, current)
    receipt = receive_rectification(ws, request_id, old, new, name, receipt)
    result = ForgetResult(request_id, len(receipt.commitments))
    result.timings["received_s"] = round(time.monotonic() - start, 3)
    if approximate is not None and old.commitment.hex() in receipt.commitments:  # the old content is at hand
        _approximate(ws, registry, current, [old], [new], receipt, approximate, result, start)
    return _exact(ws, registry, current, receipt, result, start, retrain=True, progress=progress)


def correction(ws: Workspace, record_id: str, prompt: str | None, answer: str | None,
               subject_id: str | None = None) -> tuple[StoredRecord, Record]:
    """(the record as stored, its corrected content); BadInput for unknown records, a record of
    another subject than `subject_id`, or nothing to change."""
    if prompt is None and answer is None:
        raise BadInput("nothing to rectify: give a new prompt, a new answer or both")
    with RecordStore.open(ws) as store:
        old = store.record(record_id)  # BadInput for unknown records
    if subject_id is not None and old.subject_id != subject_id:
        raise BadInput(f"record {record_id!r} does not belong to subject {subject_id!r}")
    return old, Record(record_id, old.subject_id, old.prompt if prompt is None else prompt,
                       old.answer if answer is None else answer)


def check_trainable(configs: Iterable[TrainConfig], record: Record) -> None:
    """BadInput if a corrected record could not be trained on with these configs (too many
    tokens for a max_length, an empty answer): the retrain after the exclusion would fail.
    Needs only each base's tokenizer, not an engine."""
    from unlearning.training.base_models import load_base
    from unlearning.training.engine import encode

    limits: dict[str, int] = {}
    for config in configs:
        limits[config.base] = min(config.max_length, limits.get(config.base, config.max_length))
    for base, max_length in limits.items():
        encode(load_base(base), max_length, [record])


def logged_rectification(ws: Workspace, request_id: str, old: StoredRecord, new: Record) -> Receipt | None:
    """The receipt of a rectification request already logged (None: new); BadInput when a new
    request changes nothing, or a logged one was for earlier content of the record."""
    receipt = lookup_receipt(ws, request_id)
    same = (new.prompt, new.answer) == (old.prompt, old.answer)
    if receipt is None and same:
        raise BadInput(f"record {old.record_id!r} already has this prompt and answer: nothing to rectify")
    if receipt is not None and old.commitment.hex() not in receipt.commitments and not same:
        raise BadInput(f"request {request_id} was logged for earlier content of record {old.record_id!r}: "
                       "use a new request id")
    return receipt


def _rectify_request_id(ws: Workspace, model: str, new: Record) -> str:
    """Deterministic per (model, record, new content), keyed so it reveals no content."""
    scope = json.dumps([model, subject_tag(ws, new.subject_id), new.record_id,
                        subject_tag(ws, new.canonical_bytes().decode("utf-8"))])
    return "rectify-" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def receive_rectification(ws: Workspace, request_id: str, old: StoredRecord, new: Record, model: str | None,
                          receipt: Receipt | None, source: dict | None = None) -> Receipt:
    """Log the request with the old commitment, then replace the record's content (idempotent:
    a request logged before is completed if its record still has the old commitment)."""
    with open_ledger(ws) as ledger, RecordStore.open(ws) as store:
        if receipt is None:
            fields = [f for f in ("prompt", "answer") if getattr(new, f) != getattr(old, f)]
            index = ledger.append("request_received", {
                "request_id": request_id, "kind": "rectify_record", "subject_tag": subject_tag(ws, old.subject_id),
                "model": model, "commitments": [old.commitment.hex()], "fields": fields,
                "source": source or {"via": "cli"},
            }, natural_key=f"request/{request_id}")
            receipt = Receipt(request_id, (old.commitment.hex(),), index)
        if old.commitment.hex() in receipt.commitments:  # the ledger holds the old commitment: replace it
            store.rectify_record(old.record_id, new.prompt, new.answer)
    return receipt


def _check_approximate(version: ModelVersion, retrain: bool) -> None:
    check_supported(version)
    if not retrain:
        raise BadInput("an approximate update is always followed by the exact retrain: drop --no-retrain")


def _certify_first(ws: Workspace, registry: Registry, current: ModelVersion) -> None:
    if not (bundle_dir(ws, current.name, current.version) / ENVELOPE_FILE).exists():
        publish(ws, registry, current, [])  # trained without a registry at hand: certify it first


def approximate_update(ws: Workspace, registry: Registry, current: ModelVersion, old: list[StoredRecord],
                       new: list[Record], receipt: Receipt,
                       settings: SolverSettings) -> tuple[RegisteredVersion, dict] | None:
    """Publish the APPROXIMATE influence update of `current` for one logged request: (its
    registered version, the solver report per updated component), or None when no served
    adapter was trained on the records. BadInput (nothing published) when the method has no
    approximate path or the solve is poor; the exact path must run either way."""
    update = influence_version(ws, current, old, new, [receipt], settings)  # BadInput for other methods
    if update is None:
        return None
    registered = publish(ws, registry, update.version, [], parent=current, approximation=update.approximation)
    return registered, {cid: s.report() for cid, s in update.solutions.items()}


def _approximate(ws: Workspace, registry: Registry, current: ModelVersion, old: list[StoredRecord],
                 new: list[Record], receipt: Receipt, settings: SolverSettings, result: ForgetResult,
                 start: float) -> None:
    try:
        published = approximate_update(ws, registry, current, old, new, receipt, settings)
    except BadInput as err:  # the request is logged and its records are gone: the exact path must still run
        result.approximate_error = str(err)
        return
    if published is None:
        return
    result.approximate_version, result.approximation = published[0].version, published[1]
    result.timings["approximate_s"] = round(time.monotonic() - start, 3)


def _exact(ws: Workspace, registry: Registry, current: ModelVersion, receipt: Receipt, result: ForgetResult,
           start: float, retrain: bool, progress) -> ForgetResult:  # type: ignore[no-untyped-def]
    """Exclusion, retrain and purge for one logged request (shared by erasure and rectification)."""
    if affected_components(current, [receipt]):
        excluded = exclude(ws, current, [receipt])
        if excluded is not None:
            result.excluded_version = publish(ws, registry, excluded, [receipt], parent=current).version
            result.timings["excluded_s"] = round(time.monotonic() - start, 3)
            current = excluded
        if retrain and (excluded is None or _needs_restore(excluded)):
            restored = restore(ws, current, [receipt], progress=progress)
            result.restored_version = publish(ws, registry, restored, [receipt], parent=current).version
            result.timings["restored_s"] = round(time.monotonic() - start, 3)
    result.purged_versions = purge(ws, registry, current.name, [receipt])
    result.timings["total_s"] = round(time.monotonic() - start, 3)
    return result


def register_trained(ws: Workspace, version: ModelVersion) -> RegisteredVersion:
    """Certify and register a freshly trained version (no erasures yet) and alias it."""
    return publish(ws, Registry.for_workspace(ws), version, [])


def registry_unready(ws: Workspace) -> str | None:
    """Why a new version cannot be certified and registered right now, if it cannot."""
    from ledger.keys import private_key_path

    missing = [role for role in ("ledger", "certifier") if not private_key_path(ws.key_dir, role).exists()]
    if missing:
        return f"no {' and '.join(missing)} key: run `erasure keys init`"
    try:
        ws.mlflow_uri()
    except ServiceError as err:
        return str(err)
    return None


__all__ = ["ForgetResult", "Request", "affected_components", "check_trainable", "exclude", "forget", "lookup_receipt", "publish", "registry_unready",
           "purge", "receive", "receive_many", "rectify", "register_trained", "restore"]
