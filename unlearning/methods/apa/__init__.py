"""`apa` (Hu et al. 2024), kept exact: one LoRA adapter per shard plus an aggregator component.

Shards: the keyed subject hash (default; a subject lives in one shard) or `public-centroid`
(the k-means cluster of the record's target item in the public catalogue, see
`unlearning.methods.apa.centroids`); never clusters fitted on user records, never capacity balancing.
Each shard's adapter trains from the seeded init for E epochs on the shard.

The aggregator (`unlearning.methods.apa.aggregation`) pools the validation subjects' records with every
adapter's P(Yes) on them; its manifest is that pool. At inference each input gets adapter
weights softmax(-tau * error_k) from its nearest validation neighbours and one forward pass
with the merged adapter. Unlearning retrains the affected adapters from scratch and
recomputes only their stored predictions; erasing a validation subject drops its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import BadInput, VerificationFailed
from ledger.statement import file_sha256
from unlearning.data.partition import Partition, by_shard
from unlearning.data.records import StoredRecord
from unlearning.methods.apa.centroids import ItemCentroidPartition
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.methods.interface import Check, Exclusion, MeanOfAdapters, Scorer
from unlearning.training.config import TrainConfig
from unlearning.versions.layout import AGGREGATOR_FILE

if TYPE_CHECKING:
    from rich.progress import Progress

    from unlearning.training.engine import Engine
    from unlearning.versions.metadata import VersionMeta
    from unlearning.versions.store import Draft, ModelVersion

AGGREGATOR = "aggregator"


def _shards(config: TrainConfig, partition: Partition | ItemCentroidPartition,
            records: Sequence[StoredRecord]) -> list[list[StoredRecord]]:
    if config.partition == "subject":
        return by_shard(partition, records, config.shards)
    if not isinstance(partition, ItemCentroidPartition):
        raise BadInput("a public-centroid plan needs the item centroids (centroids.fit or centroids.version_partition)")
    out: list[list[StoredRecord]] = [[] for _ in range(config.shards)]
    for record in records:
        out[partition.shard_of(record)].append(record)
    return out


def plan(config: TrainConfig, partition: Partition | ItemCentroidPartition, records: Sequence[StoredRecord]) -> Plan:
    train = [r for r in records if r.split == "train"]
    adapters = [
        ComponentSpec(id=component_id(shard, 0), shard=shard, slice=0, parent=None, records=tuple(shard_records),
                      samples=samples_for(config.epochs_fraction, len(shard_records)))
        for shard, shard_records in enumerate(_shards(config, partition, train))
    ]
    pool = ComponentSpec(id=AGGREGATOR, shard=None, slice=None, parent=None,
                         records=tuple(r for r in records if r.split == "valid" and r.answer in ("Yes", "No")),
                         samples=0, kind="aggregator")  # labelled validation samples only: errors need a label
    centroids = {"partition": partition.to_json()} if isinstance(partition, ItemCentroidPartition) else {}
    return Plan(
        components=[*adapters, pool],
        aggregate=[a.id for a in adapters if a.records],
        rule="apa",
        details={"aggregator": AGGREGATOR, "merge": config.merge, "tau": config.tau, "neighbours": config.neighbours},
        **centroids,
    )


class Apa(MeanOfAdapters):
    """Served: one pass with the adapters merged per input by the aggregator's weights. An
    exclusion drops the affected adapters and rewrites the aggregator without their prediction
    columns and without erased validation rows."""

    name = "apa"
    default_slices = 1  # one adapter per shard
    supports_influence = False  # the aggregator stores predictions of exactly its adapters
    plan = staticmethod(plan)

    def partition(self, config: TrainConfig, keyed: Partition, engine: "Engine") -> Partition:
        from unlearning.methods.apa.centroids import fit

        return fit(engine, keyed, config.catalogue, config.shards) if config.partition == "public-centroid" else keyed

    def version_partition(self, meta: "VersionMeta", keyed: Partition) -> Partition:
        from unlearning.methods.apa.centroids import version_partition

        return version_partition(meta, keyed)

    def build_computed(self, engine: "Engine", draft: "Draft", plan: Plan, spec: ComponentSpec,
                       reuse: "ModelVersion | None", environment: dict, progress: "Progress | None") -> bool:
        """The aggregator for the plan's pool and the draft's adapters, keeping the rows and
        prediction columns of `reuse`'s aggregator that are still right."""
        from unlearning.methods.apa.aggregation import Aggregator, build

        adapters = [(cid, draft.component(cid).weights_sha256, draft.component(cid).adapter())
                    for cid in plan.aggregate]
        old = reuse.component(spec.id) if reuse is not None and spec.id in reuse.meta.components else None
        previous = Aggregator.load(old.checked_path(AGGREGATOR_FILE)) if old and old.meta.environment == environment else None
        aggregator = build(engine, spec.records, adapters, previous, progress)
        if old is not None and previous is not None and \
                (previous.commitments, previous.adapters) == (aggregator.commitments, aggregator.adapters):
            draft.reuse_component(old)
            return False
        draft.write_aggregator(spec.id, aggregator, environment)
        return True

    def replay_computed(self, engine: "Engine", version: "ModelVersion", spec: ComponentSpec,
                        directory: Path) -> str:
        """The aggregator recomputed from the version's own adapters."""
        from unlearning.methods.apa.aggregation import build

        adapters = [(cid, version.component(cid).weights_sha256, version.component(cid).adapter())
                    for cid in version.aggregate]
        build(engine, spec.records, adapters).save(directory)
        return file_sha256(directory / AGGREGATOR_FILE)

    def exclude(self, version: "ModelVersion", affected: set[str], erased: set[bytes]) -> Exclusion:
        from unlearning.methods.apa.aggregation import Aggregator

        pool_id = version.meta.aggregation.aggregator
        if pool_id is None:
            raise BadInput(f"model {version.name} v{version.version}: its aggregation names no aggregator")
        aggregator = (Aggregator.load(version.component(pool_id).checked_path(AGGREGATOR_FILE)).without_records(erased)
                      .without_adapters(affected - {pool_id}))
        dropped = super().exclude(version, affected | {pool_id}, erased)  # the pool is rewritten, not kept
        return replace(dropped, rewritten=(pool_id, aggregator))

    def scorer(self, version: "ModelVersion", engine: "Engine") -> Scorer:
        from unlearning.methods.apa.aggregation import Aggregator, merged_p_yes
        from unlearning.training.embeddings import embed

        settings = version.meta.aggregation
        if settings.aggregator is None or settings.tau is None or settings.neighbours is None or settings.merge is None:
            raise BadInput(f"model {version.name} v{version.version}: its aggregation lacks APA's settings")
        tau, neighbours, merge = settings.tau, settings.neighbours, settings.merge
        aggregator = Aggregator.load(version.component(settings.aggregator).checked_path(AGGREGATOR_FILE))
        expected = tuple((cid, version.component(cid).weights_sha256) for cid in version.aggregate)
        if aggregator.adapters != expected:
            raise VerificationFailed(f"model {version.name} v{version.version}: the aggregator's predictions "
                                     "are not those of the version's adapters")
        adapters = [version.component(cid).adapter() for cid in version.aggregate]

        def p_yes(ids: list[list[int]], progress) -> list[float]:  # type: ignore[no-untyped-def]
            weights = aggregator.adapter_weights(embed(engine, ids), tau, neighbours)
            return merged_p_yes(engine, adapters, weights, ids, merge, progress)

        return p_yes

    def checks(self, version: "ModelVersion") -> list[Check]:
        from unlearning.methods.apa.binding import aggregator_binding

        return [("aggregator binding", lambda: aggregator_binding(version))]
