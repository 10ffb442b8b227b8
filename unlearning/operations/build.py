"""Building model versions from plans, and replaying components.

`build_version` runs a plan: each component starts from its parent's saved checkpoint (or
the seeded init) and is written to the draft version; with `reuse`, every component whose
inputs are unchanged (same config, same manifest, reused parent) is taken over from the
earlier version, so the first changed component resumes from the last clean checkpoint.
That is SISA unlearning, and it is exact: the result equals a from-scratch build.

S3T stages train only their layer group (`train_component`); a component that is computed,
not trained (APA's aggregator), is the method's to build (`Method.build_computed`), keeping
what of the reused version is still right.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from rich.progress import Progress

from ledger import entries
from ledger.errors import BadInput, VerificationFailed
from ledger.log import open_ledger
from ledger.manifest import Manifest
from ledger.statement import file_sha256
from ledger.workspace import Workspace
from unlearning import methods
from unlearning.data.records import NO_SHARD, Provenance, RecordStore, StoredRecord
from unlearning.methods.base import Plan
from unlearning.training.base_models import load_base
from unlearning.training.checkpoint import TrainingState
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine, Example, environment
from unlearning.training.prefix import from_bytes, to_bytes
from unlearning.training.layer_groups import stage_layers, trainable_layers
from unlearning.versions.layout import ADAPTER_FILE
from unlearning.versions.store import Component, ModelStore, ModelVersion


def engine_for(config: TrainConfig, expected_base: dict | None = None) -> Engine:
    """An engine on the config's base model; VerificationFailed if the base is not `expected_base`."""
    base = load_base(config.base)
    if expected_base is not None and base.descriptor != expected_base:
        raise VerificationFailed(f"base model {config.base} is not the one the version was trained on "
                                 f"(weights {base.descriptor['weights_sha256'][:12]}, "
                                 f"expected {expected_base['weights_sha256'][:12]})")
    return Engine(base, config)


def train_model(workspace: Workspace, name: str, config: TrainConfig, progress: Progress | None = None) -> ModelVersion:
    """Version 1 of model `name`, trained with `config` on the store's training records."""
    models = ModelStore(workspace)
    if models.versions(name):
        raise BadInput(f"model {name!r} already exists")
    with RecordStore.open(workspace) as store:
        records = store.records()  # APA's aggregator pools the validation records too
        if not any(r.split == "train" for r in records):
            raise BadInput("no training records: ingest some with `erasure data ingest`")
        engine = engine_for(config)
        plan = methods.plan(config, methods.get(config.method).partition(config, store.partition, engine), records)
        return build_version(workspace, store, name, plan, engine, progress=progress)


def build_version(workspace: Workspace, store: RecordStore, name: str, plan: Plan, engine: Engine,
                  reuse: ModelVersion | None = None, progress: Progress | None = None) -> ModelVersion:
    """Train (or reuse) every component of `plan` with the engine's config into the next version
    of `name`, record provenance and log it."""
    config, env = engine.config, environment(engine.config)
    if reuse is not None and (reuse.meta.config_sha256 != config.sha256()
                              or reuse.meta.base != engine.base.descriptor):
        raise BadInput(f"cannot reuse {reuse.name} v{reuse.version}: trained with another config or base")
    records = sorted({r for s in plan.components for r in s.records}, key=lambda r: r.record_id)
    examples = {e.record_id: e for e in engine.encode(records)}
    trained: list[str] = []
    reused: set[str] = set()
    with (ModelStore(workspace).draft(name) as draft,
          stored_prefixes(engine, store, {r.commitment: examples[r.record_id] for r in records})):
        for spec in plan.components:
            if spec.kind != "adapter":  # computed from the adapters before it (APA's aggregator)
                if methods.get(config.method).build_computed(engine, draft, plan, spec, reuse, env, progress):
                    trained.append(spec.id)
                continue
            old = _reusable(reuse, spec, reused, env)
            if old is not None:
                draft.reuse_component(old)
                reused.add(spec.id)
                continue
            state = engine.initial_state() if spec.parent is None else draft.component(spec.parent).training_state()
            state = train_component(engine, spec, state, [examples[r.record_id] for r in spec.records], progress)
            draft.write_component(spec, state, engine.lora_config, env)
            trained.append(spec.id)
        store.add_provenance(_provenance(plan, name, draft.version))
        version = draft.commit({
            "method": config.method,
            "config": config.to_dict(),
            "config_sha256": config.sha256(),
            "base": engine.base.descriptor,
            "environment": env,
            "aggregation": {"rule": plan.rule, "components": plan.aggregate, **plan.details},
            "partition": plan.partition,
            "parent_version": reuse.version if reuse else None,
        })
    _log(workspace, version, trained)
    return version


