"""`sisa` (Bourtoule et al., S&P 2021): S shards x R slices, a checkpoint after every slice.

Shard k's stage t trains, from the checkpoint of stage t-1, on slices 0..t of the shard for
2E/(R+1) epochs (as a fraction of passes), so the shard's total compute equals E epochs over
it, like unsliced training. Unlearning a record of slice j resumes from stage j-1's
checkpoint. Predictions: mean P(Yes) over the last stage of every non-empty shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from unlearning.data.partition import Partition, by_shard
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.methods.interface import MeanOfAdapters
from unlearning.training.config import TrainConfig


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    stage_epochs = 2 * config.epochs_fraction / Fraction(config.slices + 1)
    components: list[ComponentSpec] = []
    aggregate: list[str] = []
    train = [r for r in records if r.split == "train"]
    for shard, shard_records in enumerate(by_shard(partition, train, config.shards)):
        slice_of = {r.record_id: partition.slice(r.record_id, config.slices) for r in shard_records}
        parent = None
        for stage in range(config.slices):
            seen = tuple(r for r in shard_records if slice_of[r.record_id] <= stage)
            spec = ComponentSpec(
                id=component_id(shard, stage), shard=shard, slice=stage, parent=parent, records=seen,
                samples=samples_for(stage_epochs, len(seen)),
            )
            components.append(spec)
            parent = spec.id
        if shard_records:
            aggregate.append(parent)
    return Plan(components=components, aggregate=aggregate)


class Sisa(MeanOfAdapters):
    name = "sisa"
    plan = staticmethod(plan)
