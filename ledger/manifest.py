"""Manifests: sorted Merkle trees over 32-byte record commitments, with (non-)membership proofs.

A manifest's root is the RFC 6962 root over `leaf_hash(commitment)` of the strictly increasing
commitments. Non-membership of c is shown by two leaves at adjacent indices that bracket c
(or the first / last leaf alone at the edges). RFC 6962 inclusion verification authenticates
the index, so adjacency cannot be faked, but the argument is only sound for a sorted tree:
an auditor also recomputes the root from the full leaves file (`verify_leaves_file`), which
rejects unsorted or duplicate leaves.

Proofs are JSON-able dicts with lowercase hex:
membership `{"commitment", "index", "path"}`,
non-membership `{"commitment", "left": neighbour | null, "right": neighbour | null}` where a
neighbour is `{"commitment", "index", "path"}`.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, MemoryTree, leaf_hash, verify_inclusion

COMMITMENT_SIZE = 32
_HEX32 = re.compile(r"[0-9a-f]{64}")


def _leaf_errors(leaves: Sequence[bytes]) -> str | None:
    """Why `leaves` is not a valid manifest (strictly increasing 32-byte values), or None."""
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, bytes) or len(leaf) != COMMITMENT_SIZE:
            return f"leaf {i} is not {COMMITMENT_SIZE} bytes"
        if i and leaf <= leaves[i - 1]:
            if leaf == leaves[i - 1]:
                return f"leaf {i} duplicates leaf {i - 1} ({leaf.hex()})"
            return f"leaf {i} sorts before leaf {i - 1}"
    return None


def _split_leaves(data: bytes) -> list[bytes]:
    if len(data) % COMMITMENT_SIZE:
        raise ValueError(f"leaves file is {len(data)} bytes, not a multiple of {COMMITMENT_SIZE}")
    leaves = [data[i : i + COMMITMENT_SIZE] for i in range(0, len(data), COMMITMENT_SIZE)]
    reason = _leaf_errors(leaves)
    if reason:
        raise ValueError(reason)
    return leaves


class Manifest:
    def __init__(self, leaves: Sequence[bytes]) -> None:
        reason = _leaf_errors(leaves)
        if reason:
            raise BadInput(f"invalid manifest: {reason}")
        self.leaves = list(leaves)
        self._tree = MemoryTree([leaf_hash(c) for c in self.leaves])

    @classmethod
    def from_commitments(cls, commitments: Iterable[bytes]) -> "Manifest":
        """Sort the commitments; BadInput for duplicates or values that are not 32 bytes."""
        leaves = list(commitments)
        for c in leaves:
            _check_commitment(c, BadInput)
        return cls(sorted(leaves))

    @property
    def size(self) -> int:
        return len(self.leaves)

    @property
    def root(self) -> bytes:
        return self._tree.root

    def _find(self, commitment: bytes) -> int:
        """Index of the first leaf >= commitment."""
        return bisect.bisect_left(self.leaves, commitment)

    def contains(self, commitment: bytes) -> bool:
        i = self._find(commitment)
        return i < self.size and self.leaves[i] == commitment

    def _neighbour(self, index: int) -> dict[str, Any]:
        return {
            "commitment": self.leaves[index].hex(),
            "index": index,
            "path": [h.hex() for h in self._tree.inclusion_proof(index)],
        }

    def membership_proof(self, commitment: bytes) -> dict[str, Any]:
        if not self.contains(commitment):
            raise BadInput(f"commitment {commitment.hex()} is not in the manifest")
        return self._neighbour(self._find(commitment))

    def non_membership_proof(self, commitment: bytes) -> dict[str, Any]:
        _check_commitment(commitment, BadInput)
        if self.contains(commitment):
            raise BadInput(f"commitment {commitment.hex()} is in the manifest")
        i = self._find(commitment)
        return {
            "commitment": commitment.hex(),
            "left": self._neighbour(i - 1) if i > 0 else None,
            "right": self._neighbour(i) if i < self.size else None,
        }

    def to_bytes(self) -> bytes:
        return b"".join(self.leaves)

    def digest(self) -> str:
        """sha256 (hex) of the leaves file."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            return cls(_split_leaves(_read(path)))
        except ValueError as err:
            raise BadInput(f"{path}: {err}") from None


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from None


