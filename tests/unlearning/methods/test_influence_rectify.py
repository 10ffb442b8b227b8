"""What rectification and approximate certificates rest on: the record store replaces a record
under a fresh commitment, and a certificate predicate cannot mix an EXACT claim with an
influence update."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import ValidationError

from ledger.certificate import ComponentClaim, LedgerEvidence, ManifestRef, Predicate
from ledger.errors import BadInput
from unlearning.data.records import RecordStore


def test_rectify_record_replaces_the_content_under_a_fresh_commitment(workspace, records) -> None:
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=2, per_subject=2))
        before = store.record("rec-0-0")
        old_ciphertext = sqlite3.connect(workspace.records_db).execute(
            "SELECT ciphertext FROM records WHERE record_id = 'rec-0-0'").fetchone()[0]
        flipped = "No" if before.answer == "Yes" else "Yes"
        old, new = store.rectify_record("rec-0-0", answer=flipped)
        after = store.record("rec-0-0")
        assert (old, new) == (before.commitment, after.commitment) and new != old
        assert (after.prompt, after.answer, after.subject_id, after.split) == (before.prompt, flipped, before.subject_id,
                                                                                before.split)
        assert new in store.commitments_of("user0") and old not in store.commitments_of("user0")
        assert old_ciphertext not in workspace.records_db.read_bytes()  # overwritten, not left behind

        with pytest.raises(BadInput, match="nothing to rectify"):
            store.rectify_record("rec-0-0", answer=flipped)
        with pytest.raises(BadInput, match="unknown record 'nope'"):
            store.rectify_record("nope", answer="Yes")
        with pytest.raises(BadInput, match="non-empty"):
            store.rectify_record("rec-0-0", prompt="  ")
        assert store.record("rec-0-0") == after  # the refused calls changed nothing


def test_an_exact_claim_cannot_carry_an_influence_update() -> None:
    updated = ComponentClaim(id="shard0-slice0", shard=0, slice=0, action="updated",
                             manifest=ManifestRef(root="00" * 32, size=1, file="components/shard0-slice0/manifest.leaves"))
    common = {"method": "sisa", "model": "m", "modelVersion": 2, "components": [updated], "build": {},
              "ledger": LedgerEvidence(origin="o", checkpoint="c", entries=[])}
    with pytest.raises(ValidationError, match="EXACT claim cannot carry"):
        Predicate(claim="EXACT", **common)
    with pytest.raises(ValidationError, match="EXACT claim cannot carry"):
        Predicate(claim="EXACT", **{**common, "components": [updated.model_copy(update={"action": "kept"})]},
                  approximation={"solver": "cg"})
    with pytest.raises(ValidationError, match="must state its approximation"):
        Predicate(claim="APPROXIMATE", **common)
    assert Predicate(claim="APPROXIMATE", approximation={"solver": "cg"}, **common).components[0].action == "updated"
