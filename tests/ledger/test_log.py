"""The SQLite-backed ledger: entries, idempotency, proofs from stored hashes, checkpoints, crashes."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from ledger import merkle
from ledger.audit import audit_log
from ledger.canonical import canonical_json
from ledger.errors import BadInput, CorruptState, VerificationFailed
from ledger.log import Ledger
from ledger.note import Signer, verify_checkpoint
from ledger.proofs import verify_tlog_proof
from ledger.store import SqliteStore


def leaf_hashes(ledger: Ledger) -> list[bytes]:
    return [merkle.leaf_hash(data) for _, data in ledger.entries()]


def test_entries_are_canonical_with_type_v_at(ledger: Ledger) -> None:
    index = ledger.append("request_received", {"request_id": "r-1", "subject": "é"})
    data = ledger.entry(index)
    entry = json.loads(data)
    assert set(entry) == {"request_id", "subject", "type", "v", "at"}
    assert (entry["type"], entry["v"]) == ("request_received", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["at"])
    assert data == canonical_json(entry) and "é".encode() in data


@pytest.mark.parametrize(
    ("entry_type", "data", "reason"),
    [
        ("Bad Type", {}, "entry type"),
        ("ok", {"type": "x"}, "may not set type"),
        ("ok", {"x": 1.5}, "floats"),
        ("ok", {1: "x"}, "keys must be strings"),
        ("ok", [], "JSON object"),
    ],
)
def test_bad_entries(ledger: Ledger, entry_type, data, reason: str) -> None:
    with pytest.raises(BadInput, match=reason):
        ledger.append(entry_type, data)
    assert ledger.size == 0


def test_idempotent_append_under_redelivery(ledger: Ledger) -> None:
    first = ledger.append("request_received", {"request_id": "r-1"}, natural_key="r-1")
    # Kafka redelivers the same message, alone and inside a later batch.
    again = ledger.append("request_received", {"request_id": "r-1"}, natural_key="r-1")
    batch = ledger.append_many(
        [("request_received", {"request_id": "r-2"}, "r-2"), ("request_received", {"request_id": "r-1"}, "r-1"),
         ("request_received", {"request_id": "r-2"}, "r-2"), ("plan", {"n": 1})]
    )
    assert (first, again) == (0, 0)
    assert batch == [1, 0, 1, 2]
    assert ledger.size == 3
    # A reopened ledger (a restarted consumer) still knows the key.
    path = ledger.store.path
    with Ledger.open(path, ledger.origin) as reopened:
        assert reopened.append("request_received", {"request_id": "r-1"}, "r-1") == 0
        assert reopened.size == 3


def test_proofs_from_storage_match_the_in_memory_tree(ledger: Ledger) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(45)])
    hashes = leaf_hashes(ledger)
    for size in (1, 2, 7, 8, 32, 33, 45):
        assert ledger.root(size) == merkle.root(hashes[:size])
        for index in range(size):
            proof = ledger.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(hashes[:size], index)
            merkle.verify_inclusion(index, size, merkle.leaf_hash(ledger.entry(index)), proof, ledger.root(size))
        for old in range(size + 1):
            proof = ledger.consistency_proof(old, size)
            merkle.verify_consistency(old, size, proof, ledger.root(old), ledger.root(size))
    with pytest.raises(BadInput):
        ledger.inclusion_proof(45)
    with pytest.raises(BadInput):
        ledger.inclusion_proof(0, 46)
    with pytest.raises(BadInput):
        ledger.consistency_proof(10, 5)


def test_store_holds_exactly_the_perfect_subtrees(ledger: Ledger) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(13)])
    ledger.append_many([("e", {"i": i}) for i in range(13, 29)])
    db = sqlite3.connect(ledger.store.path)
    positions = [p for (p,) in db.execute("SELECT pos FROM hashes ORDER BY pos")]
    assert positions == list(range(merkle.stored_count(29)))


def test_checkpoints(ledger: Ledger, signer: Signer, origin: str) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(5)])
    note = ledger.checkpoint()
    checkpoint = verify_checkpoint(note, [signer.verifier], origin)
    assert (checkpoint.size, checkpoint.root) == (5, ledger.root())
    assert ledger.checkpoint() == note == ledger.latest_checkpoint()
    ledger.append("e", {"i": 5})
    assert verify_checkpoint(ledger.checkpoint(), [signer.verifier], origin).size == 6


def test_checkpoint_needs_a_key_named_after_the_origin(tmp_path: Path, origin: str, signer: Signer) -> None:
    with Ledger.open(tmp_path / "l.db", origin) as unsigned:
        with pytest.raises(BadInput, match="signing key"):
            unsigned.checkpoint()
    with pytest.raises(BadInput, match="not named after"):
        Ledger.open(tmp_path / "l.db", origin, Signer("someone.else/log", signer.private_key))
    with pytest.raises(BadInput, match="has origin"):
        Ledger.open(tmp_path / "l.db", "someone.else/log")


def test_refuses_to_sign_an_inconsistent_checkpoint(ledger: Ledger) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(6)])
    ledger.checkpoint()
    ledger.append("e", {"i": 6})
    db = sqlite3.connect(ledger.store.path)
    hashes = leaf_hashes(ledger)
    hashes[2] = merkle.leaf_hash(b"forged")
    forged = merkle.MemoryTree(hashes)
    with db:  # rewrite history below the signed checkpoint: leaf 2 and the stored hashes above it
        for level, index in [(0, 2), (1, 1), (2, 0)]:
            db.execute(
                "UPDATE hashes SET hash = ? WHERE pos = ?",
                (forged.read([(level, index)])[0], merkle.stored_index(level, index)),
            )
    db.close()
    with pytest.raises(VerificationFailed, match="refusing to sign a checkpoint of size 7: not consistent"):
        ledger.checkpoint()


def test_refuses_to_sign_after_a_rollback(ledger: Ledger) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(6)])
    ledger.checkpoint()
    db = sqlite3.connect(ledger.store.path)
    with db:
        db.execute("DELETE FROM entries WHERE idx >= 4")
    db.close()
    with pytest.raises(VerificationFailed, match="shorter than its last checkpoint"):
        ledger.checkpoint()


class Crash(Exception):
    pass


def test_crash_inside_an_append_leaves_nothing(ledger: Ledger, signer: Signer, origin: str, monkeypatch) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(3)])
    ledger.checkpoint()

    def crash(self, rows):
        raise Crash  # the entries are written, their hashes are not

    monkeypatch.setattr("ledger.store._SqliteView.insert_hashes", crash)
    with pytest.raises(Crash):
        ledger.append_many([("e", {"i": i}) for i in range(3, 10)])
    monkeypatch.undo()
    assert ledger.size == 3
    assert audit_log(ledger.store, [signer.verifier], origin).entries == 3


def test_crash_between_append_and_checkpoint(ledger: Ledger, signer: Signer, origin: str, monkeypatch) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(4)])
    ledger.checkpoint()
    ledger.append_many([("e", {"i": i}) for i in range(4, 9)])

    def crash(self, size, note):
        raise Crash  # the process dies while storing the signed checkpoint

    monkeypatch.setattr("ledger.store._SqliteView.insert_checkpoint", crash)
    with pytest.raises(Crash):
        ledger.checkpoint()
    monkeypatch.undo()
    # The log is consistent: the old checkpoint covers a prefix, the new entries are unsigned.
    report = audit_log(ledger.store, [signer.verifier], origin)
    assert (report.entries, report.checkpoint_size, report.unsigned_entries) == (9, 4, 5)
    # After a restart the next checkpoint covers them.
    with Ledger.open(ledger.store.path, origin, signer) as restarted:
        assert verify_checkpoint(restarted.checkpoint(), [signer.verifier], origin).size == 9
    assert audit_log(ledger.store, [signer.verifier], origin).unsigned_entries == 0


def test_tlog_proof(ledger: Ledger, signer: Signer, origin: str) -> None:
    ledger.append_many([("e", {"i": i}) for i in range(10)])
    proof = ledger.tlog_proof(7)  # signs a checkpoint, none covers 7 yet
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 7\n")
    checkpoint = verify_tlog_proof(proof, ledger.entry(7), [signer.verifier], origin)
    assert checkpoint.size == 10
    with pytest.raises(VerificationFailed, match="inclusion proof"):
        verify_tlog_proof(proof, ledger.entry(6), [signer.verifier], origin)
    ledger.append("e", {"i": 10})
    assert ledger.tlog_proof(3).endswith(ledger.latest_checkpoint())  # still size 10: covers 3
    with pytest.raises(BadInput):
        ledger.tlog_proof(11)


_WRITER = """
import sys
from pathlib import Path
from ledger.log import Ledger
with Ledger.open(Path(sys.argv[1]), sys.argv[2]) as log:
    for i in range(60):
        log.append_many([("e", {"w": sys.argv[3], "i": i}), ("e", {"w": sys.argv[3], "j": i}, f"{sys.argv[3]}-{i}")])
