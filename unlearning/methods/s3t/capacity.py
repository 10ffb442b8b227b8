"""How many single-record deletions S3T and SISA absorb before retraining (Monte Carlo).

Each deletion hits one of the m x L slices uniformly at random (uniform records, equal
slices) and truncates every order of its shard at that slice's position. A shard is
exhausted when no order has a valid prefix left; we count deletions until the first shard
and until every shard is exhausted. SISA is the one-order case (identity order: a deletion
in slice j leaves the checkpoint before j), so a SISA shard dies when its slice 0 is hit.

Every order dies exactly when its first slice is hit and a shard's B' = min(B, L) cyclic
orders start with distinct slices, so "every shard exhausted" is a coupon collector over
m*B' of the m*L slices: E = m*L*H(m*B') for S3T and m*L*H(m) for SISA.
"""

from __future__ import annotations

import random
from fractions import Fraction

from unlearning.methods.s3t import cyclic_orders


def harmonic(n: int) -> float:
    return float(sum(Fraction(1, k) for k in range(1, n + 1)))


def _deletions_until_exhausted(shards: int, slices: int, orders: list[tuple[int, ...]],
                               rng: random.Random) -> tuple[int, int]:
    """(deletions until the first shard is exhausted, until every shard is) for one run."""
    positions = [{slice_: t for t, slice_ in enumerate(order)} for order in orders]
    prefixes = [[slices] * len(orders) for _ in range(shards)]
    exhausted, first, deletions = 0, 0, 0
    while exhausted < shards:
        deletions += 1
        prefix = prefixes[rng.randrange(shards)]
        slice_ = rng.randrange(slices)
        if not any(prefix):
            continue  # the shard is already waiting for its retrain
        for o, position in enumerate(positions):
            prefix[o] = min(prefix[o], position[slice_])
        if not any(prefix):
            exhausted += 1
            first = first or deletions
    return first, deletions


def simulate(shards: int, slices: int, budget: int, trials: int = 10000, seed: int = 0) -> dict:
    rng = random.Random(seed)
    results = {}
    for method, orders in (("s3t", cyclic_orders(slices, budget)), ("sisa", [tuple(range(slices))])):
        runs = [_deletions_until_exhausted(shards, slices, orders, rng) for _ in range(trials)]
        results[f"{method}_first_retrain_mean"] = sum(first for first, _ in runs) / trials
        results[f"{method}_mean"] = sum(every for _, every in runs) / trials
    distinct_first = min(budget, slices)
    return {
        "shards": shards, "slices": slices, "budget": budget, "trials": trials, "seed": seed,
        **results,
        "s3t_formula": shards * slices * harmonic(shards * distinct_first),
        "sisa_formula": shards * slices * harmonic(shards),
    }
