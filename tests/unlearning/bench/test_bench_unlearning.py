"""`erasure bench unlearning --preset tiny`: the CI smoke test of the method comparison.

Runs the command as a user would (in-process) and checks its outputs: the documented columns,
every method and workload present, the exactness columns passing. No timing is asserted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli.app import app
from unlearning.bench.report import PLOTS
from unlearning.bench.unlearning import METHODS, PRESETS, ROW_FIELDS, bench_records, run_unlearning_benchmark, workloads
from unlearning.data.partition import Partition


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "unlearning"
    result = CliRunner().invoke(app, ["bench", "unlearning", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


@pytest.mark.assets
def test_tiny_preset_writes_results_summary_and_plots(tiny_run):
    out, result = tiny_run
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] and data["preset"] == "tiny"
    assert {"torch", "device", "threads"} <= data["environment"].keys()
    rows = data["rows"]
    assert all(tuple(sorted(row)) == tuple(sorted(ROW_FIELDS)) for row in rows)

    preset = PRESETS["tiny"]
    steps = {"train": 1, "w1": preset.sequential, "w2": 1, "w3": preset.subjects}
    assert Counter((r["method"], r["workload"]) for r in rows) == {
        (m, w): n for m in METHODS for w, n in steps.items()}
    for row in rows:
        assert row["auc"] is not None and row["storage_bytes"] > 0
        assert row["distance_to_retrain"] == 0 if row["method"] == "retrain" else row["distance_to_retrain"] >= 0
        if row["method"].startswith("s3t"):
            assert len(row["s3t_prefixes"]) == preset.shards
        if row["workload"] == "train":
            assert row["forget_auc"] is row["mia_auc"] is None
        else:
            assert (row["s3t_retrains_forced"] is not None) == row["method"].startswith("s3t")
            assert 0 <= row["mia_auc"] <= 1
            if row["method"] == "influence":  # the approximate path never gives exact compliance
                assert row["compliance_s"] is row["restored_s"] is None and row["relative_residual"] >= 0
                assert row["unlearn_s"] > 0 and row["retrained_components"] == 0 and row["grad_samples"] > 0
            else:
                assert row["unlearn_s"] >= row["compliance_s"] > 0 and row["relative_residual"] is None
    # the approximate update moves the retrain adapter: never bitwise the trained one, never the exact retrain
    influence = [r for r in rows if r["method"] == "influence" and r["workload"] != "train"]
    assert influence and all(r["distance_to_retrain"] > 0 for r in influence)

    # W4: the corrupted adapter, its exact correction (the reference) and the influence correction, per corruption
    corrections = data["corrections"]
    assert [(r["workload"], r["model"]) for r in corrections] == [
        (f"w4-{kind}", model) for kind in ("rc", "qm") for model in ("corrupted", "retrain", "influence-direct")]
    assert all(r["distance_to_retrain"] == 0 for r in corrections if r["model"] == "retrain")
    assert all(r["distance_to_retrain"] > 0 and r["relative_residual"] >= 0 and r["gap_closed"] is not None
               for r in corrections if r["model"] == "influence-direct")
    assert all(r["gap_closed"] == 0 for r in corrections if r["model"] == "corrupted")
    assert all(abs(r["gap_closed"] - 1) < 1e-12 for r in corrections if r["model"] == "retrain")
    # the approximate path's quality, per step, beside the exact retrain of the same step
    for r in influence:
        assert r["gap_closed"] is not None and r["mia_auc_original"] is not None and r["auc_change"] is not None

    # the exactness columns pass wherever they were checked, and were checked for every method that can fail them
    for column, methods in (("exact_retrained", set(METHODS) - {"retrain", "influence"}), ("exact_s3t_active", {"s3t-b1", "s3t-bL"})):
        checked = [r for r in rows if r[column] is not None]
        assert all(r[column] is True for r in checked), column
        assert {r["method"] for r in checked} == methods, column

    summary = (out / "summary.md").read_text()
    assert "(complete)" in summary and "speed-up vs retrain" in summary and "ΔAUC vs retrain" in summary
    assert "## W4 corruption, then correction" in summary and "| w4-qm | influence-direct |" in summary
    assert "## Approximate path: forgetting measured against the exact retrain" in summary
    assert all(f"| {m} |" in summary for m in METHODS)
    assert summary in result.stdout
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.assets
def test_request_streams_depend_only_on_the_seed_and_the_records():
    preset = PRESETS["tiny"]
    partition = Partition(b"erasure benchmark partition key.")
    train = [r for r in bench_records(preset) if partition.split(r.subject_id) == "train"]
    first, again, reordered = (workloads(preset, 0, t) for t in (train, list(train), train[::-1]))
    assert first == again == reordered
    assert workloads(preset, 1, train) != first
    assert set(first) == {"w1", "w2", "w3"}  # W4 is no request stream
    assert sum(e.records for e in first["w2"]) == round(0.05 * len(train))
    assert all(len(e.requests) == 1 and e.records == 1 for e in first["w1"])


def test_unknown_preset_and_method_are_one_line_errors(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "unlearning", "--preset", "huge", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown preset 'huge'" in bad.stderr
    bad = runner.invoke(app, ["bench", "unlearning", "--methods", "retrain,lora", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown method or workload 'lora'" in bad.stderr


@pytest.mark.assets
def test_a_preset_can_leave_influence_out_of_w1(tmp_path):
    """The cpu preset skips a full influence solve per sequential request: no influence W1 rows,
    and the summary is complete (not partial) and says why the rows are missing."""
    preset = replace(PRESETS["tiny"], sequential=2, influence_on=("w2", "w3"))
    result = run_unlearning_benchmark(preset, tmp_path, methods=["retrain", "influence"], workload_order=["w1", "w2"])
    assert Counter((r["method"], r["workload"]) for r in result["rows"]) == {
        ("retrain", "train"): 1, ("retrain", "w1"): 2, ("retrain", "w2"): 1, ("influence", "train"): 1,
        ("influence", "w2"): 1}
    summary = (tmp_path / "summary.md").read_text()
    assert "(complete)" in summary and "`influence` does not run W1 in this preset" in summary
