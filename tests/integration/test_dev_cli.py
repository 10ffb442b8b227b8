"""`erasure dev up | status | down` as a user runs them, in a subprocess of the installed CLI."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.errors import ServiceError
from services import local as local_services

ERASURE = str(Path(sys.executable).with_name("erasure"))


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ERASURE_HOME=str(home))
    return subprocess.run([ERASURE, "dev", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.services
def test_up_restarts_dead_services_on_their_ports_and_down_leaves_nothing_running(tmp_path: Path) -> None:
    up = _run(tmp_path, "up")
    assert up.returncode == 0, up.stderr
    try:
        report = json.loads(_run(tmp_path, "status", "--json").stdout)
        assert report["kafka"]["reachable"] and report["mlflow"]["reachable"]
        assert report["kafka"]["bootstrap"].startswith("127.0.0.1:")
        assert report["mlflow"]["url"].startswith("http://127.0.0.1:")

        # both die (mlflow's uvicorn child outlives its killed leader and holds the port)
        for name in ("kafka", "mlflow"):
            os.kill(report[name]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(json.loads(_run(tmp_path, "status", "--json").stdout)[n]["running"] for n in ("kafka", "mlflow")):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        again = _run(tmp_path, "up")
        assert again.returncode == 0, again.stderr
        restarted = json.loads(_run(tmp_path, "status", "--json").stdout)
        assert restarted["kafka"]["bootstrap"] == report["kafka"]["bootstrap"]  # clients reconnect
        assert restarted["mlflow"]["url"] == report["mlflow"]["url"]
        assert restarted["kafka"]["reachable"] and restarted["mlflow"]["reachable"]
        assert restarted["kafka"]["pid"] != report["kafka"]["pid"] and restarted["mlflow"]["pid"] != report["mlflow"]["pid"]
        assert local_services.kafka_reachable(report["kafka"]["bootstrap"])
        pids = [report["kafka"]["pid"], report["mlflow"]["pid"], restarted["kafka"]["pid"], restarted["mlflow"]["pid"]]
    finally:
        down = _run(tmp_path, "down")
    assert down.returncode == 0 and "kafka" in down.stdout and "mlflow" in down.stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    after = json.loads(_run(tmp_path, "status", "--json").stdout)
    assert not after["kafka"]["reachable"] and not after["mlflow"]["reachable"]


def test_up_will_not_restart_on_a_port_another_process_holds(tmp_path: Path) -> None:
    """The recorded broker died and something else took its port: a one-line error naming the
    port (exit 2), nothing started."""
    gone = subprocess.Popen([shutil.which("true") or "true"])
    gone.wait()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        (tmp_path / "dev.json").write_text(json.dumps({"kafka": {
            "pid": gone.pid, "bootstrap": f"127.0.0.1:{port}", "log": "x", "marker": str(tmp_path / "server.properties")}}))
        up = _run(tmp_path, "up")
    assert up.returncode == 2 and f"port {port}" in up.stderr and len(up.stderr.strip().splitlines()) == 1, up.stderr
    assert json.loads((tmp_path / "dev.json").read_text())["kafka"]["pid"] == gone.pid  # nothing started
    assert "mlflow" not in json.loads((tmp_path / "dev.json").read_text())


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached jars
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match="mvn not found"):
        local_services.resolve_kafka()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.workspace import Workspace

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match="java not found"):
        local_services.start_kafka(Workspace(tmp_path))


def test_down_never_kills_a_recycled_pid(tmp_path: Path) -> None:
    """A recorded pid now used by some other process is left alone."""
    from ledger.workspace import Workspace

    other = subprocess.Popen([shutil.which("sleep") or "sleep", "30"], start_new_session=True)
    try:
        ws = Workspace(tmp_path)
        ws.dev_state.write_text(json.dumps({"kafka": {
            "pid": other.pid, "bootstrap": "127.0.0.1:1", "log": "x", "marker": str(tmp_path / "server.properties")}}))
        assert local_services.down(ws) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
