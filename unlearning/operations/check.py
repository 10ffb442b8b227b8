"""`erasure check` and the start-up check of `erasure serve`: is every local store sound?

SQLite files get `PRAGMA quick_check` (page structure, not index contents: seconds, not
minutes); the public keys must load; restore journals must parse; the checkpoints a retrain resumes from (the newest
version of each model) must match the digests their component.json recorded. Checkpoints of
older versions are checked when they are loaded (`Component.checked_path`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ledger import model_signature
from ledger.errors import CorruptState, ErasureError, ServiceError
from ledger.keys import ROLES, load_public_key, public_key_path
from ledger.log import log_exists, log_location, open_log_store
from ledger.workspace import Workspace
from unlearning.data.records import check_postgres
from unlearning.versions.layout import ADAPTER_FILE, AGGREGATOR_FILE, STATE_JSON, STATE_TENSORS
from unlearning.operations.restore import Journal
from unlearning.versions.lock import require_leases
from unlearning.versions.store import ModelStore


@dataclass(frozen=True)
class Finding:
    store: str  # "ledger", "records", "record keys", "keys", "journal", "checkpoints"
    path: Path | str  # a file, or a shared database (no credentials)
    problem: str | None  # None: sound

    def line(self) -> str:
        return f"{self.store}: {self.path}: {self.problem or 'ok'}"


def sqlite_problem(path: Path) -> str | None:
    """None if SQLite's quick_check passes, else its first complaint (or why the file does not open)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in db.execute("PRAGMA quick_check")]
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        return str(err)
    return None if rows == ["ok"] else rows[0]


def check_sqlite(ws: Workspace) -> list[Finding]:
    """The SQLite stores that exist in `ws` (absent stores are new, not corrupt); not ledger.db
    when the ledger is on PostgreSQL (`check_shared_ledger`), nor records.db and record-keys.db
    when the records are (`check_shared_records`)."""
    shared = ws.database_url() is not None
    return [Finding(label, path, sqlite_problem(path))
            for label, path in (("ledger", ws.ledger_db), ("records", ws.records_db),
                                ("record keys", ws.record_keys_db))
            if path.exists() and not shared]


def check_shared_ledger(ws: Workspace) -> list[Finding]:
    """The ledger on PostgreSQL, when `ws` has a database URL and a ledger there: its schema and
    origin readable, its entries and tree hashes gapless (`PostgresStore.quick_check`, counts only).
    A server that does not answer is a ServiceError, not a corrupt store."""
    if ws.database_url() is None or not log_exists(ws):
        return []
    where = log_location(ws)
    try:
        store = open_log_store(ws, create=False)
    except ServiceError:
        raise
    except ErasureError as err:
        return [Finding("ledger", where, str(err))]
    try:
        return [Finding("ledger", where, store.quick_check())]
    finally:
        store.close()


def check_shared_records(ws: Workspace) -> list[Finding]:
    """The record store on PostgreSQL, when `ws` has a database URL: both its databases answer
    (else ServiceError) and hold its tables and columns (`records.check_postgres`)."""
    url = ws.database_url()
    if url is None:
        return []
    return [Finding(*found) for found in check_postgres(url, ws.keys_database_url() or "")]


def check_workspace(ws: Workspace) -> list[Finding]:
    """One finding per store that exists in `ws` (BadInput first if the shared stores are half
    configured: an object store without the database that holds the model leases)."""
    require_leases(ws)
    findings = check_sqlite(ws) + check_shared_ledger(ws) + check_shared_records(ws)
    for role in ROLES:  # public keys only: a private key may need a passphrase this process lacks
        path = public_key_path(ws.key_dir, role)
        if path.exists():
            findings.append(Finding("keys", path, _problem(lambda r=role: load_public_key(ws.key_dir, r))))
    if model_signature.public_path(ws.key_dir).exists():
        findings.append(Finding("keys", model_signature.public_path(ws.key_dir),
                                _problem(lambda: model_signature.load_public(ws.key_dir))))
    for journal in Journal.every(ws):  # files, or the shared database's rows
        findings.append(Finding("journal", journal.path or Path(journal.where), _problem(journal.read)))
    models = ModelStore(ws)
    for name in models.names():
        version = models.get(name)
        for component in version.components:
            files = [f for f in (ADAPTER_FILE, AGGREGATOR_FILE, STATE_TENSORS, STATE_JSON) if f in component.meta.files]
            findings.append(Finding("checkpoints", component.path,
                                    _problem(lambda c=component, f=files: c.checked_path(*f))))
    return findings


def require_sound(ws: Workspace) -> list[Finding]:
    """The findings, or CorruptState naming every store that failed."""
    findings = check_workspace(ws)
    bad = [f for f in findings if f.problem]
    if bad:
        raise CorruptState(f"{len(bad)} corrupt store(s): " + "; ".join(f.line() for f in bad)
                           + ": restore the workspace from a backup")
    return findings


def _problem(check) -> str | None:  # type: ignore[no-untyped-def]
    try:
        check()
    except ErasureError as err:
        return str(err)
    return None
