"""Unlearning methods as plans: retrain, SISA, APA and S3T (exact), influence (approximate).

Every method is one module or subpackage; `plan` dispatches on the configured method.
"""

from __future__ import annotations

from collections.abc import Sequence

from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.training.config import TrainConfig


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    """The plan on these records (any splits: adapters train on `train`, APA's aggregator
    pools `valid`, `test` is never used). For APA with a public-centroid partition,
    `partition` is the version's `ItemCentroidPartition`."""
    from unlearning.methods import apa, retrain, s3t, sisa

    ordered = sorted(records, key=lambda r: r.record_id)
    if config.method == "apa":
        return apa.plan(config, partition, ordered)
    module = {"retrain": retrain, "sisa": sisa, "s3t": s3t}[config.method]
    return module.plan(config, partition, [r for r in ordered if r.split == "train"])


__all__ = ["ComponentSpec", "Plan", "component_id", "plan", "samples_for"]
