"""`s3t` (Chowdhury et al., ICLR 2025): per shard, B slice orders trained stage by stage.

A shard's records fall into L slices (the keyed slice hash, as in SISA). For each of the
shard's B orders, stage t (0-based) starts from stage t-1 and trains only LoRA layer group t
(groups of `layers_per_group` layers, counted from the top) for E epochs on the order's first
t+1 slices; every other parameter, the LM head included, stays frozen. So the groups after
position t are still at their initial value in stage t, and deleting a record truncates the
orders instead of retraining (`unlearning.methods.s3t.orders`).

Orders: cyclic rotations of the slices (every slice first in at most one order, the uniform
deletion prior), continued by rotating suffixes when B > L; or, under a non-uniform deletion
prior, bipartite-matching selection (a Latin square that pushes likely-deleted slices back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from unlearning.data.partition import Partition, by_shard
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan, samples_for
from unlearning.methods.interface import Exclusion, MeanOfAdapters
from unlearning.methods.s3t.orders import OrderState, excluded_aggregation, order_state, stage_id
from unlearning.training.config import TrainConfig

if TYPE_CHECKING:
    from unlearning.versions.store import ModelVersion

BMS_SHARPNESS = 100  # T in the selection score: how hard early deletion probability is penalised


def cyclic_orders(slices: int, budget: int) -> list[tuple[int, ...]]:
    """The L right-rotations of (0..L-1), then, fixing one more leading position at a time,
    the rotations of every order's remaining suffix (each permutation once, L! in all)."""
    base = tuple(range(slices))
    orders = [base[slices - k:] + base[:slices - k] for k in range(slices)]
    for depth in range(1, slices - 1):
        for order in list(orders):
            head, tail = order[:depth], order[depth:]
            orders += [head + tail[-k:] + tail[:-k] for k in range(1, len(tail))]
            if len(orders) >= budget:
                return orders[:budget]
    return orders[:budget]


def _survival_score(order: Sequence[int], prior: Sequence[float]) -> float:
    """sum_n n * (1 - c_n)^T, c_n = deletion probability of the order's first n slices."""
    score, cumulative = 0.0, 0.0
    for n, slice_ in enumerate(order, start=1):
        cumulative += prior[slice_]
        score += n * max(0.0, 1.0 - cumulative) ** BMS_SHARPNESS
    return score


def bms_orders(prior: Sequence[float], budget: int) -> list[tuple[int, ...]]:
    """Bipartite-matching selection: start from the L one-slice orders and extend all of them
    by one slice per round with a maximum-score assignment (each slice once per position),
    then keep the `budget` orders with the best survival score."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    slices = len(prior)
    orders = [[j] for j in range(slices)]
    for _ in range(slices - 1):
        score = np.full((slices, slices), -1e18)  # a slice already in an order cannot come again
        for i, order in enumerate(orders):
            for j in set(range(slices)) - set(order):
                score[i, j] = _survival_score(order + [j], prior)
        for i, j in zip(*linear_sum_assignment(score, maximize=True), strict=True):
            orders[i].append(int(j))
    ranked = sorted(range(slices), key=lambda i: (-_survival_score(orders[i], prior), i))
    return [tuple(orders[i]) for i in ranked[:budget]]


def selected_orders(config: TrainConfig) -> list[tuple[int, ...]]:
    if config.order_selection == "bms":
        return bms_orders(config.deletion_prior, config.budget)
    return cyclic_orders(config.slices, config.budget)


def plan(config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
    orders = selected_orders(config)
    components: list[ComponentSpec] = []
    trained_shards = []
    train = [r for r in records if r.split == "train"]
    for shard, shard_records in enumerate(by_shard(partition, train, config.shards)):
        if not shard_records:
            continue
        trained_shards.append(shard)
        slice_of = {r.record_id: partition.slice(r.record_id, config.slices) for r in shard_records}
        for index, order in enumerate(orders):
            position = {slice_: t for t, slice_ in enumerate(order)}
            parent = None
            for stage, slice_ in enumerate(order):
                seen = tuple(r for r in shard_records if position[slice_of[r.record_id]] <= stage)
                spec = ComponentSpec(
                    id=stage_id(shard, index, stage), shard=shard, slice=slice_, parent=parent, records=seen,
                    samples=samples_for(config.epochs_fraction, len(seen)), group=stage,
                )
                components.append(spec)
                parent = spec.id
    state = OrderState.full(config.slices, trained_shards, orders)
    return Plan(components=components, aggregate=state.active_components(), details={"s3t": state.to_json()})


class S3T(MeanOfAdapters):
    """Served: the longest valid prefix of each shard's orders. An exclusion truncates the orders
    at the affected stage (no training); a shard is retrained only once no order is left."""

    name = "s3t"
    supports_influence = False  # stages train layer groups in sequence: one cannot be moved alone
    plan = staticmethod(plan)

    def default_fields(self, slices: int) -> dict:
        return {"budget": slices}  # one order per slice: each slice first in one order

    def exclude(self, version: "ModelVersion", affected: set[str], erased: set[bytes]) -> Exclusion:
        aggregation = excluded_aggregation(version, erased)
        retained = set(OrderState.from_json(aggregation["s3t"]).retained_components())
        return Exclusion([c.id for c in version.components if c.id in retained], aggregation)

    def restrict(self, clean: "ModelVersion", plan: Plan, shards: set[int]) -> Plan:
        """The other shards keep serving their truncated orders."""
        state = order_state(clean.meta).with_shards(OrderState.from_json(plan.details["s3t"]), shards)
        return replace(plan, aggregate=state.active_components(), details={"s3t": state.to_json()})

    def describe(self, version: "ModelVersion") -> dict:
        """Per shard: its slice orders and their valid prefix lengths."""
        return {"s3t_orders": version.meta.aggregation.s3t["shards"]}
