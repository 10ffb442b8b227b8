"""The certificate benchmark runs end to end (timings are reported, never asserted)."""

from ledger.certificate_bench import run_certificate_benchmark


def test_certificate_benchmark_reports_sizes_and_times(tmp_path) -> None:
    result = run_certificate_benchmark([10, 200], erased=2, workdir=tmp_path)
    rows = result["results"]
    assert [r["records"] for r in rows] == [10, 200]
    assert all(r["issue_s"] > 0 and r["verify_s"] > 0 for r in rows)
    assert rows[1]["leaves_bytes"] == 200 * 32 and rows[0]["envelope_bytes"] > 0
