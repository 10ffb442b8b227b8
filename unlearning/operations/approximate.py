"""The approximate path: an influence-function update of a version's served adapters.

`influence_version` builds, without training, the next version of a model in which every
served adapter that was trained on the old records is moved by δ = (H + λI)⁻¹ b
(`unlearning.methods.influence.solver`) towards the adapter it would be without them (removal) or with their
corrected content (rectification). Its certificate claims only APPROXIMATE, and the exact path
always follows and supersedes it.

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
from dataclasses import dataclass, replace

from ledger import entries
from ledger.errors import BadInput
from ledger.log import open_ledger
from ledger.workspace import Workspace
from unlearning import methods
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.methods.base import ComponentSpec
from unlearning.methods.influence.solver import Solution, SolverSettings, influence_update
from unlearning.operations.receive import Receipt
from unlearning.training.engine import environment
from unlearning.versions.store import Component, ModelStore, ModelVersion

INFLUENCE_UPDATE = "influence_update"
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


@dataclass
class ApproximateVersion:
    version: ModelVersion
    solutions: dict[str, Solution]  # per updated component
    left_out: list[str]  # unserved checkpoints that saw the old records
    approximation: dict  # the certificate's `approximation` block


def influence_version(ws: Workspace, version: ModelVersion, old: Sequence[StoredRecord], new: Sequence[Record],
                      receipts: list[Receipt], settings: SolverSettings) -> ApproximateVersion | None:
    """The approximate version replacing `old` (records as trained, no longer needed in the store)
    by `new` (their corrections, matched by record id; empty for a removal), or None when no
    served adapter was trained on them. Logs the updated components and the version.
    BadInput (and no version) if a solve leaves more than `settings.max_residual`."""
    from unlearning.operations.build import engine_for, stored_prefixes

    check_supported(version)
    old_commitments = {r.commitment for r in old}
    leaves = {c.id: set(c.manifest().leaves) for c in version.components}  # each manifest read once
    saw = {cid for cid, held in leaves.items() if not old_commitments.isdisjoint(held)}
    served = [cid for cid in version.aggregate if cid in saw]
    if not served:
        return None
    engine = engine_for(version.config, expected_base=version.meta.base)
    corrected = {r.record_id: r for r in new}
    solutions, states = {}, {}
    with RecordStore.open(ws) as store:
        retained = store.records("train")
        with stored_prefixes(engine, store, dict(zip((r.commitment for r in retained), engine.encode(retained),
                                                     strict=True))):
            for cid in served:
                component = version.component(cid)
                trained = _training_set(component, leaves[cid], retained, old)
                here = [r for r in old if r.commitment in leaves[cid]]
                lora = component.adapter()
                fixed = [corrected[r.record_id] for r in here if r.record_id in corrected]
                solutions[cid] = influence_update(engine, lora, engine.encode(trained), engine.encode(here),
                                                  engine.encode(fixed), settings)
                states[cid] = (trained, {k: lora[k] + solutions[cid].delta[k] for k in lora})
    worst = max(solutions.values(), key=lambda s: s.relative_residual)
    if worst.relative_residual > settings.max_residual:
        raise BadInput(f"the {settings.solver} solver stopped at relative residual {worst.relative_residual:.2e} "
                       f"(more than {settings.max_residual}) after {settings.steps} steps at damping "
                       f"{worst.damping:.3g}: no approximate version; give --solver-steps {4 * settings.steps} or "
                       f"--damping {10 * worst.damping:.3g}")

    env = environment(engine.config)
    left_out = sorted(saw - set(served))
    with ModelStore(ws).draft(version.name) as draft:
        for component in version.components:
            if component.id in states:
                trained, weights = states[component.id]
                # not a resumable checkpoint: no optimizer moments belong to these weights
                state = replace(component.training_state(), lora=weights, optimizer=None, scheduler=None)
                draft.write_component(_spec(component, trained), state, engine.lora_config, env)
            elif component.id not in left_out:
                draft.reuse_component(component)
        approximate = draft.commit({**version.meta.fields(), "parent_version": version.version, "operation": {
            "kind": INFLUENCE_UPDATE, "requests": [r.request_id for r in receipts], "updated": served,
            "removed": left_out, "solutions": {cid: s.report() for cid, s in solutions.items()}}})
    _log(ws, version, approximate, served, receipts)
    return ApproximateVersion(approximate, solutions, left_out, {
        "method": f"influence function (LLMEraser-style): delta = (C + damping I)^-1 b at the trained adapter, "
                  f"C its {'Gauss-Newton matrix' if settings.curvature == 'ggn' else 'Hessian'}",
        "operation": "rectification" if new else "removal",
        "requests": [{"requestId": r.request_id, "ledgerIndex": r.ledger_index, "commitments": list(r.commitments)}
                     for r in receipts],
        "updated": {cid: {"fromWeightsSha256": version.component(cid).weights_sha256, **s.report()}
                    for cid, s in solutions.items()},
        "leftOut": left_out,
        "doesNotGuarantee": NOT_GUARANTEED,
    })


def _training_set(component: Component, leaves: set[bytes], retained: Sequence[StoredRecord],
                  old: Sequence[StoredRecord]) -> list[StoredRecord]:
    """The component's training records as trained: the retained ones of its manifest plus the
    old ones (held in memory only). The Hessian needs all of them."""
    trained = sorted([r for r in retained if r.commitment in leaves] + [r for r in old if r.commitment in leaves],
                     key=lambda r: r.record_id)
    if len(trained) != component.manifest_size:
        raise BadInput(f"component {component.id}: {component.manifest_size - len(trained)} of its "
                       f"{component.manifest_size} training records are no longer in the record store; "
                       "the Hessian needs them all: run the exact path alone (drop --approximate)")
    return trained


def _spec(component: Component, trained: list[StoredRecord]) -> ComponentSpec:
    """The updated component's spec: same place, same manifest (it was trained on these records)."""
    m = component.meta
    return ComponentSpec(id=m.id, shard=m.shard, slice=m.slice, parent=m.parent, records=tuple(trained),
                         samples=m.samples, group=m.group)


def _log(ws: Workspace, parent: ModelVersion, version: ModelVersion, updated: list[str],
         receipts: list[Receipt]) -> None:
    """`component_trained` entries of kind influence_update (so certificates cite them), then
    `version_built` of that kind."""
    requests = [r.request_id for r in receipts]
    logged = [entries.component_trained(
        version.name, version.version, cid, c.meta.shard, c.meta.slice, c.parent, c.meta.manifest.root,
        c.manifest_size, c.weights_sha256, version.meta.config_sha256, kind=INFLUENCE_UPDATE,
        from_weights_sha256=parent.component(cid).weights_sha256, requests=requests,
    ) for cid, c in ((cid, version.component(cid)) for cid in updated)]
    logged.append(entries.version_approximated(version.name, version.version, INFLUENCE_UPDATE, parent.version, updated,
                                               version.meta.operation.removed, version.aggregate, requests))
    with open_ledger(ws) as ledger:
        ledger.append_many(logged)
