"""A request of thousands of records: its receipt is split so every entry fits a tile bundle
(C2SP tlog-tiles: at most 65,535 bytes), readers reassemble it, and certificates cite the parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger import entries
from ledger.certificate import (
    ComponentClaim, Erasure, ManifestRef, Predicate, cite, log_certificate, non_membership_proofs, sign_certificate,
    verify_certificate,
)
from ledger.errors import BadInput
from ledger.keys import build_trust, init_keys, load_signer
from ledger.log import Ledger, open_ledger
from ledger.manifest import Manifest
from ledger.tiles.layout import MAX_ENTRY_BYTES
from ledger.workspace import Workspace
from unlearning.data.records import Record, RecordStore
from unlearning.operations.receive import Receipt, lookup_receipt, receive

RECORDS = 3000


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    """The ledger conftest's workspace, with keys."""
    init_keys(workspace.ensure().key_dir)
    return workspace


def _subject(ws: Workspace, subject: str, n: int = RECORDS) -> None:
    with RecordStore.open(ws) as store:
        store.ingest([Record(f"{subject}-{i}", subject, f"did {subject} like movie {i}?", "Yes") for i in range(n)])


@pytest.fixture
def big(ws: Workspace) -> Receipt:
    _subject(ws, "user-big")
    return receive(ws, "big", "user-big", model="m",
                   source={"via": "kafka", "legal_basis": "x" * 256, "requester": "y" * 256})


def test_entries_split_a_long_list_of_commitments() -> None:
    commitments = [f"{i:064x}" for i in range(RECORDS)]
    receipt = entries.request_received("r", "erase_subject", "t" * 64, "m", commitments, {"via": "cli"})
    parts = entries.request_parts("r", commitments)
    assert len(receipt.data["commitments"]) == entries.RECEIPT_COMMITMENTS and receipt.data["parts"] == len(parts) == 5
    assert [p.data["part"] for p in parts] == [1, 2, 3, 4, 5]
    assert receipt.data["commitments"] + [c for p in parts for c in p.data["commitments"]] == commitments
    small = entries.request_received("r", "erase_subject", "t", "m", commitments[:512], {"via": "cli"})
    assert "parts" not in small.data and entries.request_parts("r", commitments[:512]) == []


def test_a_large_subject_is_received_in_parts_that_fit_a_tile_bundle(ws: Workspace, big: Receipt,
                                                                     tmp_path: Path) -> None:
    assert len(big.commitments) == len(set(big.commitments)) == RECORDS and len(big.part_indices) == 5
    with open_ledger(ws, sign=True) as ledger:
        logged = [json.loads(data) for _, data in ledger.entries()]
        sizes = [len(data) for _, data in ledger.entries()]
        assert [e["type"] for e in logged] == ["request_received"] + ["request_commitments"] * 5
        assert max(sizes) < 40_000 < MAX_ENTRY_BYTES, sizes  # far below, with 256-char source fields
        ledger.checkpoint()
    assert lookup_receipt(ws, "big") == big  # reassembled from the ledger
    assert receive(ws, "big", "user-big", model="m") == big  # idempotent: nothing logged again
    with open_ledger(ws) as ledger:
        assert ledger.size == 6
    result = CliRunner().invoke(app, ["ledger", "publish", "--to", str(tmp_path / "tiles")])
    assert result.exit_code == 0, result.output
    assert "published checkpoint size 6" in result.output


def _certify(ws: Workspace, bundle: Path, erasure: Erasure, held: list[bytes]) -> Path:
    """A certificate naming `erasure` over one component holding `held` (cf. test_certificate)."""
    with open_ledger(ws, sign=True) as ledger:
        manifest = Manifest.from_commitments(held)
        (bundle / "manifests").mkdir(parents=True)
        manifest.write(bundle / "manifests" / "s0.leaves")
        (bundle / "components" / "s0").mkdir(parents=True)
        (bundle / "components" / "s0" / "adapter_model.safetensors").write_bytes(b"s0" * 10)
        (bundle / "aggregation.json").write_text(json.dumps({"rule": "mean_p_yes", "components": ["s0"]}))
        trained = ledger.append_many([entries.component_trained("m", 2, "s0", 0, None, None, manifest.root.hex(),
                                                                manifest.size, "00" * 32, "00" * 32)])[0]
        claim = ComponentClaim(id="s0", shard=0, slice=None, action="retrained", ledgerIndex=trained,
                               manifest=ManifestRef(root=manifest.root.hex(), size=manifest.size,
                                                    file="manifests/s0.leaves"))
        erased = [bytes.fromhex(c) for c in erasure.commitments]
        predicate = Predicate(
            claim="EXACT", method="sisa", model="m", modelVersion=2, parentVersion=1, erasures=[erasure],
            components=[claim], nonMembership=non_membership_proofs({"s0": manifest}, erased), build={},
            ledger=cite(ledger, [erasure.ledgerIndex, *erasure.partIndices, trained], ledger.checkpoint()),
        )
        log_certificate(bundle, predicate, sign_certificate(bundle, predicate, load_signer(ws, "certifier")), ledger)
    return bundle


def _verify(ws: Workspace, bundle: Path):  # type: ignore[no-untyped-def]
    with open_ledger(ws, create=False) as log:
        return verify_certificate(bundle, build_trust(ws), log)


def test_a_certificate_over_a_large_request_cites_its_parts(ws: Workspace, big: Receipt, tmp_path: Path) -> None:
    held = [bytes([i]) * 32 for i in range(4)]
    erasure = big.to_erasure()
    assert erasure.partIndices == list(big.part_indices)
    result = _verify(ws, _certify(ws, tmp_path / "ok", erasure, held))
    assert result.verified, result.to_json()
    assert result.checks[-1]  # every check ran

    def refused(name: str, changed: Erasure, reason: str) -> None:
        result = _verify(ws, _certify(ws, tmp_path / name, changed, held))
        assert not result.verified and reason in json.dumps(result.to_json()), (name, result.to_json())

    parts = list(big.part_indices)
    refused("dropped", erasure.model_copy(update={"partIndices": parts[:-1]}), "4 parts cited, the receipt names 5")
    refused("none", erasure.model_copy(update={"partIndices": []}), "0 parts cited")
    refused("swapped", erasure.model_copy(update={"partIndices": [parts[1], parts[0], *parts[2:]]}),
            f"ledger entry {parts[1]} is not part 1")
    _subject(ws, "user-other")
    other = receive(ws, "other", "user-other", model="m")
    refused("other request", erasure.model_copy(update={"partIndices": [parts[0], *other.part_indices[1:]]}),
            f"ledger entry {other.part_indices[1]} is not part 2")
    refused("not a part", erasure.model_copy(update={"partIndices": [other.ledger_index, *parts[1:]]}),
            f"ledger entry {other.ledger_index} is not part 1")


def test_the_ledger_refuses_an_entry_a_tile_bundle_cannot_hold(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.db", "example.org/log") as ledger:
        ledger.append_many([entries.request_planned("r0", {"m": [0]})])
        with pytest.raises(BadInput, match=r"a request_received entry of \d+ bytes is over the 65535") as err:
            ledger.append_many([entries.request_planned("r1", {"m": [0]}),
                                ("request_received", {"request_id": "r", "commitments": ["00" * 32] * 1000})])
        assert "\n" not in str(err.value)
        assert ledger.size == 1  # nothing of the batch logged
