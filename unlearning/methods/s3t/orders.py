"""S3T slice orders and their valid prefixes: the state that makes deletions free (design §5).

Per shard, B orders (permutations of the L slices) were trained stage by stage; stage t of
an order trained only layer group t on the order's first t+1 slices. The state records, per
order, how many stages are still valid. A deletion in slice j truncates every order of its
shard at j's position; the served model of a shard is the last valid stage of its order
with the longest valid prefix, which is bit for bit the full model with the later groups
restored to their initial value (`layer_groups.active_weights`). A shard whose orders are
all truncated to 0 is exhausted: it serves nothing until it is retrained.

The state lives in `model.json` under `aggregation.s3t`; this module is data only (no torch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ledger.errors import BadInput

if TYPE_CHECKING:
    from unlearning.versions.metadata import VersionMeta
    from unlearning.versions.store import ModelVersion


def stage_id(shard: int, order: int, stage: int) -> str:
    return f"shard{shard}-order{order}-stage{stage}"


@dataclass(frozen=True)
class ShardOrders:
    shard: int
    orders: tuple[tuple[int, ...], ...]  # slice ids in training order
    valid_prefix: tuple[int, ...]  # per order: how many of its stages never saw an erased record

    def best_order(self) -> int | None:
        """The order with the longest valid prefix (the lowest index on ties); None if exhausted."""
        longest = max(self.valid_prefix)
        return self.valid_prefix.index(longest) if longest else None

    def active_component(self) -> str | None:
        best = self.best_order()
        return None if best is None else stage_id(self.shard, best, self.valid_prefix[best] - 1)

    def to_json(self) -> dict:
        return {"shard": self.shard, "orders": [{"order": list(o), "valid_prefix": p}
                                                for o, p in zip(self.orders, self.valid_prefix, strict=True)]}

    @classmethod
    def from_json(cls, data: dict) -> "ShardOrders":
        return cls(data["shard"], tuple(tuple(o["order"]) for o in data["orders"]),
                   tuple(o["valid_prefix"] for o in data["orders"]))


@dataclass(frozen=True)
class OrderState:
    slices: int
    shards: tuple[ShardOrders, ...]  # shards with training records, ascending

    @classmethod
    def full(cls, slices: int, shards: Iterable[int], orders: list[tuple[int, ...]]) -> "OrderState":
        """Freshly trained: every order of every shard valid to its end."""
        return cls(slices, tuple(ShardOrders(s, tuple(orders), (slices,) * len(orders)) for s in shards))

    def active_components(self) -> list[str]:
        """The served stage of every shard that is not exhausted (mean P(Yes) over them)."""
        return [c for s in self.shards if (c := s.active_component()) is not None]

    def retained_components(self) -> list[str]:
        """Every stage inside a valid prefix: what a version with this state may keep."""
        return [stage_id(s.shard, o, t) for s in self.shards
                for o, prefix in enumerate(s.valid_prefix) for t in range(prefix)]

    def exhausted_shards(self) -> list[int]:
        """Shards with no valid stage left: they must be retrained."""
        return [s.shard for s in self.shards if s.best_order() is None]

    def with_shards(self, other: "OrderState", shards: Iterable[int]) -> "OrderState":
        """This state with these shards' orders taken from `other` (after a per-shard retrain)."""
        shards = set(shards)
        merged = {s.shard: s for s in self.shards if s.shard not in shards}
        merged |= {s.shard: s for s in other.shards if s.shard in shards}
        return replace(self, shards=tuple(merged[k] for k in sorted(merged)))

    def to_json(self) -> dict:
        return {"slices": self.slices, "shards": [s.to_json() for s in self.shards]}

    @classmethod
    def from_json(cls, data: dict) -> "OrderState":
        return cls(data["slices"], tuple(ShardOrders.from_json(s) for s in data["shards"]))


def order_state(meta: "VersionMeta") -> OrderState:
    """The order state of a model version's `model.json`."""
    if meta.aggregation.s3t is None:
        raise BadInput(f"{meta.name} v{meta.version} is not an S3T version (no order state)")
    return OrderState.from_json(meta.aggregation.s3t)


def truncate(version: "ModelVersion", erased: Iterable[bytes]) -> OrderState:
    """The state after erasing these commitments: each order ends before its first stage
    whose manifest holds one of them (stage t's manifest is slices 1..t of the order, so
    that is the position of the erased record's slice). No training, no record store."""
    erased = list(erased)
    state = order_state(version.meta)
    shards = []
    for shard in state.shards:
        prefixes = []
        for o, prefix in enumerate(shard.valid_prefix):
            manifests = (version.component(stage_id(shard.shard, o, t)).manifest() for t in range(prefix))
            hit = next((t for t, m in enumerate(manifests) if any(m.contains(c) for c in erased)), prefix)
            prefixes.append(hit)
        shards.append(replace(shard, valid_prefix=tuple(prefixes)))
    return replace(state, shards=tuple(shards))


def excluded_aggregation(version: "ModelVersion", erased: Iterable[bytes]) -> dict:
    """`model.json`'s aggregation after an exact exclusion of these commitments: the truncated
    order state and, per shard, the stage now served (keep `state.retained_components()`)."""
    state = truncate(version, erased)
    aggregation = version.meta.aggregation.model_dump(exclude_unset=True)
    return {**aggregation, "components": state.active_components(), "s3t": state.to_json()}
