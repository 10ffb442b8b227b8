"""The approximate path: an influence-function update of a version's served adapters.

An update moves every served adapter that was trained on the old records by δ = (H + λI)⁻¹ b
(`unlearning.methods.influence.solver`) towards the adapter it would be without them (removal)
or with their corrected content (rectification), without training. Its certificate claims only
APPROXIMATE, and the exact path always follows and supersedes it.

It is made off the exact path, in three steps, so that it never delays the exclusion or the
retrain of the same request:
- `hold`: the adapters and manifests of the exact version V that held the records (the model's
  newest exact version when the request was planned) are read into memory up front, before the
  request's exclusion purges V (and so that a purge meanwhile cannot pull files away mid-solve);
- `solve`: the solutions, from memory and the record store, under no lock;
- `build`: under the model's lock, once `moved_on` has found that the model has not moved on
  (the request not yet restored, no retrain since V, the updated adapters' other training
  records all still in the store), the version is written onto the newest exact version N:
  N's components, plus the updated adapters (for shards N no longer serves, its exclusion having
  dropped them) or in their place (N still serves them, e.g. a retrain model whose exclusion is
  deferred). Its parent, in `model.json` and in the certificate, is N.
`influence_version` composes the three without the moved-on check (the benchmarks).

What the version is, honestly:
- each updated component keeps the manifest it was trained on: the old records shaped its
  weights and were used to compute b, so no non-membership is claimed for them (the request
  is named in the certificate's `approximation`, not in its erasures); the version is
  purged like every other version that saw the records once the exact path has run;
- served components that never saw the records are kept as they are; unserved checkpoints
  that saw them (SISA's earlier slices) are left out, so nothing can resume from them;
- the version is never the base of later work (`latest_exact` skips it).

Only the mean-P(Yes) methods over independent adapters (retrain, SISA) are supported: APA's
aggregator stores predictions of exactly its adapters, and S3T's stages train layer groups in
sequence, so an update of one adapter in isolation does not fit either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ledger import entries
from ledger.errors import BadInput
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning import methods
from unlearning.data.partition import training_order
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.methods.base import ComponentSpec
from unlearning.methods.influence.quality import HELD_OUT, measure
from unlearning.methods.influence.solver import (
    CURVATURE_NAMES, Solution, SolverSettings, examples_read, influence_update,
)
from unlearning.operations.receive import Receipt
from unlearning.training.engine import environment
from unlearning.versions.store import Component, ModelStore, ModelVersion

if TYPE_CHECKING:
    from unlearning.training.checkpoint import TrainingState

INFLUENCE_UPDATE = "influence_update"
MEASURED = (
    f"per updated adapter, under the adapter as trained (Original) and as updated (Updated): the old records' mean "
    f"P(Yes); the AUC of P(Yes) on up to {HELD_OUT} held-out records (test split, else validation; drawn by the "
    "solver's seed); and the loss-based membership-inference AUC of the old records against those held-out records "
    "(0.5: the old records look unseen). The gap to the exact retrain cannot be measured here (it is made after the "
    "old records are shredded): erasure bench unlearning measures it."
)
NOT_GUARANTEED = (
    "The weights are not shown to be free of the old records' influence: they are an adapter trained on "
    "those records, moved by a first-order influence-function estimate (damped Hessian of a non-convex "
    "loss, solved to the residual stated) of the adapter without them or with their corrected content. "
    "The components' manifests still list the old records. An exact version follows and supersedes this one."
)


def check_supported(version: ModelVersion) -> None:
    """BadInput unless the approximate path can update this version (before any effect)."""
    method = version.meta.method
    if not methods.get(method).supports_influence:
        supported = " and ".join(m.name for m in methods.METHODS.values() if m.supports_influence)
        raise BadInput(f"approximate updates support {supported} models; "
                       f"{version.name} is {method}: run the exact path alone (drop --approximate)")


def is_approximate(version: ModelVersion) -> bool:
    return version.meta.operation is not None and version.meta.operation.kind == INFLUENCE_UPDATE


def latest_exact(ws: Workspace, name: str) -> ModelVersion:
    """The newest local version that is not an approximate update (the base of all later work)."""
    models = ModelStore(ws)
    for number in reversed(models.versions(name)):
        version = models.get(name, number)
        if not is_approximate(version):
            return version
    return models.get(name)  # BadInput: no model of that name (or only approximate versions)


@dataclass(frozen=True)
class Adapter:
    """A served component of V that trained on the old records, read into memory."""

    component: Component  # its metadata read (cached): the files may be purged afterwards
    leaves: frozenset[bytes]  # its manifest
    state: "TrainingState"  # as trained, without optimizer state


@dataclass(frozen=True)
class Held:
    """What a solve and its version need of V, the exact version that held the old records."""

    version: ModelVersion  # V, its metadata read (cached)
    served: dict[str, str]  # V's served components -> their weights sha256
    adapters: dict[str, Adapter]  # the served components that trained on the old records


@dataclass
class Solved:
    """The solutions for the held adapters, in memory until `build` writes them."""

    held: Held
    old: list[StoredRecord]
    new: list[Record]
    receipts: list[Receipt]
    settings: SolverSettings
    solutions: dict[str, Solution]  # per updated component
    trained: dict[str, list[StoredRecord]]  # per updated component: its training set as trained
    weights: dict[str, dict]  # per updated component: the moved adapter
    lora_config: Any
    environment: dict = field(default_factory=dict)
    measured: dict[str, dict] = field(default_factory=dict)  # per updated component: `quality.measure`


@dataclass
class ApproximateVersion:
    version: ModelVersion
    solutions: dict[str, Solution]  # per updated component
    left_out: list[str]  # unserved checkpoints that saw the old records
    approximation: dict  # the certificate's `approximation` block


def influence_version(ws: Workspace, version: ModelVersion, old: Sequence[StoredRecord], new: Sequence[Record],
                      receipts: list[Receipt], settings: SolverSettings) -> ApproximateVersion | None:
    """The approximate version of `version` replacing `old` (records as trained, no longer needed
    in the store) by `new` (their corrections, matched by record id; empty for a removal), built
    onto `version` itself, or None when no served adapter was trained on them. Logs the updated
    components and the version. BadInput (and no version) if a solve leaves more than
    `settings.max_residual`. No lock and no moved-on check: the pipeline's way is `hold`,
    `solve`, then `moved_on` and `build` under the model's lock (`operations.steps.approximate`)."""
    held = hold(version, old)
    if held is None:
        return None
    return build(ws, solve(ws, held, old, new, receipts, settings), version)


