"""The dashboard, served by the intake, in a real headless Chromium: the page renders the requests made in the test
(one complied through `erasure forget`, one still open with its deadline counting down), the
model's versions and the signed checkpoint; a screenshot is kept as a test artifact."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app as cli
from consumers.intake.server import Intake
from consumers.topics import Topics
from ledger.workspace import Workspace
from unlearning.data.records import RecordStore
from unlearning.operations.receive import receive

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "5"]
ARTIFACTS = Path(os.environ.get("ERASURE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: `make test` installs it (Debian package chromium)"
    return found


@pytest.fixture
def served(workspace: Workspace, kafka_bootstrap: str) -> Iterator[str]:
    """The intake (`erasure serve --role intake`'s app, with the dashboard) on a free 127.0.0.1 port."""
    assert runner.invoke(cli, ["keys", "intake"]).exit_code == 0
    intake = Intake(workspace, Topics(f"d{uuid.uuid4().hex[:8]}."), kafka_bootstrap, port=0)
    stop = threading.Event()
    serving = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    serving.start()
    yield intake.url
    stop.set()
    serving.join(30)


def status_of(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def browse(url: str, *flags: str) -> str:
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--virtual-time-budget=3000", *flags, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_dashboard_renders_the_requests_in_chromium(workspace: Workspace, records, write_jsonl, mlflow_uri: str,
                                                    served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert runner.invoke(cli, ["data", "ingest", str(write_jsonl(records(subjects=10, per_subject=3)))]).exit_code == 0
    assert runner.invoke(cli, ["keys", "init"]).exit_code == 0
    name = f"desk-{uuid.uuid4().hex[:8]}"
    trained = runner.invoke(cli, ["train", name, "--method", "sisa", "--shards", "2", "--slices", "1", *TINY])
    assert trained.exit_code == 0, trained.output
    with RecordStore.open(workspace) as store:
        done_subject, open_subject = store.subjects("train")[:2]
    forgot = runner.invoke(cli, ["forget", name, "--subject", done_subject, "--request-id", "req-complied"])
    assert forgot.exit_code == 0, forgot.output
    receive(workspace, "req-open", open_subject, model=name)  # logged with its GDPR deadline, not yet planned
    assert runner.invoke(cli, ["ledger", "checkpoint"]).exit_code == 0

    # off until a viewer token exists; then only with it
    assert status_of(f"{served}/dashboard") == 404
    made = runner.invoke(cli, ["intake", "dashboard-token"])
    assert made.exit_code == 0
    token = made.stdout.strip()
    assert token.startswith("erd_") and token not in (workspace.home / "intake" / "dashboard.sha256").read_text()
    assert (workspace.home / "intake" / "dashboard.sha256").stat().st_mode & 0o777 == 0o600
    assert status_of(f"{served}/dashboard") == 401
    assert status_of(f"{served}/dashboard", {"Authorization": "Bearer erd_wrong"}) == 401
    assert status_of(f"{served}/dashboard/login?token=erd_wrong") == 401
    assert status_of(f"{served}/dashboard", {"Authorization": f"Bearer {token}"}) == 200

    page = browse(f"{served}/dashboard/login?token={token}", "--dump-dom")  # the cookie carries the login
    assert "Open requests (1)" in page and "req-open" in page and "req-complied" in page
    assert token not in page  # the login lives in the HttpOnly cookie, never in the page
    countdown = page.split("class=\"countdown\"", 1)[1].split("</span>", 1)[0]
    assert " d " in countdown and countdown.rstrip().endswith(" s"), countdown  # the script ran and ticks
    assert f"<h3>{name}</h3>" in page and "@certified" in page and "purged" in page
    assert "Latest signed checkpoint" in page and "\n\u2014 " in page  # the signed note, with its signature line
    assert "<svg class=\"chart\"" in page and "req-complied:" in page

    detail = browse(f"{served}/dashboard/requests/req-complied", "--dump-dom")
    assert "needs the viewer token" in detail  # a fresh browser has no cookie
    with urllib.request.urlopen(urllib.request.Request(f"{served}/dashboard/requests/req-complied",
                                                       headers={"Authorization": f"Bearer {token}"})) as answer:
        detail = answer.read().decode()
    for stage in ("received", "planned", "excluded", "restored shard"):
        assert f"<td>{stage}" in detail, stage
    assert f"erasure verify models:/{name}/" in detail and "certificate <code>" in detail

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    browse(f"{served}/dashboard/login?token={token}", f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
