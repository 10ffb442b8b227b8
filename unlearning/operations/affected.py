"""Which components of a version saw the records that logged requests erase."""

from __future__ import annotations

from unlearning.operations.receive import Receipt
from unlearning.versions.store import ModelVersion


def erased_by(receipts: list[Receipt]) -> set[bytes]:
    return {bytes.fromhex(c) for r in receipts for c in r.commitments}


def affected_components(version: ModelVersion, receipts: list[Receipt]) -> set[str]:
    erased = erased_by(receipts)
    return {c.id for c in version.components if not erased.isdisjoint(c.manifest().leaves)}  # each read once