def hold(version: ModelVersion, old: Sequence[StoredRecord]) -> Held | None:
    """Read into memory what the update of `version` needs (its served adapters that trained on
    `old`, with their manifests), or None when none did. Fast (no solve); BadInput for methods
    the approximate path does not support."""
    check_supported(version)
    old_commitments = {r.commitment for r in old}
    leaves = {c.id: frozenset(c.manifest().leaves) for c in version.components}  # each manifest read once
    served = [cid for cid in version.aggregate if not old_commitments.isdisjoint(leaves[cid])]
    if not served:
        return None
    adapters = {}
    for cid in served:
        component = version.component(cid)
        _ = component.meta  # cached now
        adapters[cid] = Adapter(component, leaves[cid],
                                replace(component.training_state(), optimizer=None, scheduler=None))
    return Held(version, {cid: version.component(cid).weights_sha256 for cid in version.aggregate}, adapters)


def solve(ws: Workspace, held: Held, old: Sequence[StoredRecord], new: Sequence[Record], receipts: list[Receipt],
          settings: SolverSettings) -> Solved:
    """The influence update of every held adapter (no lock: from memory and the record store).
    BadInput if a solve leaves more than `settings.max_residual`, or if an adapter's other
    training records are no longer all in the store."""
    from unlearning.operations.build import engine_for, stored_prefixes

    version = held.version
    engine = engine_for(version.config, expected_base=version.meta.base)
    corrected = {r.record_id: r for r in new}
    solutions, trained_sets, weights, measured = {}, {}, {}, {}
    with RecordStore.open(ws) as store:
        retained = store.records("train")
        held_out = _held_out(store, settings.seed)
        inputs = {}
        for cid, adapter in held.adapters.items():
            trained = _training_set(adapter, retained, old)
            if len(trained) != adapter.component.manifest_size:
                raise BadInput(f"{_missing(adapter, trained)}; the curvature needs them all: run the exact path "
                               "alone (drop --approximate)")
            inputs[cid] = (trained, engine.encode(trained))
        # the stored prefix states of what the solves read (the curvature sample, or all for Adam)
        # and of the held-out records; any other state is computed when asked for
        read = {e.record_id: e for _, examples in inputs.values() for e in examples_read(examples, settings)}
        prefixes = {r.commitment: read[r.record_id] for r in retained if r.record_id in read}
        prefixes.update(zip((r.commitment for r in held_out), engine.encode(held_out), strict=True))
        with stored_prefixes(engine, store, prefixes):
            for cid, adapter in held.adapters.items():
                trained, examples = inputs[cid]
                here = [r for r in old if r.commitment in adapter.leaves]
                lora = adapter.state.lora
                fixed = [corrected[r.record_id] for r in here if r.record_id in corrected]
                solutions[cid] = influence_update(engine, lora, examples, engine.encode(here),
                                                  engine.encode(fixed), settings)
                trained_sets[cid] = trained
                weights[cid] = {k: lora[k] + solutions[cid].delta[k] for k in lora}
                measured[cid] = measure(engine, lora, weights[cid], here, held_out)
    worst = max(solutions.values(), key=lambda s: s.relative_residual)
    if worst.relative_residual > settings.max_residual:
        raise BadInput(f"the {settings.solver} solver stopped at relative residual {worst.relative_residual:.2e} "
                       f"(more than {settings.max_residual}) after {settings.steps} steps at damping "
                       f"{worst.damping:.3g}: no approximate version; give --solver-steps {4 * settings.steps} or "
                       f"--damping {10 * worst.damping:.3g}")
    return Solved(held, list(old), list(new), receipts, settings, solutions, trained_sets, weights,
                  engine.lora_config, environment(engine.config), measured)


