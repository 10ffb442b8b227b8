"""The encrypted record store (SQLite in the workspace, or PostgreSQL when shared) and record
commitments (design §4).

- `records.db` holds one row per record: ids, split, commitment and the AES-256-GCM
  ciphertext of (prompt, answer, salt) under the subject's own data key.
- The data keys live in their own table in a separate file in the key directory
  (`record-keys.db`, attached to the same connection), so a backup of `records.db` alone
  is unreadable and erasing a subject (rows + key, one transaction) crypto-shreds every copy.
- Shared (`Workspace.database_url()` set): the same tables in PostgreSQL, the data keys in a
  different database (`Workspace.keys_database_url()`, its own connection), so a dump of the
  records database alone is unreadable too. A write spans two transactions, the keys' committed
  first (see `_PostgresBackend.transaction`).
- Commitment: `SHA-256("erasure/record/v1" || salt || canonical record bytes)` with a random
  32-byte salt kept, encrypted, beside the record.
- Provenance: commitment -> (model, version, component, shard, slice, split) of every model
  version trained on the record; keyed by commitment, so it names no subject.
- Activation cache: per commitment, base-model prefix digest and sequence ("answer" or
  "prompt"), hidden states of the frozen base layers, sealed under the subject's data key and
  deleted in the transaction that erases or replaces the record (a derived cache is a record too).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.canonical import canonical_json
from ledger.errors import BadInput, CorruptState, ErasureError, ServiceError
from ledger.workspace import Workspace
from unlearning.data.partition import SPLITS, Partition

COMMITMENT_DOMAIN = b"erasure/record/v1"
FIELDS = ("record_id", "subject_id", "prompt", "answer")
SEQUENCES = ("answer", "prompt")  # activation caches: prompt+answer tokens (training), prompt only (scoring)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS main.records (
    record_id  TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    split      TEXT NOT NULL,
    commitment BLOB NOT NULL UNIQUE,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS main.records_by_subject ON records (subject_id);
CREATE TABLE IF NOT EXISTS main.provenance (
    commitment BLOB NOT NULL,
    model      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    component  TEXT NOT NULL,
    shard      INTEGER NOT NULL,
    slice      INTEGER NOT NULL,
    split      TEXT NOT NULL,
    PRIMARY KEY (commitment, model, version)
);
CREATE TABLE IF NOT EXISTS main.activations (
    commitment    BLOB NOT NULL,
    prefix_sha256 TEXT NOT NULL,
    sequence      TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    PRIMARY KEY (commitment, prefix_sha256, sequence)
);
CREATE TABLE IF NOT EXISTS keys.subject_keys (
    subject_id TEXT PRIMARY KEY,
    data_key   BLOB NOT NULL
);
"""

# PostgreSQL: the same tables (BYTEA for BLOB; "C" collation, so ORDER BY sorts as SQLite's
# binary collation does), the keys' table in its own database.
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    record_id  TEXT COLLATE "C" PRIMARY KEY,
    subject_id TEXT COLLATE "C" NOT NULL,
    split      TEXT NOT NULL,
    commitment BYTEA NOT NULL UNIQUE,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_subject ON records (subject_id);