def verify_leaves_file(path: Path, root: bytes, size: int) -> Manifest:
    """Recompute a manifest from its full leaves file and check it against (root, size)."""
    try:
        manifest = Manifest(_split_leaves(_read(path)))
    except ValueError as err:
        raise VerificationFailed(f"manifest {path}: {err}") from None
    if manifest.size != size:
        raise VerificationFailed(f"manifest {path} has {manifest.size} leaves, not {size}")
    if manifest.root != root:
        raise VerificationFailed(f"manifest {path} does not have root {root.hex()}")
    return manifest


def _check_commitment(commitment: bytes, error: type[Exception]) -> None:
    if not isinstance(commitment, bytes) or len(commitment) != COMMITMENT_SIZE:
        raise error(f"a commitment must be {COMMITMENT_SIZE} bytes")


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise VerificationFailed(f"{what} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def _verify_leaf(root: bytes, size: int, proof: Any, what: str) -> tuple[int, bytes]:
    """Verify one {commitment, index, path} against the root; returns (index, commitment)."""
    if not isinstance(proof, dict):
        raise VerificationFailed(f"{what} is not an object")
    index, path = proof.get("index"), proof.get("path")
    if not isinstance(index, int) or isinstance(index, bool):
        raise VerificationFailed(f"{what} index is not an integer")
    if not isinstance(path, list):
        raise VerificationFailed(f"{what} path is not a list")
    commitment = _hex(proof.get("commitment"), f"{what} commitment")
    hashes = [_hex(h, f"{what} path[{i}]") for i, h in enumerate(path)]
    try:
        verify_inclusion(index, size, leaf_hash(commitment), hashes, root)
    except VerificationFailed as err:
        raise VerificationFailed(f"{what}: {err}") from None
    return index, commitment


def _check_subject(commitment: bytes, proof: Any) -> None:
    _check_commitment(commitment, VerificationFailed)
    if not isinstance(proof, dict) or proof.get("commitment") != commitment.hex():
        raise VerificationFailed(f"proof is not about commitment {commitment.hex()}")


def verify_membership(root: bytes, size: int, commitment: bytes, proof: Any) -> None:
    _check_subject(commitment, proof)
    _verify_leaf(root, size, proof, "membership proof")


def verify_non_membership(root: bytes, size: int, commitment: bytes, proof: Any) -> None:
    """Check that `commitment` is not a leaf of the sorted manifest with this root and size."""
    _check_subject(commitment, proof)
    if len(root) != HASH_SIZE:
        raise VerificationFailed(f"root is {len(root)} bytes, not {HASH_SIZE}")
    left, right = proof.get("left"), proof.get("right")
    if size == 0:
        if left is not None or right is not None:
            raise VerificationFailed("an empty manifest has no neighbours")
        if root != EMPTY_ROOT:
            raise VerificationFailed("root is not the empty-tree root for size 0")
        return
    if left is None and right is None:
        raise VerificationFailed("non-membership proof has no neighbours")
    if left is not None:
        left_index, left_leaf = _verify_leaf(root, size, left, "left neighbour")
        if not left_leaf < commitment:
            raise VerificationFailed("left neighbour does not sort below the commitment")
    if right is not None:
        right_index, right_leaf = _verify_leaf(root, size, right, "right neighbour")
        if not commitment < right_leaf:
            raise VerificationFailed("right neighbour does not sort above the commitment")
    if left is not None and right is not None:
        if right_index != left_index + 1:
            raise VerificationFailed(f"neighbours {left_index} and {right_index} are not adjacent")
    elif left is None and right_index != 0:
        raise VerificationFailed(f"without a left neighbour the right one must be leaf 0, not {right_index}")
    elif right is None and left_index != size - 1:
        raise VerificationFailed(f"without a right neighbour the left one must be leaf {size - 1}, not {left_index}")