def moved_on(ws: Workspace, update: Solved, newest: ModelVersion) -> str | None:
    """Why the update must not be published onto `newest` (the model's newest exact version,
    read under the model's lock), or None: a request already restored (the exact version came
    first), a served component V did not serve (a retrain since V), or an updated adapter's
    other training records no longer all in the store (another erasure in the same adapter,
    whose records the update would serve again)."""
    name, base = newest.name, update.held.version.version
    with open_ledger(ws) as ledger:
        for receipt in update.receipts:
            shards = entries.planned_shards(ledger, receipt.request_id).get(name, [])
            if any(ledger.find(entries.restored_key(receipt.request_id, name, s)) is not None for s in shards):
                return f"the exact version came first: {receipt.request_id} is restored on {name}"
    new = [cid for cid in newest.aggregate if update.held.served.get(cid) != newest.component(cid).weights_sha256]
    if new:
        return (f"the model moved on: v{newest.version} serves {', '.join(new)} as v{base}, "
                "whose adapters the update moved, did not")
    with RecordStore.open(ws) as store:
        retained = store.records("train")
    for adapter in update.held.adapters.values():
        trained = _training_set(adapter, retained, update.old)
        if len(trained) != adapter.component.manifest_size:
            return (f"the model moved on: {_missing(adapter, trained)} (erased since v{base}): the update "
                    "would serve them again")
    return None


