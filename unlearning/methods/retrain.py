"""`retrain`: one adapter on all training records for E epochs (the exact-unlearning reference)."""

from __future__ import annotations

from collections.abc import Sequence

from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.training.config import TrainConfig


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    only = ComponentSpec(
        id=component_id(0, 0), shard=0, slice=0, parent=None, records=tuple(records),
        samples=samples_for(config.epochs_fraction, len(records)),
    )
    return Plan(components=[only], aggregate=[only.id])