"""


def test_concurrent_writers_are_serialised(ledger: Ledger, signer: Signer, origin: str) -> None:
    ledger.append("e", {})
    path = str(ledger.store.path)
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, path, origin, name]) for name in ("a", "b")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    assert ledger.size == 1 + 2 * 120
    ledger.checkpoint()
    assert audit_log(ledger.store, [signer.verifier], origin).entries == 241


def test_read_only_open_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no ledger"):
        SqliteStore.open(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(CorruptState, match="junk.db is corrupt: file is not a database"):
        SqliteStore.open(tmp_path / "junk.db", "o.example/log")


class MemoryStore:
    """A second LogStore: the Ledger and the auditor need nothing beyond the protocol."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.rows: dict[int, tuple[bytes, str | None]] = {}
        self.hashes: dict[int, bytes] = {}
        self.notes: dict[int, str] = {}

    @contextmanager
    def reading(self):
        yield self

    writing = reading

    def close(self) -> None:
        pass

    def size(self) -> int:
        return max(self.rows, default=-1) + 1

    def entries(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        return [(i, self.rows[i][0]) for i in sorted(self.rows) if start <= i < stop]

    def iter_entries(self):
        return iter(self.entries(0, self.size()))

    def read_hashes(self, positions):
        return [self.hashes[p] for p in positions]

    def iter_hashes(self):
        return iter(sorted(self.hashes.items()))

    def find_keys(self, keys):
        return {k: i for i, (_, k) in self.rows.items() if k in keys}

    def checkpoints(self):
        return sorted(self.notes.items())

    def latest_checkpoint(self):
        return max(self.notes.items(), default=None)

    def insert_entries(self, rows) -> None:
        self.rows.update((i, (data, key)) for i, data, key in rows)

    def insert_hashes(self, rows) -> None:
        self.hashes.update(rows)

    def insert_checkpoint(self, size: int, note: str) -> None:
        self.notes[size] = note


def test_another_store_backend(signer: Signer, origin: str) -> None:
    store = MemoryStore(origin)
    ledger = Ledger(store, signer)
    assert ledger.append_many([("e", {"i": i}, f"k{i % 7}") for i in range(20)])[7:9] == [0, 1]
    ledger.checkpoint()
    ledger.append("e", {"i": 20})
    ledger.checkpoint()
    hashes = [merkle.leaf_hash(store.rows[i][0]) for i in range(8)]
    assert ledger.root() == merkle.root(hashes)
    assert verify_tlog_proof(ledger.tlog_proof(3), store.rows[3][0], [signer.verifier], origin).size == 8
    assert audit_log(store, [signer.verifier], origin).checkpoints == 2
