"""The encrypted record store (SQLite in the workspace) and record commitments (design §4).

- `records.db` holds one row per record: ids, split, commitment and the AES-256-GCM
  ciphertext of (prompt, answer, salt) under the subject's own data key.
- The data keys live in their own table in a separate file in the key directory
  (`record-keys.db`, attached to the same connection), so a backup of `records.db` alone
  is unreadable and erasing a subject (rows + key, one transaction) crypto-shreds every copy.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.canonical import canonical_json
from ledger.errors import BadInput, VerificationFailed
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
        _create_private(records_db)
        _create_private(keys_db)
        self._db = sqlite3.connect(records_db, isolation_level=None)
        self._db.execute("ATTACH DATABASE ? AS keys", (str(keys_db),))
        # Rollback journals (not WAL) keep a transaction atomic across both files;
        # secure_delete overwrites erased rows and keys on disk.
        for schema in ("main", "keys"):
            self._db.execute(f"PRAGMA {schema}.journal_mode=DELETE")
            self._db.execute(f"PRAGMA {schema}.secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self.partition = partition

    @classmethod
    def open(cls, workspace: Workspace) -> "RecordStore":
        workspace.ensure()
        return cls(workspace.records_db, workspace.key_dir / "record-keys.db", Partition.for_workspace(workspace))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)

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
        row = self._db.execute("SELECT data_key FROM keys.subject_keys WHERE subject_id = ?", (subject_id,)).fetchone()
        if row:
            return row[0]
        key = AESGCM.generate_key(bit_length=256)
        self._db.execute("INSERT INTO keys.subject_keys VALUES (?, ?)", (subject_id, key))
        return key

    def records(self, split: str | None = None) -> list[StoredRecord]:
        """Decrypted records, sorted by record id (optionally of one split)."""
        _check_split(split)
        rows = self._db.execute(_SELECT + (" WHERE r.split = ?" if split else "") + " ORDER BY r.record_id",
                                (split,) if split else ())
        return [_open(*row) for row in rows]

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
        planner use from then on.
        """
        with self._transaction():
            commitments = sorted(
                c for (c,) in self._db.execute("SELECT commitment FROM records WHERE subject_id = ?", (subject_id,))
            )
            keys = self._db.execute("DELETE FROM keys.subject_keys WHERE subject_id = ?", (subject_id,)).rowcount
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
                self._db.execute("DELETE FROM keys.subject_keys WHERE subject_id = ?", (subject_id,))
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
            self._db.executemany(
                "DELETE FROM keys.subject_keys WHERE subject_id = ? "
                "AND NOT EXISTS (SELECT 1 FROM records WHERE subject_id = ?)", [(s, s) for s in subjects])

    def record(self, record_id: str) -> StoredRecord:
        """One decrypted record; BadInput if the store does not hold it."""
        row = self._db.execute(_SELECT + " WHERE r.record_id = ?", (record_id,)).fetchone()
        if row is None:
            raise BadInput(f"unknown record {record_id!r}: the record store does not hold it")
        return _open(*row)

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
                "INSERT OR REPLACE INTO provenance VALUES (?, ?, ?, ?, ?, ?, ?)",
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
                    row = self._db.execute(
                        "SELECT k.data_key FROM records r JOIN keys.subject_keys k USING (subject_id) "
                        "WHERE r.commitment = ?", (c,)).fetchone()
                    keys[c] = AESGCM(row[0]) if row else None
                    self._db.execute("DELETE FROM activations WHERE commitment = ? AND prefix_sha256 != ?",
                                     (c, prefix_sha256))
                key = keys[c]
                if key is None:
                    continue
                nonce = secrets.token_bytes(12)
                self._db.execute("INSERT OR REPLACE INTO activations VALUES (?, ?, ?, ?, ?)", (
                    c, prefix_sha256, sequence, nonce,
                    key.encrypt(nonce, payload, _activation_aad(c, prefix_sha256, sequence))))
                stored.add((c, sequence))
        return len(stored)

    def activations(self, prefix_sha256: str, commitments: Iterable[bytes]) -> dict[tuple[bytes, str], bytes]:
        """(commitment, sequence) -> decrypted payload of the activations cached under
        `prefix_sha256` for these commitments; VerificationFailed if a row fails authentication."""
        _check_prefix(prefix_sha256)
        out: dict[tuple[bytes, str], bytes] = {}
        for c in set(commitments):
            for sequence, nonce, ciphertext, data_key in self._db.execute(
                "SELECT a.sequence, a.nonce, a.ciphertext, k.data_key FROM activations a "
                "JOIN records r USING (commitment) JOIN keys.subject_keys k USING (subject_id) "
                "WHERE a.commitment = ? AND a.prefix_sha256 = ?", (c, prefix_sha256)
            ):
                try:
                    out[c, sequence] = AESGCM(data_key).decrypt(
                        nonce, ciphertext, _activation_aad(c, prefix_sha256, sequence))
                except InvalidTag:
                    raise VerificationFailed(
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


_SELECT = ("SELECT r.record_id, r.subject_id, r.split, r.commitment, r.nonce, r.ciphertext, k.data_key "
           "FROM records r JOIN keys.subject_keys k USING (subject_id)")


def _seal(key: AESGCM, record: Record) -> tuple[bytes, bytes, bytes]:
    """(commitment, nonce, ciphertext) of a record under a fresh salt and nonce."""
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    plaintext = canonical_json({"prompt": record.prompt, "answer": record.answer, "salt": salt.hex()})
    return commitment(salt, record), nonce, key.encrypt(nonce, plaintext, _aad(record.record_id, record.subject_id))


def _open(record_id: str, subject_id: str, split: str, commit: bytes, nonce: bytes, ciphertext: bytes,
          data_key: bytes) -> StoredRecord:
    fields = json.loads(AESGCM(data_key).decrypt(nonce, ciphertext, _aad(record_id, subject_id)))
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