CREATE TABLE IF NOT EXISTS provenance (
    commitment BYTEA NOT NULL,
    model      TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    component  TEXT NOT NULL,
    shard      INTEGER NOT NULL,
    slice      INTEGER NOT NULL,
    split      TEXT NOT NULL,
    PRIMARY KEY (commitment, model, version)
);
CREATE TABLE IF NOT EXISTS activations (
    commitment    BYTEA NOT NULL,
    prefix_sha256 TEXT NOT NULL,
    sequence      TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    PRIMARY KEY (commitment, prefix_sha256, sequence)
);
"""
_PG_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS subject_keys (
    subject_id TEXT COLLATE "C" PRIMARY KEY,
    data_key   BYTEA NOT NULL
);
"""
# table -> columns, what `erasure check` expects of the shared databases
PG_TABLES = {
    "records": ("record_id", "subject_id", "split", "commitment", "nonce", "ciphertext"),
    "provenance": ("commitment", "model", "version", "component", "shard", "slice", "split"),
    "activations": ("commitment", "prefix_sha256", "sequence", "nonce", "ciphertext"),
}
PG_KEY_TABLES = {"subject_keys": ("subject_id", "data_key")}
# pg_advisory_xact_lock key serialising the record store's writers (as BEGIN IMMEDIATE does in SQLite)
_PG_LOCK = int.from_bytes(hashlib.sha256(b"erasure/records/writer").digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class Record:
    record_id: str
    subject_id: str
    prompt: str
    answer: str

    def canonical_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace, UTF-8) of the four fields."""
        return canonical_json({f: getattr(self, f) for f in FIELDS})


@dataclass(frozen=True)
class StoredRecord(Record):
    split: str
    commitment: bytes

NO_SHARD = -1  # provenance of a component without shard or slice (APA's aggregator pools every shard's subjects)


@dataclass(frozen=True)
class Provenance:
    commitment: bytes
    model: str
    version: int
    component: str
    shard: int  # NO_SHARD for a component without one
    slice: int  # NO_SHARD likewise
    split: str


def commitment(salt: bytes, record: Record) -> bytes:
    return hashlib.sha256(COMMITMENT_DOMAIN + salt + record.canonical_bytes()).digest()


def parse_jsonl(path: Path) -> list[Record]:
    """Records from a JSONL file, one object with exactly `FIELDS` (non-empty strings) a line.

    Raises BadInput naming the first bad line; blank lines are skipped.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read {path}: {err}") from err
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}: line {number}: not JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise BadInput(f"{path}: line {number}: expected a JSON object")
        missing = [f for f in FIELDS if f not in obj]
        unknown = sorted(set(obj) - set(FIELDS))
        if missing or unknown:
            what = f"missing {', '.join(missing)}" if missing else f"unknown field {', '.join(unknown)}"
            raise BadInput(f"{path}: line {number}: {what}")
        bad = [f for f in FIELDS if not isinstance(obj[f], str) or not obj[f].strip()]
        if bad:
            raise BadInput(f"{path}: line {number}: {', '.join(bad)} must be a non-empty string")
        record = Record(**{f: obj[f] for f in FIELDS})
        try:
            record.canonical_bytes()
        except BadInput as err:
            raise BadInput(f"{path}: line {number}: {err}") from None
        records.append(record)
    return records


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