def build(ws: Workspace, update: Solved, onto: ModelVersion) -> ApproximateVersion:
    """Write, log and return the approximate version: `onto`'s components (its unserved
    checkpoints that saw the old records left out) with the updated adapters added or in
    place of their originals; its parent is `onto`. Call under the model's lock, after
    `moved_on` (or onto V itself)."""
    held = update.held
    held_version = held.version  # V
    old_commitments = {r.commitment for r in update.old}
    updated = [cid for cid in held.adapters if cid in update.weights]
    left_out = sorted(c.id for c in onto.components
                      if c.id not in update.weights and not old_commitments.isdisjoint(c.manifest().leaves))
    rank = {cid: i for i, cid in enumerate(held_version.meta.components)}
    order = sorted({c.id for c in onto.components} | set(updated), key=lambda cid: (rank.get(cid, len(rank)), cid))
    aggregate = ([cid for cid in held_version.aggregate if cid in onto.aggregate or cid in update.weights]
                 + [cid for cid in onto.aggregate if cid not in held_version.aggregate])
    fields = onto.meta.fields()
    fields["aggregation"] = {**fields["aggregation"], "components": aggregate}
    with ModelStore(ws).draft(onto.name) as draft:
        for cid in order:
            if cid in update.weights:
                adapter = held.adapters[cid]
                # not a resumable checkpoint: no optimizer moments belong to these weights
                state = replace(adapter.state, lora=update.weights[cid])
                draft.write_component(_spec(adapter.component, update.trained[cid]), state, update.lora_config,
                                      update.environment)
            elif cid not in left_out:
                draft.reuse_component(onto.component(cid))
        approximate = draft.commit({**fields, "parent_version": onto.version, "operation": {
            "kind": INFLUENCE_UPDATE, "requests": [r.request_id for r in update.receipts], "updated": updated,
            "removed": left_out, "solutions": {cid: s.report() for cid, s in update.solutions.items()}}})
    _log(ws, onto, approximate, updated, update.receipts, held.served)
    solutions, settings, receipts = update.solutions, update.settings, update.receipts
    return ApproximateVersion(approximate, solutions, left_out, {
        "method": f"influence function (LLMEraser-style): delta = (C + damping I)^-1 b at the trained adapter, "
                  f"C its {CURVATURE_NAMES[settings.curvature]} ({settings.solver} solver)",
        "operation": "rectification" if update.new else "removal",
        "requests": [{"requestId": r.request_id, "ledgerIndex": r.ledger_index, "commitments": list(r.commitments)}
                     for r in receipts],
        "updated": {cid: {"fromWeightsSha256": held.served[cid], **s.report(), "measured": update.measured.get(cid)}
                    for cid, s in solutions.items()},
        "measuredDefinition": MEASURED,
        "leftOut": left_out,
        "doesNotGuarantee": NOT_GUARANTEED,
    })


def _held_out(store: RecordStore, seed: int) -> list[StoredRecord]:
    """Up to HELD_OUT records no model trained on (test split, else validation), drawn by the seed."""
    for split in ("test", "valid"):
        records = [r for r in store.records(split) if r.answer in ("Yes", "No")]
        if records:
            return training_order(seed, "approximate/held-out", records)[:HELD_OUT]
    return []


def _training_set(adapter: Adapter, retained: Sequence[StoredRecord],
                  old: Sequence[StoredRecord]) -> list[StoredRecord]:
    """The adapter's training records as trained: the retained ones of its manifest plus the
    old ones (held in memory only). The curvature needs all of them: fewer than the manifest's
    size means some were erased (`_missing`)."""
    return sorted([r for r in retained if r.commitment in adapter.leaves]
                  + [r for r in old if r.commitment in adapter.leaves], key=lambda r: r.record_id)


def _missing(adapter: Adapter, trained: list[StoredRecord]) -> str:
    size = adapter.component.manifest_size
    return (f"component {adapter.component.id}: {size - len(trained)} of its {size} training records are no "
            "longer in the record store")


def _spec(component: Component, trained: list[StoredRecord]) -> ComponentSpec:
    """The updated component's spec: same place, same manifest (it was trained on these records)."""
    m = component.meta
    return ComponentSpec(id=m.id, shard=m.shard, slice=m.slice, parent=m.parent, records=tuple(trained),
                         samples=m.samples, group=m.group)


def _log(ws: Workspace, parent: ModelVersion, version: ModelVersion, updated: list[str],
         receipts: list[Receipt], moved_from: dict[str, str]) -> None:
    """`component_trained` entries of kind influence_update (so certificates cite them), then
    `version_built` of that kind."""
    requests = [r.request_id for r in receipts]
    logged = [entries.component_trained(
        version.name, version.version, cid, c.meta.shard, c.meta.slice, c.parent, c.meta.manifest.root,
        c.manifest_size, c.weights_sha256, version.meta.config_sha256, kind=INFLUENCE_UPDATE,
        from_weights_sha256=moved_from[cid], requests=requests,
    ) for cid, c in ((cid, version.component(cid)) for cid in updated)]
    logged.append(entries.version_approximated(version.name, version.version, INFLUENCE_UPDATE, parent.version, updated,
                                               version.meta.operation.removed, version.aggregate, requests))
    with open_ledger(ws) as ledger:
        ledger.append_many(logged)
