"""`erasure dev up --shared | status | down --purge` as a user runs them: PostgreSQL, the S3
server, Kafka and MLflow (its registry in PostgreSQL and S3), all on 127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.objects import open_object_store
from services import postgres

ERASURE = str(Path(sys.executable).with_name("erasure"))
pytestmark = pytest.mark.services


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ERASURE_KAFKA", "MLFLOW_TRACKING_URI", "ERASURE_DATABASE_URL", "ERASURE_OBJECT_STORE")}
    return subprocess.run([ERASURE, *args], env={**env, "ERASURE_HOME": str(home)}, capture_output=True, text=True,
                          timeout=300)


def _addresses(pgid: int) -> set[str]:
    """host:port of every socket the process group `pgid` listens on (TCP and TCP6)."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                host, port = fields[1].split(":")
                # the kernel prints the address as 32-bit words in host (little-endian) order
                raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, len(host), 8))
                address = ipaddress.ip_address(raw)
                if address.version == 6 and address.ipv4_mapped:
                    address = address.ipv4_mapped
                listening[fields[9]] = f"{address}:{int(port, 16)}"
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            targets = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except (OSError, ValueError, IndexError):
            continue
        found |= {listening[t[8:-1]] for t in targets if t.startswith("socket:[") and t[8:-1] in listening}
    return found


def test_dev_up_shared_runs_every_service_on_loopback_and_down_purge_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = _run(home, "dev", "up", "--shared")
    pids: dict = {}
    try:
        assert up.returncode == 0, up.stderr
        report = json.loads(_run(home, "dev", "status", "--json").stdout)
        assert all(report[name]["reachable"] for name in ("kafka", "mlflow", "postgres", "s3")), report
        pids = {name: report[name]["pid"] for name in ("kafka", "mlflow", "postgres", "s3")}
        for name, pid in pids.items():
            addresses = _addresses(pid)
            assert addresses, name
            assert all(a.startswith("127.0.0.1:") for a in addresses), (name, addresses)
        secret = home / "pgpass"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip().rsplit(":", 1)[1]
        assert password not in up.stdout + up.stderr and password not in (home / "dev.json").read_text()
        url = report["postgres"]["url"]
        assert "passfile=" in url and password not in url
        # the printed export line, pasted into a shell, sets what another host needs
        [export] = [line for line in up.stdout.splitlines() if line.startswith("export ")]
        shell = subprocess.run(["bash", "-c", f'{export}; echo "$ERASURE_DATABASE_URL"; echo "$ERASURE_OBJECT_STORE"'],
                               capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        assert shell.stdout.splitlines() == [url, report["s3"]["url"]]

        # MLflow keeps its registry in PostgreSQL: a model registered through it is a row there
        import mlflow
        import psycopg

        client = mlflow.MlflowClient(tracking_uri=report["mlflow"]["url"], registry_uri=report["mlflow"]["url"])
        client.create_registered_model("shared-registry-probe")
        with psycopg.connect(postgres.with_database(url, postgres.MLFLOW_DATABASE)) as db:
            names = [n for (n,) in db.execute("SELECT name FROM registered_models")]
        assert names == ["shared-registry-probe"]
        # ... and its artifacts in the S3 server (proxied: this client holds no S3 credentials)
        run = client.create_run(client.create_experiment("probe"))
        client.log_text(run.info.run_id, "adapter bytes", "bundle/probe.txt")
        stored = open_object_store(report["s3"]["url"]).list("mlflow-artifacts/")
        assert any(key.endswith(f"{run.info.run_id}/artifacts/bundle/probe.txt") for key in stored), stored
        cluster = postgres.cluster_dir(__import__("ledger.workspace").workspace.Workspace(home.absolute()))
        assert (cluster / "data" / "PG_VERSION").exists()
    finally:
        down = _run(home, "dev", "down", "--purge")
    assert down.returncode == 0, down.stderr
    assert all(name in down.stdout for name in ("kafka", "mlflow", "postgres", "s3"))
    for pid in pids.values():
        assert not _addresses(pid)
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    assert not cluster.exists() and not secret.exists()
