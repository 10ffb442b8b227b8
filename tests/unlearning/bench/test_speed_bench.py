"""`erasure bench speed` on the tiny base: every path is timed or says why it could not run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app


def test_speed_bench_times_each_path_and_reports_what_does_not_fit(tmp_path):
    out = tmp_path / "speed"
    result = CliRunner().invoke(app, ["bench", "speed", "--base", "tiny", "--threads", "1", "--steps", "1",
                                      "--layers", "3,1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["all layers (reference)"]["s_per_step"] > 0
    for name in ("top-1, no cache", "top-1, cached", "top-1, cached, batch 8", "top-1, cached, length-bucketed batches"):
        assert rows[name]["s_per_step"] > 0 and rows[name]["prefix_s_per_record"] > 0, name
    # the tiny base has 2 layers: top-3 cannot be built, and says so
    assert "only 2 layers" in rows["top-3, cached"]["error"] and "s_per_step" not in rows["top-3, cached"]
    summary = (out / "summary.md").read_text()
    assert "| all layers (reference) | 1 | 4 |" in summary and "failed: BadInput" in summary
