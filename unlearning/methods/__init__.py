"""Unlearning methods: retrain, SISA, APA and S3T (exact); the influence update (approximate).

Each method is one module or subpackage implementing `Method` (`unlearning.methods.interface`);
adding one means a subpackage and a line in `METHODS`. Nothing else asks which method a
version has: call `get(name)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import BadInput
from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord
from unlearning.methods.apa import Apa
from unlearning.methods.base import ComponentSpec, Plan, component_id, samples_for
from unlearning.methods.interface import Method
from unlearning.methods.retrain import Retrain
from unlearning.methods.s3t import S3T
from unlearning.methods.sisa import Sisa
from unlearning.training.config import TrainConfig

METHODS: dict[str, Method] = {m.name: m for m in (Retrain(), Sisa(), Apa(), S3T())}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise BadInput(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    """The plan on these records (any splits: adapters train on `train`, APA's aggregator
    pools `valid`, `test` is never used). For APA with a public-centroid partition,
    `partition` is the version's `ItemCentroidPartition`."""
    return get(config.method).plan(config, partition, sorted(records, key=lambda r: r.record_id))


__all__ = ["METHODS", "ComponentSpec", "Method", "Plan", "component_id", "get", "plan", "samples_for"]
