"""S3T through the unlearning operations: exclusion truncates the orders, and a per-shard
restore retrains only the exhausted shard while the others keep serving their valid prefixes."""

from __future__ import annotations

from unlearning.bench.forget import bench_workspace
from unlearning.data.records import RecordStore
from unlearning.methods.s3t.orders import order_state, stage_id
from unlearning.operations.build import train_model
from unlearning.operations.exclude import exclude
from unlearning.operations.receive import receive
from unlearning.operations.restore import restore
from unlearning.training.config import TrainConfig

CONFIG = TrainConfig(method="s3t", base="tiny", shards=2, slices=2, layers_per_group=1, budget=2, epochs=1,
                     lr=1e-2, batch_size=4, seed=0, threads=1)


def test_exclusion_truncates_and_a_per_shard_restore_keeps_the_other_shards_orders(tmp_path, records):
    ws = bench_workspace(tmp_path, "s3t", records(subjects=12, per_subject=3))
    v1 = train_model(ws, "m", CONFIG)
    with RecordStore.open(ws) as store:
        train = store.records("train")
    first_stage = {cid: v1.component(cid).manifest() for cid in (stage_id(0, 0, 0), stage_id(0, 1, 0))}
    # one record from each of shard 0's two slices: both orders of shard 0 are truncated to 0
    victims = [next(r for r in train if m.contains(r.commitment)) for m in first_stage.values()]
    receipts = [receive(ws, f"req-{i}", r.subject_id, [r.record_id]) for i, r in enumerate(victims)]

    excluded = exclude(ws, v1, receipts)
    state = order_state(excluded.meta)
    assert state.shards[0].valid_prefix == (0, 0) and state.exhausted_shards() == [0]
    assert state.shards[1].valid_prefix == (2, 2)
    assert excluded.aggregate == [stage_id(1, 0, 1)]

    restored = restore(ws, excluded, receipts, shards={0})
    assert order_state(restored.meta).to_json() == state.with_shards(order_state(v1.meta), {0}).to_json()
    assert restored.aggregate == [stage_id(0, 0, 1), stage_id(1, 0, 1)]
    shard1 = [c for c in restored.components if c.meta.shard == 1]
    assert {c.id: c.weights_sha256 for c in shard1} == {
        c.id: c.weights_sha256 for c in excluded.components if c.meta.shard == 1}
    erased = {bytes.fromhex(c) for r in receipts for c in r.commitments}
    assert all(erased.isdisjoint(c.manifest().leaves) for c in restored.components)
