"""S3T deletion capacity: the simulation against the coupon-collector formulas, and the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app
from unlearning.methods.s3t import bms_orders, cyclic_orders
from unlearning.methods.s3t.capacity import harmonic, simulate


def test_simulated_capacity_is_within_5_percent_of_the_formulas():
    result = simulate(shards=4, slices=4, budget=4, trials=4000, seed=1)
    assert abs(result["s3t_formula"] - 4 * 4 * harmonic(16)) < 1e-9
    assert abs(result["s3t_mean"] - result["s3t_formula"]) <= 0.05 * result["s3t_formula"]
    assert abs(result["sisa_mean"] - result["sisa_formula"]) <= 0.05 * result["sisa_formula"]
    # B = L orders absorb about 1.6x the deletions of SISA slicing, and survive the first retrain much longer.
    assert result["s3t_mean"] > 1.5 * result["sisa_mean"]
    assert result["s3t_first_retrain_mean"] > 3 * result["sisa_first_retrain_mean"]


def test_one_order_is_sisa():
    result = simulate(shards=3, slices=4, budget=1, trials=2000, seed=2)
    assert result["s3t_formula"] == result["sisa_formula"]
    assert abs(result["s3t_mean"] - result["sisa_formula"]) <= 0.05 * result["sisa_formula"]


def test_cyclic_orders_put_distinct_slices_first_and_enumerate_every_permutation():
    assert cyclic_orders(4, 4) == [(0, 1, 2, 3), (3, 0, 1, 2), (2, 3, 0, 1), (1, 2, 3, 0)]
    every = cyclic_orders(4, 24)
    assert len(set(every)) == 24 and sorted(every) == sorted(set(every))


def test_bipartite_matching_pushes_likely_deleted_slices_back():
    orders = bms_orders([0.4, 0.3, 0.2, 0.1], budget=4)
    # A Latin square: each slice once per position; the best order starts with the safest slice.
    assert all(sorted(column) == [0, 1, 2, 3] for column in zip(*orders, strict=True))
    assert orders[0] == (3, 2, 1, 0)
    assert bms_orders([0.4, 0.3, 0.2, 0.1], budget=2) == orders[:2]


def test_cli_json():
    result = CliRunner().invoke(app, ["bench", "s3t-capacity", "--shards", "2", "--slices", "3", "--budget", "3",
                                      "--trials", "300", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"s3t_mean", "s3t_formula", "sisa_mean", "sisa_formula", "s3t_first_retrain_mean",
            "sisa_first_retrain_mean"} <= out.keys()
    assert out["s3t_formula"] == 2 * 3 * harmonic(6) and out["sisa_formula"] == 2 * 3 * harmonic(2)
    assert CliRunner().invoke(app, ["bench", "s3t-capacity", "--shards", "0"]).exit_code == 2
