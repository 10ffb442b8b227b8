"""Per-record, data-independent partitioning (design §1, §4).

Every assignment is a keyed hash of the record's own identifiers, never a function of
other records, so adding or removing records never moves anyone else:

- split: held-out subjects for validation and test, by `HMAC(key, "split" || subject_id)`;
- shard: `HMAC(key, "shard" || subject_id) mod S`, so a subject lives in exactly one shard;
- slice: the record's position in the shard's slice order, `HMAC(key, "slice" || record_id)`
  read as a number in [0, 1), cut at the fixed points j/R (not at ranks, which would
  depend on the other records);
- training order: `HMAC(seed, label || record_id)`, a function of the seed and the record.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from ledger.workspace import Workspace
from unlearning.data.secrets import workspace_secret

SPLITS = ("train", "valid", "test")
VALID_PERCENT = 10
TEST_PERCENT = 10
_HASH_RANGE = 1 << 64


def _keyed_u64(key: bytes, domain: str, value: str) -> int:
    digest = hmac.new(key, f"{domain}\x00{value}".encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


class Partition:
    """Split, shard and slice assignment under one secret key."""

    def __init__(self, key: bytes):
        self._key = key

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> "Partition":
        return cls(workspace_secret(workspace, "partition"))

    def split(self, subject_id: str) -> str:
        percent = _keyed_u64(self._key, "split", subject_id) * 100 // _HASH_RANGE
        if percent < TEST_PERCENT:
            return "test"
        if percent < TEST_PERCENT + VALID_PERCENT:
            return "valid"
        return "train"

    def shard(self, subject_id: str, shards: int) -> int:
        return _keyed_u64(self._key, "shard", subject_id) % shards

    def slice(self, record_id: str, slices: int) -> int:
        return _keyed_u64(self._key, "slice", record_id) * slices // _HASH_RANGE


class Identified(Protocol):
    record_id: str
    subject_id: str


R = TypeVar("R", bound=Identified)


def training_order(seed: int, label: str, records: Iterable[R]) -> list[R]:
    """Records sorted by `HMAC(seed, label || record_id)`: one pass of a component's data order."""
    key = f"erasure/order/v1/{seed}".encode("utf-8")
    return sorted(records, key=lambda r: (_keyed_u64(key, label, r.record_id), r.record_id))


def by_shard(partition: Partition, records: Sequence[R], shards: int) -> list[list[R]]:
    """The records of each shard, in input order."""
    out: list[list[R]] = [[] for _ in range(shards)]
    for record in records:
        out[partition.shard(record.subject_id, shards)].append(record)
    return out
