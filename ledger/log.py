"""The provenance ledger: an append-only RFC 6962 log with signed C2SP checkpoints.

Each append is one transaction holding the entries and every tree hash they complete, so the
stored tree always matches the stored entries. A checkpoint only ever covers a prefix of the
log: a crash after an append and before its checkpoint leaves a consistent log whose next
checkpoint covers the new entries. The log never signs a checkpoint that is not consistent
with the last one it signed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.canonical import canonical_json
from ledger.errors import BadInput, ErasureError, VerificationFailed
from ledger.keys import key_name, load_signer
from ledger.merkle import (
    CompactRange,
    HashReader,
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    stored_count,
    stored_index,
    tree_root,
    verify_consistency,
)
from ledger.note import Checkpoint, Signer, add_signatures, parse_checkpoint, parse_note, sign_checkpoint
from ledger.proofs import format_tlog_proof
from ledger.store import LogReader, LogStore, SqliteStore, hash_reader
from ledger.tiles.layout import MAX_ENTRY_BYTES
from ledger.objects import ObjectStore
from ledger.tiles.publish import Target, open_target, publish, tiles_target
from ledger.witness.collect import Cosigning
from ledger.workspace import Workspace

ENTRY_VERSION = 1
log = logging.getLogger("erasure.ledger")
RESERVED_FIELDS = ("type", "v", "at")
_ENTRY_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")

NewEntry = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str | None]


def utc_now() -> str:
    """RFC 3339 UTC timestamp with millisecond precision and a `Z` suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_entry(entry_type: str, data: dict[str, Any], at: str) -> bytes:
    if not isinstance(entry_type, str) or not _ENTRY_TYPE.fullmatch(entry_type):
        raise BadInput(f"entry type {entry_type!r} must match {_ENTRY_TYPE.pattern}")
    if not isinstance(data, dict):
        raise BadInput(f"entry data must be a JSON object, not {type(data).__name__}")
    reserved = sorted(set(RESERVED_FIELDS) & data.keys())
    if reserved:
        raise BadInput(f"entry data may not set {', '.join(reserved)}: the ledger sets them")
    return canonical_json({**data, "type": entry_type, "v": ENTRY_VERSION, "at": at})


