"""Partitioning is per record: adding or removing other records never moves a record."""

from __future__ import annotations

import hashlib
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from unlearning import methods
from unlearning.data.partition import Partition, training_order
from unlearning.data.records import StoredRecord
from unlearning.training.config import TrainConfig

PARTITION = Partition(b"k" * 32)
SISA = TrainConfig(method="sisa", base="tiny", shards=3, slices=4, epochs=2)


def stored(record_id: str, subject_id: str) -> StoredRecord:
    return StoredRecord(record_id, subject_id, "p", "Yes", "train", hashlib.sha256(record_id.encode()).digest())


def placement(plan: methods.Plan) -> dict[str, tuple[int, int]]:
    """record id -> (shard, slice) of the first component that trains on it."""
    out: dict[str, tuple[int, int]] = {}
    for spec in plan.components:
        for r in spec.records:
            out.setdefault(r.record_id, (spec.shard, spec.slice))
    return out


ids = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10**6)), unique=True, max_size=40)


@settings(max_examples=60, deadline=None)
@given(base=ids, others=ids)
def test_adding_or_removing_records_never_moves_a_record(base, others):
    mine = [stored(f"r{u}-{k}", f"u{u}") for u, k in base]
    theirs = [stored(f"r{u}-{k}", f"u{u}") for u, k in others if (u, k) not in set(base)]
    alone = placement(methods.plan(SISA, PARTITION, mine))
    together = placement(methods.plan(SISA, PARTITION, mine + theirs))
    assert {r.record_id: together[r.record_id] for r in mine} == alone
    # A pass's data order restricted to my records is my records' own order.
    order = training_order(7, "shard0-slice0/pass0", mine + theirs)
    assert [r for r in order if r in set(mine)] == training_order(7, "shard0-slice0/pass0", mine)


def test_a_subject_lives_in_exactly_one_shard():
    records = [stored(f"r{u}-{k}", f"u{u}") for u in range(50) for k in range(6)]
    plan = methods.plan(SISA, PARTITION, records)
    shards_of: dict[str, set[int]] = {}
    for spec in plan.components:
        for r in spec.records:
            shards_of.setdefault(r.subject_id, set()).add(spec.shard)
    assert len(shards_of) == 50 and all(len(s) == 1 for s in shards_of.values())
    assert len({s for v in shards_of.values() for s in v}) == 3


def test_keys_change_assignments_and_splits_hold_out_about_a_fifth():
    subjects = [f"user{i}" for i in range(2000)]
    splits = [PARTITION.split(s) for s in subjects]
    assert 0.07 < splits.count("test") / 2000 < 0.13 and 0.07 < splits.count("valid") / 2000 < 0.13
    other = Partition(b"j" * 32)
    assert [other.shard(s, 4) for s in subjects] != [PARTITION.shard(s, 4) for s in subjects]


def test_sisa_plan_structure_and_compute_budget():
    records = [stored(f"r{u}-{k}", f"u{u}") for u in range(120) for k in range(10)]
    plan = methods.plan(SISA, PARTITION, records)
    assert [c.id for c in plan.components[:4]] == [f"shard0-slice{t}" for t in range(4)]
    assert plan.aggregate == ["shard0-slice3", "shard1-slice3", "shard2-slice3"]
    for spec in plan.components:
        if spec.slice:
            parent = plan.component(spec.parent)
            assert set(parent.records) < set(spec.records)  # cumulative slices
    for shard in range(3):
        stages = [c for c in plan.components if c.shard == shard]
        n = len(stages[-1].records)
        # Each stage runs 2E/(R+1) epochs over slices 0..t: in total about E epochs over the shard.
        assert all(c.samples == int(Fraction(4, 5) * len(c.records) + Fraction(1, 2)) for c in stages)
        assert abs(sum(c.samples for c in stages) - 2 * n) <= 0.15 * 2 * n


def test_retrain_is_one_component_with_e_epochs():
    records = [stored(f"r{i}", f"u{i % 7}") for i in range(30)]
    plan = methods.plan(TrainConfig(base="tiny", epochs=1.5), PARTITION, records)
    (only,) = plan.components
    assert only.samples == 45 and len(only.records) == 30 and plan.aggregate == [only.id]
