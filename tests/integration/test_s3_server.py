"""The local S3 server (SeaweedFS, `services.seaweed`) as `erasure dev up --shared` runs it: on
127.0.0.1 only, on ports of its own, its secret in 0600 files only; stopped, nothing is left
running or listening, and a client gets one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ledger.errors import ServiceError
from ledger.objects import open_object_store
from ledger.workspace import Workspace
from services import local as local_services
from services import seaweed

# SeaweedFS's default ports (HTTP and gRPC = HTTP + 10000): master, volume, filer, S3, WebDAV, admin,
# debug, Iceberg, Lance
DEFAULT_PORTS = {9333, 19333, 8080, 18080, 9340, 19340, 8888, 18888, 8333, 18333, 7333, 23646, 33646, 6060,
                 8181, 9101}


def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket on this machine."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            found[int(fields[9])] = (address if len(address) == width else "?", int(port, 16))
    return found


def _sockets_of(pid: int) -> list[tuple[str, int]]:
    listening = _listening()
    inodes = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return [listening[i] for i in inodes if i in listening]


LOOPBACK = "0100007F"  # 127.0.0.1 in /proc/net/tcp's byte order


def test_start_listens_on_loopback_only_and_stop_leaves_nothing(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "home")
    svc = local_services.up(ws, which=("s3",))["s3"]
    try:
        sockets = _sockets_of(svc.pid)
        assert len(sockets) >= 8  # master, volume, filer, S3, admin: HTTP and gRPC each
        assert all(address == LOOPBACK for address, _ in sockets), sockets
        ports = {port for _, port in sockets}
        assert svc.port in ports and not ports & DEFAULT_PORTS, ports
        # the secret: in the two 0600 files, nowhere the URL, dev.json or the log show
        creds = seaweed.credentials_file(ws)
        secret = creds.read_text().split("aws_secret_access_key = ")[1].strip()
        for private in (creds, seaweed.root(ws) / "s3.json"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert f"credentials={creds}" in svc.endpoint and secret not in svc.endpoint
        for shown in (ws.dev_state, Path(svc.log)):
            assert secret not in shown.read_text()
        store = open_object_store(svc.endpoint)
        assert store.put_if_absent("k", b"v") and store.get("k") == b"v"
        assert local_services.up(ws, which=("s3",))["s3"].pid == svc.pid  # reused while it runs
    finally:
        local_services.down(ws)
    assert not Path(f"/proc/{svc.pid}").exists() or b"zombie" in Path(f"/proc/{svc.pid}/status").read_bytes().lower()
    still = {port for _, port in _listening().values()} & ports
    assert not still, f"still listening after stop: {still}"
    with pytest.raises(ServiceError, match="is not reachable; is the S3 server running") as err:
        store.get("k")
    assert "\n" not in str(err.value)

    # started again (the recorded data and identity): the object is still there; purge deletes them
    again = local_services.up(ws, which=("s3",))["s3"]
    try:
        assert open_object_store(again.endpoint).get("k") == b"v"
    finally:
        local_services.down(ws, purge=True)
    assert not seaweed.root(ws).exists() and not seaweed.credentials_file(ws).exists()
