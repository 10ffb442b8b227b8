"""Portable proof formats: C2SP tlog-proof files and transparency-dev/merkle JSON proofs.

tlog-proof (https://c2sp.org/tlog-proof): an offline-verifiable proof that an entry is in the
log — `c2sp.org/tlog-proof@v1`, optional `extra <base64>`, `index <n>`, the inclusion path one
base64 hash a line, a blank line, then the signed checkpoint verbatim.

JSON proofs use the field names of the transparency-dev/merkle test vectors, so the same
checker runs our proofs and theirs: inclusion `{leafIdx, treeSize, root, leafHash, proof}`,
consistency `{size1, size2, root1, root2, proof}`; other keys are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.note import Checkpoint, Verifier, b64decode, b64encode, verify_checkpoint

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]*)")


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None


def format_tlog_proof(index: int, proof: Sequence[bytes], checkpoint: str, extra: bytes | None = None) -> str:
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {b64encode(extra)}")
    lines.append(f"index {index}")
    lines.extend(b64encode(h) for h in proof)
    return "\n".join(lines) + "\n\n" + checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    head, blank, checkpoint = text.partition("\n\n")
    if not blank:
        raise VerificationFailed("tlog-proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise VerificationFailed(f"tlog-proof does not start with {TLOG_PROOF_HEADER}")
    lines = lines[1:]
    extra = None
    if lines and lines[0].startswith("extra "):
        extra = b64decode(lines.pop(0).removeprefix("extra "), "tlog-proof extra data")
    match = _INDEX.fullmatch(lines[0]) if lines else None
    if match is None:
        raise VerificationFailed("tlog-proof has no canonical `index N` line")
    proof = tuple(b64decode(line, f"tlog-proof hash {i}") for i, line in enumerate(lines[1:]))
    return TlogProof(int(match.group(1)), proof, checkpoint, extra)


def verify_tlog_proof(text: str, entry: bytes, verifiers: Sequence[Verifier], origin: str) -> Checkpoint:
    """Check that `entry` (its stored bytes) is in the log; returns the verified checkpoint."""
    proof = parse_tlog_proof(text)
    checkpoint = verify_checkpoint(proof.checkpoint, verifiers, origin)
    verify_inclusion(proof.index, checkpoint.size, leaf_hash(entry), proof.proof, checkpoint.root)
    return checkpoint


def inclusion_json(leaf_index: int, tree_size: int, root: bytes, leaf: bytes, proof: Sequence[bytes]) -> dict:
    return {
        "leafIdx": leaf_index,
        "treeSize": tree_size,
        "root": b64encode(root),
        "leafHash": b64encode(leaf),
        "proof": [b64encode(h) for h in proof],
    }


def consistency_json(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> dict:
    return {
        "size1": size1,
        "size2": size2,
        "root1": b64encode(root1),
        "root2": b64encode(root2),
        "proof": [b64encode(h) for h in proof],
    }


def _field(doc: dict, name: str, kind: type) -> Any:
    value = doc.get(name)
    # bool is an int in Python but never a valid size or index in a proof file
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInput(f"field {name!r} must be a JSON {'integer' if kind is int else 'string'}")
    return value


def _hashes(doc: dict) -> list[bytes]:
    proof = doc.get("proof")
    if proof is None:  # the upstream vectors write an empty proof as null
        return []
    if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
        raise BadInput("field 'proof' must be a list of base64 strings or null")
    return [b64decode(h, f"proof[{i}]") for i, h in enumerate(proof)]


def check_proof_json(doc: Any) -> str:
    """Verify an inclusion or consistency proof document; returns its kind.

    BadInput when the document is not a proof at all, VerificationFailed when the proof is wrong.
    """
    if isinstance(doc, dict) and "leafIdx" in doc:
        index, size = _field(doc, "leafIdx", int), _field(doc, "treeSize", int)
        root, leaf = _field(doc, "root", str), _field(doc, "leafHash", str)
        proof = _hashes(doc)
        verify_inclusion(index, size, b64decode(leaf, "leafHash"), proof, b64decode(root, "root"))
        return "inclusion"
    if isinstance(doc, dict) and "size1" in doc:
        size1, size2 = _field(doc, "size1", int), _field(doc, "size2", int)
        root1, root2 = _field(doc, "root1", str), _field(doc, "root2", str)
        proof = _hashes(doc)
        verify_consistency(size1, size2, proof, b64decode(root1, "root1"), b64decode(root2, "root2"))
        return "consistency"
    raise BadInput("not an inclusion proof (leafIdx, ...) or a consistency proof (size1, ...)")
