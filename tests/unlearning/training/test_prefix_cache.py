"""Top-N LoRA layers with the frozen prefix's states cached: exact, per record, erased with it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace

import pytest
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.canonical import canonical_json
from ledger.errors import BadInput
from ledger.log import open_ledger
from ledger.workspace import Workspace
from tests.conftest import make_records, with_fixed_partition_key
from unlearning import methods
from unlearning.data.records import Record, RecordStore
from unlearning.operations.build import build_version, replay_component, train_model
from unlearning.operations.receive import receive
from unlearning.training.base_models import load_base
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine, environment
from unlearning.training.prefix import from_bytes, prefix_digest, shared_prefixes, to_bytes

SISA = TrainConfig(method="sisa", base="tiny", shards=2, slices=2, epochs=2, lr=1e-2, batch_size=3, seed=3,
                   lora_layers="top-1")
APA = TrainConfig(method="apa", base="tiny", shards=2, epochs=1, lr=1e-2, batch_size=3, seed=3, lora_layers="top-1")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stored(ws: Workspace, digest: str) -> dict[tuple[str, str], torch.Tensor]:
    """(record id, sequence) -> decrypted cached states of every record in the store."""
    with RecordStore.open(ws) as store:
        by_commitment = {r.commitment: r.record_id for r in store.records()}
        rows = store.activations(digest, by_commitment)
    return {(by_commitment[c], kind): from_bytes(payload) for (c, kind), payload in rows.items()}


def test_lora_sits_on_the_top_layers_only_and_the_config_says_so():
    engine = Engine(load_base("tiny"), SISA)
    names = engine.initial_state().lora
    assert names and all(".layers.1." in k for k in names)  # tiny has layers 0 and 1
    assert engine.first_trainable == 1 and engine.prefixes is not None
    assert SISA.to_dict()["lora_layers"] == "top-1"
    assert "lora_layers" not in replace(SISA, lora_layers="all").to_dict()  # old digests unchanged
    assert Engine(load_base("tiny"), replace(SISA, lora_layers="all")).prefixes is None
    with pytest.raises(BadInput, match="only 2 layers"):
        Engine(load_base("tiny"), replace(SISA, lora_layers="top-3"))
    with pytest.raises(BadInput, match="lora-layers must be"):
        replace(SISA, lora_layers="top-0")


def test_a_records_states_do_not_depend_on_the_other_records():
    records = make_records(subjects=6, per_subject=3)
    alone = Engine(load_base("tiny"), SISA)
    target = alone.encode(records[:1])[0]
    sequence = target.prompt_ids + target.answer_ids
    expected = alone.prefixes.get(sequence).clone()

    for subset in (records, records[1:2] + records[:1] + records[7:]):  # more records; some erased
        engine = Engine(load_base("tiny"), SISA)
        examples = engine.encode(subset)
        engine.train(engine.initial_state(), examples, len(examples), "c")
        assert torch.equal(engine.prefixes.peek(sequence), expected)


def test_training_from_stored_states_equals_recomputing_them_and_replay_rebuilds_them(workspace):
    with RecordStore.open(workspace) as store:
        store.ingest(make_records(subjects=10, per_subject=3))
    first = train_model(workspace, "m", SISA)
    digest = Engine(load_base("tiny"), SISA).prefixes.digest
    stored = _stored(workspace, digest)
    with RecordStore.open(workspace) as store:
        train = store.records("train")
        assert {rid for rid, kind in stored if kind == "answer"} == {r.record_id for r in train}

        # a second build reads every state from the store (computes none) and gets the same bits
        engine = Engine(load_base("tiny"), SISA)
        second = build_version(workspace, store, "again", methods.plan(SISA, store.partition, train), engine)
    assert engine.prefixes.computed == set()
    assert [c.weights_sha256 for c in second.components] == [c.weights_sha256 for c in first.components]

    # replay never reads the store: every state is recomputed from the base model
    for component in first.components:
        assert replay_component(workspace, first, component.id).equal, component.id


def test_apa_validation_columns_and_aggregator_replay_from_the_cache(workspace):
    with RecordStore.open(workspace) as store:
        store.ingest(make_records(subjects=14, per_subject=3))
        pool = store.records("valid")
    version = train_model(workspace, "m", APA)
    digest = Engine(load_base("tiny"), APA).prefixes.digest
    stored = _stored(workspace, digest)
    assert pool and {r.record_id for r in pool} <= {rid for rid, kind in stored if kind == "prompt"}
    aggregator = next(c for c in version.components if c.meta.kind == "aggregator")
    assert replay_component(workspace, version, aggregator.id).equal


def test_an_entry_is_the_same_in_any_store_that_holds_the_record(tmp_path):
    small, large = (with_fixed_partition_key(Workspace(tmp_path / n)) for n in ("small", "large"))
    records = make_records(subjects=10, per_subject=3)
    extra = [Record(r.record_id + "-x", r.subject_id, r.prompt + " ", r.answer) for r in records]
    for ws, rows in ((small, records), (large, records + extra)):
        with RecordStore.open(ws) as store:
            store.ingest(rows)
        train_model(ws, "m", SISA)
    digest = Engine(load_base("tiny"), SISA).prefixes.digest
    a, b = _stored(small, digest), _stored(large, digest)
    assert a and set(a) < set(b)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_erasure_deletes_the_states_logs_their_count_and_leaves_a_backup_unreadable(workspace):
    with RecordStore.open(workspace) as store:
        store.ingest(make_records(subjects=10, per_subject=3))
        subject = store.subjects("train")[0]
        erased = store.commitments_of(subject)
    train_model(workspace, "m", SISA)
    backup = workspace.records_db.with_suffix(".backup")
    shutil.copy(workspace.records_db, backup)
    with RecordStore.open(workspace) as store:
        cached = store.count_activations(erased)
    assert cached == len(erased)  # one training sequence per record

    receipt = receive(workspace, "req-1", subject)
    with open_ledger(workspace) as ledger:
        entry = json.loads(ledger.entries(receipt.ledger_index, 1)[0][1])
    assert entry["type"] == "request_received" and entry["activations"] == cached

    with RecordStore.open(workspace) as store:
        assert store.count_activations(erased) == 0
        assert store.count_activations(r.commitment for r in store.records()) > 0  # the others' are kept
    # the backup still holds the erased rows, but no remaining key opens them
    with sqlite3.connect(backup) as old, sqlite3.connect(workspace.key_dir / "record-keys.db") as keys:
        rows = [row for row in old.execute("SELECT commitment, prefix_sha256, sequence, nonce, ciphertext "
                                           "FROM activations") if row[0] in set(erased)]
        remaining = [k for (k,) in keys.execute("SELECT data_key FROM subject_keys")]
    assert len(rows) == cached and remaining
    for commitment, digest, sequence, nonce, ciphertext in rows:
        aad = canonical_json({"commitment": commitment.hex(), "prefix_sha256": digest, "sequence": sequence})
        for key in remaining:
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(nonce, ciphertext, aad)


def test_shared_prefixes_compute_each_state_once_across_engines():
    records = make_records(subjects=4, per_subject=2)
    with shared_prefixes():
        first = Engine(load_base("tiny"), SISA)
        first.p_yes(first.initial_state().lora, [e.prompt_ids for e in first.encode(records)])
        second = Engine(load_base("tiny"), SISA)
        second.p_yes(second.initial_state().lora, [e.prompt_ids for e in second.encode(records)])
        assert len(first.prefixes.computed) == len(records) and second.prefixes.computed == set()
    third = Engine(load_base("tiny"), SISA)  # outside: its own map
    assert len(third.prefixes) == 0


def test_replay_recomputes_the_states_even_when_the_stored_ones_are_wrong(workspace):
    with RecordStore.open(workspace) as store:
        store.ingest(make_records(subjects=10, per_subject=3))
    version = train_model(workspace, "m", SISA)
    digest = Engine(load_base("tiny"), SISA).prefixes.digest
    with RecordStore.open(workspace) as store:  # every stored state replaced by a shifted one, validly sealed
        rows = store.activations(digest, [r.commitment for r in store.records()])
        store.add_activations(digest, [(c, kind, to_bytes(from_bytes(p) + 0.5)) for (c, kind), p in rows.items()])
        train = store.records("train")
        poisoned = build_version(workspace, store, "reads-store", methods.plan(SISA, store.partition, train),
                                 Engine(load_base("tiny"), SISA))
    assert any(a.weights_sha256 != b.weights_sha256 for a, b in zip(poisoned.components, version.components,
                                                                      strict=True))  # a build reads the store
    for component in version.components:  # a replay does not
        assert replay_component(workspace, version, component.id).equal, component.id


def test_the_digest_changes_with_the_base_the_split_and_the_environment():
    engine = Engine(load_base("tiny"), SISA)
    base, env = engine.base.descriptor, environment(SISA)
    digest = prefix_digest(base, 1, env)
    assert engine.prefixes.digest == digest
    others = [prefix_digest({**base, "weights_sha256": "0" * 64}, 1, env),
              prefix_digest({**base, "tokenizer_sha256": "0" * 64}, 1, env),
              prefix_digest(base, 2, env),
              prefix_digest(base, 1, {**env, "torch": "0.0"}),
              prefix_digest(base, 1, {**env, "threads": env["threads"] + 1})]
    assert len({digest, *others}) == 6