class Ledger:
    def __init__(self, store: LogStore, signer: Signer | None = None) -> None:
        if signer is not None and signer.name != store.origin:
            raise BadInput(f"signing key {signer.name!r} is not named after the log origin {store.origin!r}")
        self.store = store
        self.signer = signer
        self.publish_to: Target | None = None  # where each checkpoint publishes the log as tiles
        self.witnesses: Cosigning | None = None  # who cosigns each checkpoint

    @classmethod
    def open(cls, path: Path, origin: str, signer: Signer | None = None, create: bool = True) -> "Ledger":
        return cls(SqliteStore.open(path, origin, create), signer)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        return self.store.origin

    @property
    def size(self) -> int:
        with self.store.reading() as view:
            return view.size()

    def append(self, entry_type: str, data: dict[str, Any], natural_key: str | None = None) -> int:
        """Append one entry; an entry with the same natural key already logged returns its index."""
        return self.append_many([(entry_type, data, natural_key)])[0]

    def append_many(self, items: Sequence[NewEntry]) -> list[int]:
        """Append (type, data[, natural key]) items in one transaction; returns their indices.
        BadInput, with nothing logged, if an entry is over MAX_ENTRY_BYTES."""
        at = utc_now()
        prepared = []
        for item in items:
            entry_type, data, key = (*item, None) if len(item) == 2 else item
            if key is not None and (not isinstance(key, str) or not key):
                raise BadInput("a natural key must be a non-empty string")
            entry = make_entry(entry_type, data, at)
            if len(entry) > MAX_ENTRY_BYTES:  # the log could no longer be published as tiles
                raise BadInput(f"a {entry_type} entry of {len(entry)} bytes is over the {MAX_ENTRY_BYTES} bytes a "
                               "tlog-tiles entry bundle holds: nothing logged")
            prepared.append((key, entry, leaf_hash(entry)))
        with self.store.writing() as view:
            known = view.find_keys([key for key, _, _ in prepared if key is not None])
            size = view.size()
            compact = CompactRange.load(hash_reader(view), size)
            indices, entries, hashes = [], [], []
            for key, entry, leaf in prepared:
                if key in known:
                    indices.append(known[key])
                    continue
                index = compact.size
                position = stored_count(index)
                hashes.extend((position + i, h) for i, h in enumerate(compact.append(leaf)))
                entries.append((index, entry, key))
                indices.append(index)
                if key is not None:
                    known[key] = index
            view.insert_entries(entries)
            view.insert_hashes(hashes)
        return indices

    def find(self, natural_key: str) -> int | None:
        """The index of the entry logged under `natural_key`, if any."""
        with self.store.reading() as view:
            return view.find_keys([natural_key]).get(natural_key)

    def entry(self, index: int) -> bytes:
        """The entry's stored bytes, verbatim (hash these, never a re-serialisation)."""
        with self.store.reading() as view:
            rows = view.entries(index, index + 1)
        if not rows:
            raise BadInput(f"no entry {index} in the log")
        return rows[0][1]

    def entries(self, start: int = 0, limit: int | None = None) -> list[tuple[int, bytes]]:
        with self.store.reading() as view:
            stop = view.size() if limit is None else start + limit
            return view.entries(start, stop)

    def _size_or_current(self, view: LogReader, size: int | None) -> int:
        current = view.size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise BadInput(f"tree size {size} is outside 0..{current}")
        return size

    def root(self, size: int | None = None) -> bytes:
        with self.store.reading() as view:
            return tree_root(hash_reader(view), self._size_or_current(view, size))

    def leaf_hash(self, index: int) -> bytes:
        with self.store.reading() as view:
            if not 0 <= index < view.size():
                raise BadInput(f"no entry {index} in the log")
            return view.read_hashes([stored_index(0, index)])[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        with self.store.reading() as view:
            size = self._size_or_current(view, size)
            if not 0 <= index < size:
                raise BadInput(f"entry {index} is not in a tree of size {size}")
            return prove_inclusion(hash_reader(view), index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        with self.store.reading() as view:
            size2 = self._size_or_current(view, size2)
            if not 0 <= size1 <= size2:
                raise BadInput(f"size {size1} is outside 0..{size2}")
            return prove_consistency(hash_reader(view), size1, size2)

    def latest_checkpoint(self) -> str | None:
        with self.store.reading() as view:
            latest = view.latest_checkpoint()
        return None if latest is None else latest[1]

    def checkpoint(self) -> str:
        """Sign (and store) a checkpoint for the current size; returns the signed note."""
        if self.signer is None:
            raise BadInput("no ledger signing key: run `erasure keys init`")
        with self.store.writing() as view:
            size = view.size()
            latest = view.latest_checkpoint()
            previous = size
            if latest is not None and latest[0] == size:
                note = latest[1]
            else:
                previous = 0 if latest is None else latest[0]
                read = hash_reader(view)
                root = tree_root(read, size)
                if latest is not None:
                    _check_extends(read, _unverified_checkpoint(latest[1]), size, root)
                note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
                view.insert_checkpoint(size, note)
        if self.witnesses is not None:  # also when nothing is new: a witness that was away may cosign now
            note = self._cosign(note, size, previous)
        if self.publish_to is not None:  # also when nothing is new: a publish a crash left undone
            self._publish()
        return note

    def _publish(self) -> None:
        """Publish the tiles; a failure costs one warning line, never the checkpoint (the next
        checkpoint publishes again; `erasure ledger publish` reports it as an error)."""
        assert self.publish_to is not None
        try:
            self.publish_to = open_target(self.publish_to)  # opened once (an S3 client costs a moment)
            publish(self.store, self.publish_to)
        except ErasureError as err:
            where = self.publish_to.url if isinstance(self.publish_to, ObjectStore) else self.publish_to
            log.warning("the ledger's tiles in %s are not updated: %s", where, err)

    def _cosign(self, note: str, size: int, previous: int) -> str:
        """The note with the cosignatures the witnesses give it, stored in its place."""
        assert self.witnesses is not None
        signatures = self.witnesses.collect(note, previous, self.consistency_proof)
        if not signatures:
            return note
        cosigned = add_signatures(note, signatures)
        with self.store.writing() as view:
            if not view.replace_checkpoint(size, note, cosigned):  # another process cosigned it meanwhile
                return note
        return cosigned

    def tlog_proof(self, index: int) -> str:
        """C2SP tlog-proof for entry `index` against the newest checkpoint (signing one if needed)."""
        note = self.latest_checkpoint()
        if note is None or _unverified_checkpoint(note).size <= index:
            note = self.checkpoint()
        return format_tlog_proof(index, self.inclusion_proof(index, _unverified_checkpoint(note).size), note)


def _unverified_checkpoint(note: str) -> Checkpoint:
    """A checkpoint this log signed itself; verifying its signature is the auditor's job."""
    return parse_checkpoint(parse_note(note).text)


def _check_extends(read: HashReader, previous: Checkpoint, size: int, root: bytes) -> None:
    """Refuse to sign unless the tree of `size` provably extends the previously signed one."""
    refusal = f"refusing to sign a checkpoint of size {size}"
    if previous.size > size:
        raise VerificationFailed(f"{refusal}: the log is shorter than its last checkpoint (size {previous.size})")
    try:
        verify_consistency(previous.size, size, prove_consistency(read, previous.size, size), previous.root, root)
    except VerificationFailed as err:
        raise VerificationFailed(f"{refusal}: not consistent with the checkpoint of size {previous.size}: {err}") from None


def open_log_store(workspace: Workspace, origin: str | None = None, create: bool = True) -> LogStore:
    """The workspace's log: on PostgreSQL when it has a database URL (`Workspace.database_url`),
    else the embedded SQLite file `ledger.db`. Every caller opening the workspace's ledger uses this."""
    url = workspace.database_url()
    if url is None:
        return SqliteStore.open(workspace.ledger_db, origin, create)
    from ledger.postgres_store import PostgresStore  # psycopg: not in the auditor's base install

    return PostgresStore.open(url, origin, create)


def log_exists(workspace: Workspace) -> bool:
    """Whether the workspace has a ledger yet, creating nothing (ServiceError: the database is down)."""
    url = workspace.database_url()
    if url is None:
        return workspace.ledger_db.exists()
    from ledger.postgres_store import PostgresStore

    return PostgresStore.exists(url)


def log_location(workspace: Workspace) -> str:
    """Where the workspace's ledger is, for messages: the file, or the database (no credentials)."""
    url = workspace.database_url()
    if url is None:
        return str(workspace.ledger_db)
    from ledger.postgres_store import describe

    return describe(url)


def open_ledger(workspace: Workspace, sign: bool = False, create: bool = True) -> Ledger:
    """The workspace's ledger; with `sign`, loaded with the ledger key so it can checkpoint."""
    origin = key_name(workspace, "ledger")
    signer = load_signer(workspace, "ledger") if sign else None
    if create:
        workspace.ensure()
    ledger = Ledger(open_log_store(workspace, origin, create), signer)  # ledger.db, or PostgreSQL when shared
    ledger.publish_to = tiles_target(workspace)
    if sign:
        ledger.witnesses = Cosigning.configured(workspace)
    return ledger
