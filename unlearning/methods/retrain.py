"""`retrain`: one adapter on all training records for E epochs (the exact-unlearning reference)."""

from __future__ import annotations

from collections.abc import Sequence

from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.methods.interface import MeanOfAdapters
from unlearning.training.config import TrainConfig


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    train = tuple(r for r in records if r.split == "train")
    only = ComponentSpec(
        id=component_id(0, 0), shard=0, slice=0, parent=None, records=train,
        samples=samples_for(config.epochs_fraction, len(train)),
    )
    return Plan(components=[only], aggregate=[only.id])


class Retrain(MeanOfAdapters):
    name = "retrain"
    default_shards = default_slices = 1  # one adapter on everything
    plan = staticmethod(plan)
