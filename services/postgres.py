"""A local PostgreSQL server for the shared deployment (`erasure dev up --shared`) and the tests.

Debian's PostgreSQL (`initdb` and `postgres` from its bin directory, `apt-get install
postgresql` when missing) listens on 127.0.0.1 only. PostgreSQL refuses to run as root, so as
root the cluster belongs to the `postgres` user and lives where that user can reach it (under
/var/tmp, not root's home directory); as anyone else it lives in `$ERASURE_HOME/postgres`.

The role `erasure` owns three databases: `erasure` (ledger, records, journal, leases),
`erasure_keys` (the records' data keys, apart, so a dump of the records alone is unreadable)
and `mlflow` (the registry's backend store when MLflow runs in the shared deployment). Its password is random, kept only in a libpq password file in `$ERASURE_HOME`
(0600), and the URL names that file (`?passfile=`), so no secret is printed or recorded.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from ledger.errors import ServiceError
from ledger.workspace import Workspace
from services.process import Service, free_port, spawn

ROLE = "erasure"
DATABASE = "erasure"
KEYS_DATABASE = "erasure_keys"
MLFLOW_DATABASE = "mlflow"  # the registry's own database (MLflow's schema and migrations)
OWNER = "postgres"  # who runs the server when we are root


def bin_dir() -> Path:
    """Where `initdb` and `postgres` are: PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                      if p.parent.parent.name.isdigit() else 0)
    if not versions:
        raise ServiceError("PostgreSQL not found (no initdb): apt-get install postgresql")
    return versions[-1].parent


def cluster_dir(ws: Workspace) -> Path:
    if os.geteuid() != 0:
        return ws.home / "postgres"
    digest = hashlib.sha256(str(ws.home).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"erasure-postgres-{digest}"


def passfile(ws: Workspace) -> Path:
    return ws.home / "pgpass"


def url(ws: Workspace, port: int, database: str = DATABASE) -> str:
    return f"postgresql://{ROLE}@127.0.0.1:{port}/{database}?passfile={passfile(ws)}"


def _run_as_owner(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, user=OWNER if os.geteuid() == 0 else None, cwd="/")
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise ServiceError(f"{Path(cmd[0]).name} failed: {' '.join(last)}")


def _owner_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(OWNER)
    return entry.pw_uid, entry.pw_gid


def _check_ours(root: Path) -> None:
    """An existing cluster directory must be a real directory (no symlink), 0700, owned by the
    server's user: under /var/tmp anyone could have made one with that name."""
    try:
        info = root.lstat()
    except FileNotFoundError:
        return
    owner = _owner_ids()[0] if os.geteuid() == 0 else os.geteuid()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or stat.S_IMODE(info.st_mode) & 0o077:
        raise ServiceError(f"{root} is not a private directory of the PostgreSQL server's user: not used "
                           "(remove it if it is yours)")


def _init_cluster(ws: Workspace, root: Path) -> None:
    """initdb once: the `erasure` superuser with a random password (scram-sha-256 on TCP)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:  # never an existing directory: under /var/tmp another user could have made it first
        root.mkdir(mode=0o700)
    except FileExistsError:
        raise ServiceError(f"{root} appeared while the PostgreSQL cluster was being created: not ours, not used") \
            from None
    if os.geteuid() == 0:
        os.chown(root, *_owner_ids())
    password = secrets.token_urlsafe(24)
    pwfile = root / "initial-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        if os.geteuid() == 0:
            os.fchown(f.fileno(), *_owner_ids())
        f.write(password + "\n")
    try:
        _run_as_owner([str(bin_dir() / "initdb"), "-D", str(root / "data"), "-U", ROLE, f"--pwfile={pwfile}",
                       "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-instructions"])
    finally:
        pwfile.unlink(missing_ok=True)
    secret = passfile(ws)
    secret.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"127.0.0.1:*:*:{ROLE}:{password}\n")  # any port: a restart elsewhere still connects


def start_postgres(ws: Workspace, port: int | None = None) -> Service:
    """Start the cluster (initialised on first use) on `port` (a free one by default)."""
    root = cluster_dir(ws)
    _check_ours(root)
    if not (root / "data" / "PG_VERSION").exists():
        if root.exists():
            shutil.rmtree(root)  # an initdb cut short: nothing in it
        _init_cluster(ws, root)
    elif not passfile(ws).exists():
        raise ServiceError(f"the PostgreSQL cluster at {root} has no password file {passfile(ws)}: restore it, "
                           "or run `erasure dev down --purge` to start afresh (its data is lost)")
    port = port or free_port()
    sockets = root / "run"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sockets, OWNER, OWNER)
    data = root / "data"
    cmd = [str(bin_dir() / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
           "-k", str(sockets), "-c", "max_connections=200", "-c", "fsync=on"]
    log = ws.home / "postgres.log"
    pid = spawn(cmd, log, user=OWNER if os.geteuid() == 0 else None)
    return Service("postgres", pid, url(ws, port), str(log), marker=str(data))


def reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """The server accepts the `erasure` role's connections (to the maintenance database)."""
    import psycopg

    try:
        with psycopg.connect(endpoint, dbname="postgres", connect_timeout=max(1, int(timeout_s))):
            return True
    except psycopg.Error:
        return False


def prepare(svc: Service) -> None:
    """Create the two databases when missing (idempotent)."""
    import psycopg

    with psycopg.connect(svc.endpoint, dbname="postgres", autocommit=True) as db:
        present = {name for (name,) in db.execute("SELECT datname FROM pg_database")}
        for name in (DATABASE, KEYS_DATABASE, MLFLOW_DATABASE):
            if name not in present:
                db.execute(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')


def purge(ws: Workspace) -> None:
    """Delete the cluster's files (the server stopped first) and its password file."""
    shutil.rmtree(cluster_dir(ws), ignore_errors=True)
    passfile(ws).unlink(missing_ok=True)


def with_database(endpoint: str, database: str) -> str:
    """The same server and credentials, another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(path=f"/{database}"))


def sqlalchemy_url(endpoint: str, database: str) -> str:
    """The URL MLflow's SQLAlchemy store takes for `database` (the psycopg 3 driver)."""
    return with_database(endpoint, database).replace("postgresql://", "postgresql+psycopg://", 1)


def create_database(endpoint: str, database: str) -> str:
    """Create `database` on the server `endpoint` names (owned by its role); its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(endpoint, dbname="postgres", autocommit=True) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(endpoint, database)