@contextmanager
def stored_prefixes(engine: Engine, store: RecordStore, examples: Mapping[bytes, Example]) -> Iterator[None]:
    """The cached prefix states (top-N LoRA layers only) of these records, encoded and keyed by
    commitment: read from the store into the engine before, and the states the store lacks
    written back after, each encrypted under its subject's key (a record's prompt+answer states
    for training, its prompt's for scoring). A record erased meanwhile is skipped by the store,
    so nothing outlives its erasure."""
    cache = engine.prefixes
    if cache is None:
        yield
        return
    sequences: dict[tuple[bytes, str], tuple[int, ...]] = {}
    for commitment, e in examples.items():
        sequences[(commitment, "prompt")] = e.prompt_ids
        sequences[(commitment, "answer")] = e.prompt_ids + e.answer_ids
    stored = store.activations(cache.digest, examples)
    for key, payload in stored.items():
        if key in sequences:
            cache.load(sequences[key], from_bytes(payload))
    yield
    fresh = [(c, kind, to_bytes(hidden)) for (c, kind), ids in sequences.items()
             if (c, kind) not in stored and (hidden := cache.peek(ids)) is not None]
    if fresh:
        store.add_activations(cache.digest, fresh)


def train_component(engine: Engine, spec: methods.ComponentSpec, state: TrainingState, examples: list[Example],
                    progress: Progress | None = None) -> TrainingState:
    """Train one planned component from its starting state (the seeded init or its parent's
    checkpoint). An S3T stage trains only its layer group, with a fresh optimizer: the
    parent's moments belong to another group's parameters."""
    if spec.group is None:
        return engine.train(state, examples, spec.samples, spec.id, progress)
    with trainable_layers(engine, stage_layers(engine, spec.group)):
        return engine.train(replace(state, optimizer=None, scheduler=None), examples, spec.samples, spec.id, progress)


def _reusable(reuse: ModelVersion | None, spec: methods.ComponentSpec, reused: set[str],
              env: dict) -> Component | None:
    """The earlier version's component if it was trained on exactly this spec's inputs, here."""
    if reuse is None or spec.id not in reuse.meta.components:
        return None
    if spec.parent is not None and spec.parent not in reused:
        return None
    old = reuse.component(spec.id)
    same_data = old.manifest_root == Manifest.from_commitments(spec.commitments).root
    return old if same_data and old.meta.samples == spec.samples and old.meta.environment == env else None


def _provenance(plan: Plan, name: str, version: int) -> list[Provenance]:
    """One row per (record, version): the component where the record enters training."""
    rows, seen = [], {}
    for spec in plan.components:
        inherited = seen.get(spec.parent, set())
        for record in spec.records:
            if record.record_id not in inherited:
                rows.append(Provenance(record.commitment, name, version, spec.id, _stored_position(spec.shard),
                                       _stored_position(spec.slice), record.split))
        seen[spec.id] = {r.record_id for r in spec.records}
    return rows


def _stored_position(position: int | None) -> int:
    """Provenance rows hold integers: NO_SHARD for a component without shard or slice (APA's aggregator)."""
    return NO_SHARD if position is None else position


def _log(workspace: Workspace, version: ModelVersion, trained: list[str]) -> None:
    """Ledger entries: `component_trained` per newly trained component, then `version_built`."""
    logged = [entries.component_trained(
        version.name, version.version, c.id, c.meta.shard, c.meta.slice, c.parent, c.meta.manifest.root,
        c.manifest_size, c.weights_sha256, version.meta.config_sha256) for c in map(version.component, trained)]
    logged.append(entries.version_trained(
        version.name, version.version, version.meta.method, version.meta.config_sha256,
        version.meta.base["weights_sha256"], version.aggregate,
        [{"id": c.id, "manifest_root": c.meta.manifest.root, "weights_sha256": c.weights_sha256}
         for c in version.components]))
    with open_ledger(workspace) as ledger:
        ledger.append_many(logged)


@dataclass(frozen=True)
class Replay:
    component: str
    expected_sha256: str
    replayed_sha256: str
    manifest_size: int
    missing_records: int  # manifest records no longer in the store (erased): the digest cannot match

    @property
    def equal(self) -> bool:
        return self.expected_sha256 == self.replayed_sha256


def replay_component(workspace: Workspace, version: ModelVersion, component_id: str,
                     progress: Progress | None = None) -> Replay:
    """Retrain a component (and its ancestors) from scratch on the retained records of its
    manifest, with the version's config, and compare the weights' digests."""
    component = version.component(component_id)
    manifest = component.manifest()
    with RecordStore.open(workspace) as store:
        retained: list[StoredRecord] = [r for r in store.records() if manifest.contains(r.commitment)]
        method = methods.get(version.meta.method)
        plan = methods.plan(version.config, method.version_partition(version.meta, store.partition), retained)
    engine = engine_for(version.config, expected_base=version.meta.base)
    with tempfile.TemporaryDirectory() as tmp:
        if component.meta.kind != "adapter":  # computed, not trained (APA's aggregator)
            replayed = method.replay_computed(engine, version, plan.component(component_id), Path(tmp))
        else:
            examples = {e.record_id: e for e in engine.encode(retained)}
            state = engine.initial_state()
            for spec in plan.lineage(component_id):
                state = train_component(engine, spec, state, [examples[r.record_id] for r in spec.records], progress)
            state.save(Path(tmp))
            replayed = file_sha256(Path(tmp) / ADAPTER_FILE)
    return Replay(component_id, component.weights_sha256, replayed, manifest.size, manifest.size - len(retained))
