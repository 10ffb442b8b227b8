"""The encrypted record store: commitments, per-subject keys, crypto-shredding, provenance."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import sqlite3
import stat

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.errors import BadInput
from unlearning.data.records import Provenance, Record, RecordStore, commitment
from unlearning.data.secrets import subject_tag, workspace_secret


def _keys_db(workspace):
    return workspace.key_dir / "record-keys.db"


def test_round_trip_and_commitment_format(workspace, records):
    given = records(subjects=4, per_subject=3)
    with RecordStore.open(workspace) as store:
        assert store.ingest(given) == 12
        stored = store.records()
    assert [(r.record_id, r.subject_id, r.prompt, r.answer) for r in stored] == sorted(
        (r.record_id, r.subject_id, r.prompt, r.answer) for r in given)
    # Recompute one commitment from its decrypted salt: SHA-256(domain || salt || canonical bytes).
    first = stored[0]
    db = sqlite3.connect(workspace.records_db)
    nonce, ciphertext = db.execute("SELECT nonce, ciphertext FROM records WHERE record_id = ?",
                                   (first.record_id,)).fetchone()
    key = sqlite3.connect(_keys_db(workspace)).execute(
        "SELECT data_key FROM subject_keys WHERE subject_id = ?", (first.subject_id,)).fetchone()[0]
    aad = json.dumps({"record_id": first.record_id, "subject_id": first.subject_id},
                     separators=(",", ":"), sort_keys=True).encode()
    salt = bytes.fromhex(json.loads(AESGCM(key).decrypt(nonce, ciphertext, aad))["salt"])
    canonical = json.dumps({"answer": first.answer, "prompt": first.prompt, "record_id": first.record_id,
                            "subject_id": first.subject_id}, separators=(",", ":"), sort_keys=True).encode()
    assert len(salt) == 32
    assert first.commitment == hashlib.sha256(b"erasure/record/v1" + salt + canonical).digest()
    assert first.commitment == commitment(salt, Record(first.record_id, first.subject_id, first.prompt, first.answer))
    assert len({r.commitment for r in stored}) == 12  # salted: all distinct


def test_plaintext_never_on_disk_and_files_private(workspace, records):
    given = records(subjects=2, per_subject=2)
    with RecordStore.open(workspace) as store:
        store.ingest(given)
    data = workspace.records_db.read_bytes()
    assert given[0].prompt.encode() not in data
    assert b"Liked:" not in data
    for path in (workspace.records_db, _keys_db(workspace), workspace.key_dir / "partition.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Every subject has its own data key.
    keys = sqlite3.connect(_keys_db(workspace)).execute("SELECT subject_id, data_key FROM subject_keys").fetchall()
    assert len(keys) == 2 and len({k for _, k in keys}) == 2 and all(len(k) == 32 for _, k in keys)


def test_erase_subject_crypto_shreds(workspace, records):
    given = records(subjects=3, per_subject=4)
    with RecordStore.open(workspace) as store:
        store.ingest(given)
        before = {r.record_id: r.commitment for r in store.records()}
        backup = workspace.home / "backup-records.db"
        shutil.copy(workspace.records_db, backup)  # a backup taken before the erasure

        erased = store.erase_subject("user1")

        expected = sorted(c for rid, c in before.items() if rid.startswith("rec-1-"))
        assert erased == expected and len(erased) == 4
        assert "user1" not in store.subjects()
        assert {r.subject_id for r in store.records()} == {"user0", "user2"}
        with pytest.raises(BadInput, match="unknown subject"):
            store.erase_subject("user1")

    # The backup still holds user1's ciphertexts, but no key for them exists anywhere.
    rows = sqlite3.connect(backup).execute(
        "SELECT record_id, nonce, ciphertext FROM records WHERE subject_id = 'user1'").fetchall()
    assert len(rows) == 4
    keys = sqlite3.connect(_keys_db(workspace)).execute("SELECT subject_id, data_key FROM subject_keys").fetchall()
    assert "user1" not in {s for s, _ in keys}
    record_id, nonce, ciphertext = rows[0]
    aad = json.dumps({"record_id": record_id, "subject_id": "user1"}, separators=(",", ":"), sort_keys=True).encode()
    for _, other_key in keys:
        with pytest.raises(InvalidTag):
            AESGCM(other_key).decrypt(nonce, ciphertext, aad)


def test_ingest_is_all_or_nothing(workspace, records):
    given = records(subjects=2, per_subject=2)
    with RecordStore.open(workspace) as store:
        store.ingest(given[:1])
        with pytest.raises(BadInput, match="already in the store"):
            store.ingest(given)  # given[0] is a duplicate
        with pytest.raises(BadInput, match="appears twice"):
            store.ingest([given[1], given[1]])
        assert store.stats()["records"] == 1
        assert len(sqlite3.connect(_keys_db(workspace)).execute("SELECT * FROM subject_keys").fetchall()) == 1


def test_stats_and_subject_splits(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=40, per_subject=2))
        stats = store.stats()
        assert stats["records"] == 80 and stats["subjects"] == 40
        assert sum(s["subjects"] for s in stats["splits"].values()) == 40
        per_split = {split: set(store.subjects(split)) for split in ("train", "valid", "test")}
        assert set().union(*per_split.values()) == set(store.subjects())
        assert sum(len(s) for s in per_split.values()) == 40  # each subject in exactly one split
        for split, subjects in per_split.items():
            assert {r.subject_id for r in store.records(split)} == subjects
        with pytest.raises(BadInput, match="unknown split"):
            store.subjects("bogus")


def test_explicit_split_for_every_record_of_an_ingest(workspace, records):
    """A chronological split puts one subject's records into several splits: the caller names
    the split of each ingest; the subject keeps one data key."""
    given = records(subjects=2, per_subject=3)
    with RecordStore.open(workspace) as store:
        with pytest.raises(BadInput, match="unknown split 'later'"):
            store.ingest(given[:2], split="later")
        store.ingest(given[:2], split="train")
        store.ingest(given[2:3], split="valid")
        store.ingest(given[3:], split="test")
        assert [r.split for r in store.records()] == ["train", "train", "valid", "test", "test", "test"]
        assert store.subjects("train") == [given[0].subject_id]
        assert given[0].subject_id in store.subjects("valid")
    assert len(sqlite3.connect(_keys_db(workspace)).execute("SELECT * FROM subject_keys").fetchall()) == 2


def test_provenance_by_commitment(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=1, per_subject=2))
        a, b = store.records()
        store.add_provenance([Provenance(a.commitment, "m", 1, "shard0-slice0", 0, 0, "train")])
        assert store.provenance([a.commitment, b.commitment]) == [
            Provenance(a.commitment, "m", 1, "shard0-slice0", 0, 0, "train")]


def test_subject_tag_is_keyed_hmac(workspace):
    key = workspace_secret(workspace, "subject")
    assert stat.S_IMODE((workspace.key_dir / "subject.key").stat().st_mode) == 0o600
    tag = subject_tag(workspace, "user7")
    assert tag == hmac.new(key, b"user7", hashlib.sha256).hexdigest()
    assert tag != hashlib.sha256(b"user7").hexdigest()
    assert workspace_secret(workspace, "subject") == key  # created once, then reused
