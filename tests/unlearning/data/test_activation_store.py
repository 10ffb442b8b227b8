"""The activation cache in the record store: sealed under the subject's key, erased with the record."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger import entries
from ledger.errors import BadInput, CorruptState
from ledger.log import open_ledger
from unlearning.data.records import RecordStore
from unlearning.operations.receive import receive

BASE = "ab" * 32  # prefix_sha256 of a base model + layer split
OTHER_BASE = "cd" * 32


def _keys_db(workspace):
    return workspace.key_dir / "record-keys.db"


def _payload(commitment: bytes, sequence: str) -> bytes:
    """A stand-in for a hidden-states tensor: distinct per row, a few hundred KB."""
    return (commitment + sequence.encode()) * 8000


def _cache_all(store: RecordStore, prefix: str = BASE) -> dict[bytes, str]:
    """Cache both sequences of every record; commitment -> subject."""
    owners = {r.commitment: r.subject_id for r in store.records()}
    rows = [(c, s, _payload(c, s)) for c in owners for s in ("answer", "prompt")]
    assert store.add_activations(prefix, rows) == len(rows)
    return owners


def _raw_rows(workspace) -> list[tuple[bytes, str, str, bytes, bytes]]:
    return sqlite3.connect(workspace.records_db).execute(
        "SELECT commitment, prefix_sha256, sequence, nonce, ciphertext FROM activations").fetchall()


def _key_of(workspace, subject_id: str) -> bytes | None:
    row = sqlite3.connect(_keys_db(workspace)).execute(
        "SELECT data_key FROM subject_keys WHERE subject_id = ?", (subject_id,)).fetchone()
    return row and row[0]


def _aad(commitment: bytes, prefix: str, sequence: str) -> bytes:
    return json.dumps({"commitment": commitment.hex(), "prefix_sha256": prefix, "sequence": sequence},
                      separators=(",", ":"), sort_keys=True).encode()


def test_round_trip_for_two_subjects(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=2))
        owners = _cache_all(store)
        assert len(set(owners.values())) == 2
        got = store.activations(BASE, owners)
        assert got == {(c, s): _payload(c, s) for c in owners for s in ("answer", "prompt")}
        one = next(iter(owners))
        assert store.activations(BASE, [one]) == {(one, s): _payload(one, s) for s in ("answer", "prompt")}
        assert store.activations(OTHER_BASE, owners) == {}  # unknown digest
        assert store.count_activations(owners) == 8 and store.count_activations([one, one]) == 2
        assert store.count_activations([b"\0" * 32]) == 0


def test_bad_sequence_or_digest_is_rejected_and_stores_nothing(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=1, per_subject=2))
        a, b = (r.commitment for r in store.records())
        with pytest.raises(BadInput, match="unknown activation sequence 'logits'"):
            store.add_activations(BASE, [(a, "answer", b"x"), (b, "logits", b"y")])
        for bad in ("AB" * 32, "ab" * 31, "zz" * 32):
            with pytest.raises(BadInput, match="prefix_sha256"):
                store.add_activations(bad, [(a, "answer", b"x")])
        assert store.count_activations([a, b]) == 0  # the first, valid row was rolled back too


def test_ciphertext_is_sealed_under_the_subjects_own_key(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=1))
        owners = _cache_all(store)
    rows = _raw_rows(workspace)
    assert len(rows) == 4
    for commitment, prefix, sequence, nonce, ciphertext in rows:
        plaintext = _payload(commitment, sequence)
        assert ciphertext != plaintext and plaintext[:64] not in ciphertext and len(nonce) == 12
        own = _key_of(workspace, owners[commitment])
        assert AESGCM(own).decrypt(nonce, ciphertext, _aad(commitment, prefix, sequence)) == plaintext
        other = _key_of(workspace, next(s for s in set(owners.values()) if s != owners[commitment]))
        with pytest.raises(InvalidTag):
            AESGCM(other).decrypt(nonce, ciphertext, _aad(commitment, prefix, sequence))
        with pytest.raises(InvalidTag):  # bound to its row: another sequence's AAD does not open it
            AESGCM(own).decrypt(nonce, ciphertext, _aad(commitment, prefix, "prompt" if sequence == "answer" else "answer"))
    assert len({n for *_, n, _c in rows}) == 4  # a fresh nonce per row


def _assert_only_erased_rows_gone(workspace, store, owners, erased: set[bytes]) -> None:
    kept = set(owners) - erased
    assert {c for c, *_ in _raw_rows(workspace)} == kept  # the ciphertext rows are gone, not just unreadable
    assert store.count_activations(erased) == 0 and store.count_activations(kept) == 2 * len(kept)
    assert store.activations(BASE, owners) == {(c, s): _payload(c, s) for c in kept for s in ("answer", "prompt")}


def test_erase_subject_deletes_its_activations_and_key(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=3, per_subject=2))
        owners = _cache_all(store)
        erased = set(store.erase_subject("user1"))
        assert erased == {c for c, s in owners.items() if s == "user1"}
        _assert_only_erased_rows_gone(workspace, store, owners, erased)
    assert _key_of(workspace, "user1") is None and _key_of(workspace, "user0") is not None


def test_erase_records_deletes_their_activations_and_the_last_takes_the_key(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=3))
        owners = _cache_all(store)
        erased = set(store.erase_records("user0", ["rec-0-1"]))
        assert len(erased) == 1
        _assert_only_erased_rows_gone(workspace, store, owners, erased)
        assert _key_of(workspace, "user0") is not None  # user0 still has records
        erased |= set(store.erase_records("user0", ["rec-0-0", "rec-0-2"]))
        _assert_only_erased_rows_gone(workspace, store, owners, erased)
    assert _key_of(workspace, "user0") is None


def test_erase_commitments_deletes_their_activations(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=2))
        owners = _cache_all(store)
        erased = {c for c, s in owners.items() if s == "user1"} | {store.record("rec-0-0").commitment}
        store.erase_commitments(iter(sorted(erased)))
        _assert_only_erased_rows_gone(workspace, store, owners, erased)
        store.erase_commitments(sorted(erased))  # idempotent
    assert _key_of(workspace, "user1") is None and _key_of(workspace, "user0") is not None


def test_rectify_record_drops_the_old_commitments_activations(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=2))
        owners = _cache_all(store)
        old, new = store.rectify_record("rec-0-0", answer="Maybe")
        _assert_only_erased_rows_gone(workspace, store, owners, {old})
        assert store.count_activations([new]) == 0  # nothing cached for the new content yet
        assert store.add_activations(BASE, [(new, "answer", b"fresh")]) == 1
        assert store.activations(BASE, [new]) == {(new, "answer"): b"fresh"}


def test_erased_commitments_are_not_cached(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=1))
        gone, kept = (r.commitment for r in sorted(store.records(), key=lambda r: r.subject_id))
        store.erase_subject("user0")
        stored = store.add_activations(BASE, [(gone, "answer", b"late"), (kept, "answer", b"ok"),
                                              (kept, "answer", b"ok again")])
        assert stored == 1
        assert store.count_activations([gone]) == 0
        assert store.activations(BASE, [gone, kept]) == {(kept, "answer"): b"ok again"}  # replaced
    assert {c for c, *_ in _raw_rows(workspace)} == {kept}


def test_a_new_digest_invalidates_the_old_rows_of_those_commitments(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=1))
        owners = _cache_all(store)
        moved, untouched = sorted(owners)
        assert store.add_activations(OTHER_BASE, [(moved, "prompt", b"new base")]) == 1
        assert store.activations(BASE, owners) == {(untouched, s): _payload(untouched, s) for s in ("answer", "prompt")}
        assert store.activations(OTHER_BASE, owners) == {(moved, "prompt"): b"new base"}
    assert sorted((c, p) for c, p, *_ in _raw_rows(workspace)) == sorted(
        [(moved, OTHER_BASE), (untouched, BASE), (untouched, BASE)])


def test_a_tampered_row_fails_verification(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=1, per_subject=2))
        owners = _cache_all(store)
        victim = sorted(owners)[0]
        db = sqlite3.connect(workspace.records_db)
        (ciphertext,) = db.execute("SELECT ciphertext FROM activations WHERE commitment = ? AND sequence = 'prompt'",
                                   (victim,)).fetchone()
        flipped = bytes([ciphertext[100] ^ 1])
        db.execute("UPDATE activations SET ciphertext = ? WHERE commitment = ? AND sequence = 'prompt'",
                   (ciphertext[:100] + flipped + ciphertext[101:], victim))
        db.commit()
        db.close()
        with pytest.raises(CorruptState, match=victim.hex()[:16]):
            store.activations(BASE, owners)
        other = sorted(owners)[1]
        assert store.activations(BASE, [other]) == {(other, s): _payload(other, s) for s in ("answer", "prompt")}


def test_received_entry_counts_the_activations_receive_deletes(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=3, per_subject=2))
        owners = _cache_all(store)
        first, second, third = store.subjects()
        store.add_activations(OTHER_BASE, [(store.record("rec-1-0").commitment, "prompt", b"other base")])
    receipt = receive(workspace, "r1", first)
    receive(workspace, "r2", second, record_ids=["rec-1-0"])
    with open_ledger(workspace) as ledger:
        logged = [entries.read(ledger, entries.received_key(r)) for r in ("r1", "r2")]
    assert [e and e["activations"] for e in logged] == [4, 1]  # rec-1-0's BASE rows went with the new digest
    assert sorted(receipt.commitments) == sorted(c.hex() for c, s in owners.items() if s == first)
    left = {c for c, *_ in _raw_rows(workspace)}
    assert left == {c for c, s in owners.items() if s == third} | {_commitment_of(workspace, "rec-1-1")}
    assert receive(workspace, "r1", first) == receipt  # a redelivery logs nothing new


def _commitment_of(workspace, record_id: str) -> bytes:
    with RecordStore.open(workspace) as store:
        return store.record(record_id).commitment


def test_the_count_is_in_the_entry_only_when_given():
    plain = entries.request_received("r1", "erase_subject", "tag", "m", ["00" * 32], {"via": "cli"})
    counted = entries.request_received("r1", "erase_subject", "tag", "m", ["00" * 32], {"via": "cli"}, activations=0)
    assert "activations" not in plain.data and counted.data == {**plain.data, "activations": 0}