class RecordStore:
    """Encrypted records of one workspace. Use as a context manager, or call `close()`."""

    def __init__(self, records_db: Path, keys_db: Path, partition: Partition):
        self._setup(_SQLiteBackend(records_db, keys_db), partition)

    def _setup(self, backend: "_SQLiteBackend | _PostgresBackend", partition: Partition) -> None:
        self._db = backend
        self._keys = backend.keys_table
        self.partition = partition

    @classmethod
    def on_postgres(cls, url: str, keys_url: str, partition: Partition) -> "RecordStore":
        """The store in the PostgreSQL database `url`, its data keys in the database `keys_url`."""
        store = cls.__new__(cls)
        store._setup(_PostgresBackend(url, keys_url), partition)
        return store

    @classmethod
    def open(cls, workspace: Workspace) -> "RecordStore":
        """PostgreSQL when the workspace names a database URL, else the SQLite files."""
        workspace.ensure()
        partition = Partition.for_workspace(workspace)
        url = workspace.database_url()
        if url:
            return cls.on_postgres(url, workspace.keys_database_url() or "", partition)
        return cls(workspace.records_db, workspace.record_keys_db, partition)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self):  # type: ignore[no-untyped-def]
        return self._db.transaction()

    def ingest(self, records: Sequence[Record], split: str | None = None) -> int:
        """Encrypt and store records in one transaction; any duplicate id rejects them all.

        Each record's split is its subject's (`Partition.split`) unless `split` names one for
        every record of the call (a chronological split puts one subject into several)."""
        _check_split(split)
        seen: set[str] = set()
        for record in records:
            if record.record_id in seen:
                raise BadInput(f"record {record.record_id!r} appears twice")
            seen.add(record.record_id)
        with self._transaction():
            existing = [
                rid for (rid,) in self._db.execute("SELECT record_id FROM records")
                if rid in seen
            ]
            if existing:
                raise BadInput(f"record {sorted(existing)[0]!r} is already in the store ({len(existing)} duplicates)")
            keys: dict[str, AESGCM] = {}
            rows = []
            for record in records:
                if record.subject_id not in keys:
                    keys[record.subject_id] = AESGCM(self._data_key(record.subject_id))
                rows.append((record.record_id, record.subject_id, split or self.partition.split(record.subject_id),
                             *_seal(keys[record.subject_id], record)))
            self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def _data_key(self, subject_id: str) -> bytes:
        """The subject's data key, created when it has none (inside the caller's transaction)."""
        key = self._keys_of([subject_id]).get(subject_id)
        if key is not None:
            return key
        self._db.keys_execute(f"INSERT INTO {self._keys} VALUES (?, ?) ON CONFLICT (subject_id) DO NOTHING",
                              (subject_id, AESGCM.generate_key(bit_length=256)))
        return self._keys_of([subject_id])[subject_id]

    def _keys_of(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """subject -> data key of those of `subjects` that have one (the keys live apart from the
        records, in PostgreSQL in another database: no join spans both)."""
        wanted = sorted(set(subjects))
        found: dict[str, bytes] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            found.update(self._db.keys_execute(
                f"SELECT subject_id, data_key FROM {self._keys} WHERE subject_id IN ({', '.join('?' * len(chunk))})",
                chunk))
        return found

    def _opened(self, rows: Iterable[tuple]) -> list[StoredRecord]:
        """Decrypted (record_id, subject_id, split, commitment, nonce, ciphertext) rows; rows of a
        subject without a key (erased meanwhile) are left out."""
        rows = list(rows)
        keys = self._keys_of(row[1] for row in rows)
        return [_open(*row, keys[row[1]]) for row in rows if row[1] in keys]

    def records(self, split: str | None = None) -> list[StoredRecord]:
        """Decrypted records, sorted by record id (optionally of one split)."""
        _check_split(split)
        return self._opened(self._db.execute(
            _SELECT + (" WHERE split = ?" if split else "") + " ORDER BY record_id", (split,) if split else ()))

    def subjects(self, split: str | None = None) -> list[str]:
        _check_split(split)
        query = "SELECT DISTINCT subject_id FROM records" + (" WHERE split = ?" if split else "") + " ORDER BY subject_id"
        return [s for (s,) in self._db.execute(query, (split,) if split else ())]

    def stats(self) -> dict:
        """Record and subject counts, in all and per split."""
        per_split = {s: {"records": 0, "subjects": 0} for s in SPLITS}
        for split, n_records, n_subjects in self._db.execute(
            "SELECT split, COUNT(*), COUNT(DISTINCT subject_id) FROM records GROUP BY split"
        ):
            per_split[split] = {"records": n_records, "subjects": n_subjects}
        n_records, n_subjects = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT subject_id) FROM records").fetchone()
        return {"records": n_records, "subjects": n_subjects, "splits": per_split}

    def erase_subject(self, subject_id: str) -> list[bytes]:
        """Delete a subject's rows (and cached activations) and destroy its data key in one transaction.

        Returns the erased records' commitments (sorted), the handle the ledger and the
        planner use from then on. (PostgreSQL: the key's deletion commits first; should the
        rows' then fail, they are unreadable, and a retry deletes them.)
        """
        with self._transaction():
            commitments = sorted(
                c for (c,) in self._db.execute("SELECT commitment FROM records WHERE subject_id = ?", (subject_id,))
            )
            keys = self._db.keys_execute(f"DELETE FROM {self._keys} WHERE subject_id = ?", (subject_id,)).rowcount
            if not commitments and not keys:
                raise BadInput(f"unknown subject {subject_id!r}")
            self._drop_activations(commitments)
            self._db.execute("DELETE FROM records WHERE subject_id = ?", (subject_id,))
        return commitments

    def commitments_of(self, subject_id: str, record_ids: Sequence[str] | None = None) -> list[bytes]:
        """Sorted commitments of a subject's records (all, or the named ones); BadInput if unknown."""
        rows = dict(self._db.execute("SELECT record_id, commitment FROM records WHERE subject_id = ?", (subject_id,)))
        if not rows:
            raise BadInput(f"unknown subject {subject_id!r}: the record store holds no records of it")
        if record_ids is None:
            return sorted(rows.values())
        missing = sorted(set(record_ids) - rows.keys())
        if missing:
            raise BadInput(f"subject {subject_id!r} has no record {missing[0]!r}")
        return sorted(rows[r] for r in set(record_ids))

    def erase_records(self, subject_id: str, record_ids: Sequence[str]) -> list[bytes]:
        """Delete some of a subject's rows (and cached activations) in one transaction; its key
        goes with its last row."""
        commitments = self.commitments_of(subject_id, record_ids)
        with self._transaction():
            self._db.executemany("DELETE FROM records WHERE subject_id = ? AND record_id = ?",
                                 [(subject_id, r) for r in set(record_ids)])
            self._drop_activations(commitments)
            left = self._db.execute("SELECT COUNT(*) FROM records WHERE subject_id = ?", (subject_id,)).fetchone()[0]
            if not left:
                self._db.keys_execute(f"DELETE FROM {self._keys} WHERE subject_id = ?", (subject_id,))
        return commitments

    def erase_commitments(self, commitments: Iterable[bytes]) -> None:
        """Delete the rows (and cached activations) with these commitments, and the key of every
        subject left without rows, in one transaction (a batch of erasures costs one commit).
        Idempotent: absent rows are skipped."""
        with self._transaction():
            subjects = set()
            for c in commitments:
                subjects.update(s for (s,) in self._db.execute(
                    "DELETE FROM records WHERE commitment = ? RETURNING subject_id", (c,)))
                self._drop_activations([c])
            left = {s for s in subjects
                    if self._db.execute("SELECT 1 FROM records WHERE subject_id = ?", (s,)).fetchone()}
            self._db.keys_executemany(f"DELETE FROM {self._keys} WHERE subject_id = ?",
                                      [(s,) for s in sorted(subjects - left)])

    def record(self, record_id: str) -> StoredRecord:
        """One decrypted record; BadInput if the store does not hold it."""
        found = self._opened(self._db.execute(_SELECT + " WHERE record_id = ?", (record_id,)))
        if not found:
            raise BadInput(f"unknown record {record_id!r}: the record store does not hold it")
        return found[0]

    def rectify_record(self, record_id: str, prompt: str | None = None, answer: str | None = None) -> tuple[bytes, bytes]:
        """Replace a record's prompt and/or answer in one transaction, with a fresh salt (so a
        fresh commitment) and nonce; the old ciphertext and salt, and the activations cached for
        the old commitment, are overwritten (secure_delete).
        Returns (old commitment, new commitment); BadInput if nothing would change."""
        with self._transaction():
            old = self.record(record_id)
            new = Record(record_id, old.subject_id, old.prompt if prompt is None else prompt,
                         old.answer if answer is None else answer)
            if any(not isinstance(v, str) or not v.strip() for v in (new.prompt, new.answer)):
                raise BadInput(f"record {record_id!r}: prompt and answer must be non-empty strings")
            if (new.prompt, new.answer) == (old.prompt, old.answer):
                raise BadInput(f"record {record_id!r} already has this prompt and answer: nothing to rectify")
            fresh, nonce, ciphertext = _seal(AESGCM(self._data_key(old.subject_id)), new)
            self._db.execute("UPDATE records SET commitment = ?, nonce = ?, ciphertext = ? WHERE record_id = ?",
                             (fresh, nonce, ciphertext, record_id))
            self._drop_activations([old.commitment])  # cached from the old content
        return old.commitment, fresh

    def add_provenance(self, rows: Iterable[Provenance]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO provenance VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (commitment, model, version) "
                "DO UPDATE SET component = excluded.component, shard = excluded.shard, slice = excluded.slice, "
                "split = excluded.split",
                [(p.commitment, p.model, p.version, p.component, p.shard, p.slice, p.split) for p in rows],
            )

    def provenance(self, commitments: Iterable[bytes]) -> list[Provenance]:
        """Where the records with these commitments were trained, by (model, version, component)."""
        out = []
        for c in commitments:
            out += [Provenance(*row) for row in self._db.execute(
                "SELECT * FROM provenance WHERE commitment = ? ORDER BY model, version", (c,)
            )]
        return out

    def _subject_of(self, commit: bytes) -> str | None:
        row = self._db.execute("SELECT subject_id FROM records WHERE commitment = ?", (commit,)).fetchone()
        return row[0] if row else None

    def add_activations(self, prefix_sha256: str, rows: Iterable[tuple[bytes, str, bytes]]) -> int:
        """Seal and store cached activations, (commitment, sequence, payload) rows computed by the
        base-model prefix `prefix_sha256`, in one transaction. Rows of commitments no longer in the
        store (erased meanwhile) are skipped; rows of these commitments cached under any other
        prefix are deleted. Returns the number of rows stored."""
        _check_prefix(prefix_sha256)
        with self._transaction():
            keys: dict[bytes, AESGCM | None] = {}
            stored: set[tuple[bytes, str]] = set()
            for c, sequence, payload in rows:
                _check_sequence(sequence)
                if c not in keys:
                    subject = self._subject_of(c)
                    data_key = self._keys_of([subject]).get(subject) if subject is not None else None
                    keys[c] = AESGCM(data_key) if data_key else None
                    self._db.execute("DELETE FROM activations WHERE commitment = ? AND prefix_sha256 != ?",
                                     (c, prefix_sha256))
                key = keys[c]
                if key is None:
                    continue
                nonce = secrets.token_bytes(12)
                self._db.execute(
                    "INSERT INTO activations VALUES (?, ?, ?, ?, ?) ON CONFLICT (commitment, prefix_sha256, sequence) "
                    "DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext", (
                        c, prefix_sha256, sequence, nonce,
                        key.encrypt(nonce, payload, _activation_aad(c, prefix_sha256, sequence))))
                stored.add((c, sequence))
        return len(stored)

    def activations(self, prefix_sha256: str, commitments: Iterable[bytes]) -> dict[tuple[bytes, str], bytes]:
        """(commitment, sequence) -> decrypted payload of the activations cached under
        `prefix_sha256` for these commitments; CorruptState if a row fails authentication."""
        _check_prefix(prefix_sha256)
        out: dict[tuple[bytes, str], bytes] = {}
        for c in set(commitments):
            subject = self._subject_of(c)
            data_key = self._keys_of([subject]).get(subject) if subject is not None else None
            if data_key is None:  # erased (or erased meanwhile): nothing of it is readable
                continue
            for sequence, nonce, ciphertext in self._db.execute(
                "SELECT sequence, nonce, ciphertext FROM activations WHERE commitment = ? AND prefix_sha256 = ?",
                (c, prefix_sha256)
            ):
                try:
                    out[c, sequence] = AESGCM(data_key).decrypt(
                        nonce, ciphertext, _activation_aad(c, prefix_sha256, sequence))
                except InvalidTag:
                    raise CorruptState(
                        f"record store corrupt: cached {sequence} activations of commitment {c.hex()[:16]} "
                        "fail authentication") from None
        return out

    def count_activations(self, commitments: Iterable[bytes]) -> int:
        """The number of cached activation rows (under any prefix) of these commitments."""
        return sum(self._db.execute("SELECT COUNT(*) FROM activations WHERE commitment = ?", (c,)).fetchone()[0]
                   for c in set(commitments))

    def _drop_activations(self, commitments: Iterable[bytes]) -> None:
        """Delete the cached activations of these commitments (inside the caller's transaction)."""
        self._db.executemany("DELETE FROM activations WHERE commitment = ?", [(c,) for c in commitments])

    # --- moving a store (`erasure admin migrate`) ---------------------------------------------

    def export_rows(self) -> dict[str, list[tuple]]:
        """Every row verbatim, still sealed: table -> rows (columns as `PG_TABLES` lists them, by
        primary key), the data keys under "subject_keys". Read in one transaction."""
        out: dict[str, list[tuple]] = {}
        with self._transaction():
            for table, columns in PG_TABLES.items():
                out[table] = [_plain(row) for row in self._db.execute(
                    f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(_KEYS[table])}")]
            out["subject_keys"] = [_plain(row) for row in self._db.keys_execute(
                f"SELECT subject_id, data_key FROM {self._keys} ORDER BY subject_id")]
        return out

    def import_rows(self, rows: dict[str, list[tuple]]) -> dict[str, int]:
        """Insert `export_rows()` output verbatim, in one transaction; rows already here unchanged
        are skipped, so an interrupted copy resumes. BadInput, nothing written, when this store holds
        a row of another content under the same key, or rows `rows` lacks (another store's).
        Returns the rows inserted, per table."""
        inserted: dict[str, int] = {}
        with self._transaction():
            plans = []
            for table, columns in (*PG_TABLES.items(), *PG_KEY_TABLES.items()):
                keys = _KEYS.get(table, ("subject_id",))
                name, run = (self._keys, self._db.keys_execute) if table in PG_KEY_TABLES else (table, self._db.execute)
                key_of = [columns.index(k) for k in keys]
                present = {tuple(row[i] for i in key_of): row
                           for row in map(_plain, run(f"SELECT {', '.join(columns)} FROM {name}"))}
                wanted = {tuple(row[i] for i in key_of): _plain(row) for row in rows.get(table, [])}
                differ = sorted(k for k in present.keys() & wanted.keys() if present[k] != wanted[k])
                if differ:
                    raise BadInput(f"the target record store holds another {table} row under {differ[0][0]!r}: "
                                   "not a copy of this one")
                if extra := present.keys() - wanted.keys():
                    raise BadInput(f"the target record store holds {len(extra)} {table} rows this store does not: "
                                   "it is another store")
                plans.append((table, name, columns, [row for k, row in wanted.items() if k not in present]))
            for table, name, columns, new in plans:
                insert = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                (self._db.keys_executemany if table in PG_KEY_TABLES else self._db.executemany)(insert, new)
                inserted[table] = len(new)
        return inserted


_KEYS = {"records": ("record_id",), "provenance": ("commitment", "model", "version"),
         "activations": ("commitment", "prefix_sha256", "sequence")}  # primary keys, for export and import


def _plain(row: Sequence) -> tuple:
    """A row with BLOB/BYTEA values as bytes (psycopg may hand back memoryviews)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


_SELECT = "SELECT record_id, subject_id, split, commitment, nonce, ciphertext FROM records"


def _seal(key: AESGCM, record: Record) -> tuple[bytes, bytes, bytes]:
    """(commitment, nonce, ciphertext) of a record under a fresh salt and nonce."""
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    plaintext = canonical_json({"prompt": record.prompt, "answer": record.answer, "salt": salt.hex()})
    return commitment(salt, record), nonce, key.encrypt(nonce, plaintext, _aad(record.record_id, record.subject_id))


def _open(record_id: str, subject_id: str, split: str, commit: bytes, nonce: bytes, ciphertext: bytes,
          data_key: bytes) -> StoredRecord:
    try:
        fields = json.loads(AESGCM(data_key).decrypt(nonce, ciphertext, _aad(record_id, subject_id)))
    except InvalidTag:
        raise CorruptState(f"record store corrupt: record {record_id!r} fails authentication") from None
    return StoredRecord(record_id, subject_id, fields["prompt"], fields["answer"], split, commit)


def _aad(record_id: str, subject_id: str) -> bytes:
    return canonical_json({"record_id": record_id, "subject_id": subject_id})


def _activation_aad(commit: bytes, prefix_sha256: str, sequence: str) -> bytes:
    return canonical_json({"commitment": commit.hex(), "prefix_sha256": prefix_sha256, "sequence": sequence})


def _check_prefix(prefix_sha256: str) -> None:
    if not (isinstance(prefix_sha256, str) and len(prefix_sha256) == 64
            and all(ch in "0123456789abcdef" for ch in prefix_sha256)):
        raise BadInput(f"prefix_sha256 must be 64 lowercase hex characters, not {prefix_sha256!r}")


def _check_sequence(sequence: str) -> None:
    if sequence not in SEQUENCES:
        raise BadInput(f"unknown activation sequence {sequence!r} (one of {', '.join(SEQUENCES)})")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise BadInput(f"unknown split {split!r} (one of {', '.join(SPLITS)})")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (spans both attached files)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


# The SQL-dialect seam. RecordStore writes SQLite's dialect (`?` placeholders, the keys' table
# named by `keys_table`, upserts as INSERT ... ON CONFLICT, which both speak); a backend runs
# it on the records' database (`execute`) or the keys' (`keys_execute`) and opens the
# transactions that span both.


class _SQLiteBackend:
    """records.db with record-keys.db ATTACHed as `keys`: one connection, one transaction."""

    keys_table = "keys.subject_keys"

    def __init__(self, records_db: Path, keys_db: Path):
        _create_private(records_db)
        _create_private(keys_db)
        self._db = sqlite3.connect(records_db, isolation_level=None)
        try:
            self._db.execute("ATTACH DATABASE ? AS keys", (str(keys_db),))
            # Rollback journals (not WAL) keep a transaction atomic across both files;
            # secure_delete overwrites erased rows and keys on disk.
            for schema in ("main", "keys"):
                self._db.execute(f"PRAGMA {schema}.journal_mode=DELETE")
                self._db.execute(f"PRAGMA {schema}.secure_delete=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            self._db.close()
            if type(err) is not sqlite3.DatabaseError:  # locked, unreadable: not corruption
                raise
            raise CorruptState(f"record store {records_db} or its key store {keys_db} is corrupt: {err} "
                               "(`erasure check` names the file)") from None

    def execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        self._db.executemany(sql, rows)

    keys_execute = execute
    keys_executemany = executemany

    def transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _PostgresBackend:
    """The records' database and the keys' database (another database, maybe another server):
    two connections (autocommit; BEGIN ... COMMIT where RecordStore opens a transaction).
    psycopg's errors become one line: the server unreachable or gone ServiceError, a table or
    column missing CorruptState."""

    keys_table = "subject_keys"

    def __init__(self, url: str, keys_url: str):
        import psycopg

        self._psycopg = psycopg
        self.where = f"record store database {redact_url(url)}"
        self.keys_where = f"record keys database {redact_url(keys_url)}"
        if not keys_url:
            raise BadInput("the record store on PostgreSQL needs a keys database URL (ERASURE_KEYS_DATABASE_URL)")
        self._db = self._connect(url, self.where)
        try:
            self._kdb = self._connect(keys_url, self.keys_where)
        except BaseException:
            self._db.close()
            raise
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _connect(self, url: str, where: str):  # type: ignore[no-untyped-def]
        try:
            return self._psycopg.connect(url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as err:
            raise _pg_error(err, where) from None

    def _prepare(self) -> None:
        """Refuse one database for both; create the tables when missing (under the writers' lock)."""
        where = "SELECT current_database(), inet_server_addr(), inet_server_port()"
        if self._run(self._db, where, (), self.where).fetchone() == \
                self._run(self._kdb, where, (), self.keys_where).fetchone():
            raise BadInput(f"{self.keys_where} is the records' own database: the data keys must live in "
                           "another one (a dump of the records alone must stay unreadable)")
        present = "SELECT to_regclass(?) IS NOT NULL"
        if all(self.execute(present, (t,)).fetchone()[0] for t in PG_TABLES) and \
                all(self.keys_execute(present, (t,)).fetchone()[0] for t in PG_KEY_TABLES):
            return
        with self.transaction():
            self._run(self._db, _PG_SCHEMA, None, self.where)
            self._run(self._kdb, _PG_KEYS_SCHEMA, None, self.keys_where)

    def _run(self, conn, sql: str, params: Sequence | None, where: str):  # type: ignore[no-untyped-def]
        try:
            return conn.execute(sql if params is None else sql.replace("?", "%s"), params)
        except self._psycopg.Error as err:
            raise _pg_error(err, where) from None

    def _run_many(self, conn, sql: str, rows: Iterable[Sequence], where: str) -> None:  # type: ignore[no-untyped-def]
        rows = list(rows)
        if not rows:
            return
        try:
            with conn.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)
        except self._psycopg.Error as err:
            raise _pg_error(err, where) from None

    def execute(self, sql: str, params: Sequence = ()):  # type: ignore[no-untyped-def]
        return self._run(self._db, sql, params, self.where)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        self._run_many(self._db, sql, rows, self.where)

    def keys_execute(self, sql: str, params: Sequence = ()):  # type: ignore[no-untyped-def]
        return self._run(self._kdb, sql, params, self.keys_where)

    def keys_executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        self._run_many(self._kdb, sql, rows, self.keys_where)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction in each database, the keys' committed first.

        No transaction spans both databases (PREPARE TRANSACTION would need
        max_prepared_transactions, off by default, and someone to resolve in-doubt
        transactions), so the order of the two commits decides what a failure between them
        leaves, and keys first is the order that never loses the guarantee:
        - a write that adds a key (ingest) commits the key before the rows sealed under it: cut
          off between the two, a key without rows is left (harmless; the next ingest of the
          subject reuses it, erase_subject deletes it), never rows no key opens;
        - an erasure deletes the key first, and that commit is the crypto-erasure: from then on
          every copy of the subject's rows (this database, its replicas, its dumps) is
          unreadable. Cut off before the rows' commit, the rows stay but are keyless: reads skip
          them (as SQLite's join did), and a retry of the erasure (the caller saw it fail)
          deletes them. Rows first would instead leave, for as long as nobody retries, a live
          key that opens every earlier dump of the rows.
        Writers are serialised by a transaction-scoped advisory lock in the records' database
        (as BEGIN IMMEDIATE does in SQLite), taken before the keys' transaction opens: one lock
        order, so no deadlock between the two databases.
        """
        try:
            self.execute("BEGIN")
            self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))
            self.keys_execute("BEGIN")
            yield
            self.keys_execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.execute("COMMIT")

    def _rollback(self) -> None:
        for conn in (self._kdb, self._db):
            try:
                if conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
            except self._psycopg.Error:
                pass  # the connection is gone: the server rolls back

    def close(self) -> None:
        for conn in (self._db, getattr(self, "_kdb", None)):
            if conn is not None:
                conn.close()


def check_postgres(url: str, keys_url: str) -> list[tuple[str, str, str | None]]:
    """`erasure check` of the record store on PostgreSQL: (store, database, problem or None) for
    the records' database and the keys' database, or [] when neither holds a table yet (a new
    deployment). ServiceError when a database does not answer (not a corrupt store)."""
    import psycopg

    found: list[dict[str, set[str]]] = []
    identity = []
    for where, target in ((f"record store database {redact_url(url)}", url),
                          (f"record keys database {redact_url(keys_url)}", keys_url)):
        try:
            with psycopg.connect(target, connect_timeout=10) as db:
                columns: dict[str, set[str]] = {}
                for table, column in db.execute("SELECT table_name, column_name FROM information_schema.columns "
                                                "WHERE table_schema = current_schema()"):
                    columns.setdefault(table, set()).add(column)
                identity.append(db.execute("SELECT current_database(), inet_server_addr(), inet_server_port()")
                                .fetchone())
        except psycopg.Error as err:
            raise _pg_error(err, where) from None
        found.append(columns)
    records, keys = found
    if not (set(PG_TABLES) & records.keys() or set(PG_KEY_TABLES) & keys.keys()):
        return []

    def problem(expected: dict[str, tuple[str, ...]], columns: dict[str, set[str]]) -> str | None:
        for table, wanted in expected.items():
            if table not in columns:
                return f"no table {table}"
            missing = [c for c in wanted if c not in columns[table]]
            if missing:
                return f"table {table} lacks column {', '.join(missing)}"
        return None

    keys_problem = problem(PG_KEY_TABLES, keys)
    if identity[0] == identity[1]:
        keys_problem = "the records' own database: the data keys must live in another one"
    return [("records", redact_url(url), problem(PG_TABLES, records)),
            ("record keys", redact_url(keys_url), keys_problem)]


def redact_url(url: str) -> str:
    """A database URL to print: no password (if it holds one), no query (`?passfile=`...)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    return urlunsplit(parts._replace(query="", fragment=""))


def _pg_error(err: Exception, where: str) -> ErasureError:
    """One line for a psycopg error (its messages run over several lines)."""
    import psycopg

    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
        return ServiceError(f"{where} unavailable: {first}")
    if isinstance(err, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
        return CorruptState(f"{where} lacks the record store's schema: {first} (`erasure check`)")
    return ServiceError(f"{where} error: {first}")
