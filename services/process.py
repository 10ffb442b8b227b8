"""Processes of the local services: spawn in their own session, recorded by pid and a marker in
their command line (so a recycled pid is never signalled), stopped by process group."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ledger.errors import ServiceError


def require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ServiceError(f"{tool} not found on PATH: {why}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as the broker and uvicorn do, with
    SO_REUSEADDR: connections of a killed server in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_STOP = {"postgres": (signal.SIGINT, 30.0), "s3": (signal.SIGTERM, 10.0)}  # name -> (signal, wait)


@dataclass
class Service:
    name: str
    pid: int
    endpoint: str  # Kafka: host:port bootstrap; the others: a URL
    log: str
    marker: str  # a string in the process's command line, so a recycled pid is never killed

    def to_json(self) -> dict:
        key = "bootstrap" if self.name == "kafka" else "url"
        return {"pid": self.pid, key: self.endpoint, "log": self.log, "marker": self.marker}

    @classmethod
    def from_json(cls, name: str, data: dict) -> "Service":
        endpoint = data.get("bootstrap") or data.get("url")
        return cls(name, int(data["pid"]), endpoint, data["log"], data["marker"])

    @property
    def port(self) -> int:
        if "://" in self.endpoint:
            inner = parse_qs(urlsplit(self.endpoint).query).get("endpoint")  # s3://BUCKET?endpoint=URL: the server's
            return int(urlsplit(inner[0] if inner else self.endpoint).port)  # type: ignore[arg-type]
        return int(self.endpoint.rsplit(":", 1)[1])

    def alive(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        return self.marker in cmdline

    def stop(self, timeout_s: float | None = None, spawned_here: bool = False) -> None:
        """Stop the process group this service leads (mlflow forks uvicorn workers): its stop
        signal (PostgreSQL: SIGINT, a fast shutdown; SIGTERM would wait for every client to
        leave), then SIGKILL after `timeout_s` (SeaweedFS: 10 s, its SIGTERM once hung).

        `spawned_here`: this process just started it, so it is ours even before its command line
        shows the marker (a failed start-up must not leave it running).
        """
        if not spawned_here and not self.alive():
            return
        sig, default_timeout_s = _STOP.get(self.name, (signal.SIGTERM, 30.0))
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (default_timeout_s if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            if not _group_alive(self.pid):
                return
            time.sleep(0.2)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _leftovers(svc: Service) -> list[int]:
    """Processes of a dead service's process group still running: mlflow's uvicorn outlives a
    killed `mlflow server`, and holds the port. Only those whose command line names the
    service's port or marker count, so a recycled process group is never touched."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pgid = int(stat.read_text().rsplit(")", 1)[1].split()[2])
            args = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if pgid == svc.pid and (svc.marker in " ".join(args) or any(
                a == "--port" and b == str(svc.port) for a, b in zip(args, args[1:]))):
            found.append(int(stat.parent.name))
    return found


def stop_leftovers(svc: Service, timeout_s: float = 15.0) -> None:
    pids = _leftovers(svc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a zombie leader still counts as alive for killpg; reap it if it is our child
    try:
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == pgid:
            return _group_alive(pgid)
    except ChildProcessError:
        pass
    return True


def exited(pid: int) -> bool:
    """Whether a process we started has ended (its command line may not show the marker until
    it has exec'd, so start-up checks go by pid)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: look it up
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def spawn(cmd: list[str], log: Path, env: dict | None = None, user: str | None = None) -> int:
    """Start `cmd` in its own session (its process group is the service), output to `log`;
    `user`: run it as that user (PostgreSQL refuses to run as root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, user=user, cwd="/" if user else None)
    return proc.pid


