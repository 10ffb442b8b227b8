"""RFC 6962 Merkle trees: hashing, proofs from stored subtree hashes, RFC 9162 verification.

Proof generation never walks the leaves. A proof element is the hash of a leaf range, and every
range an RFC 6962 proof asks for splits into a few *perfect* subtrees (2^level leaves starting at
a multiple of 2^level) that are stored once, when they are completed. So a proof for a tree of
size n reads O(log n) stored hashes in one batch and hashes O(log n) times.

Stored hashes are numbered in the order they are completed (the dense layout of Go's
`sumdb/tlog`, after Crosby and Wallach): appending leaf i stores its leaf hash, then the perfect
subtrees it completes, lowest level first. Storage is therefore append-only and a tree of size n
holds exactly 2n - popcount(n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ledger.errors import VerificationFailed

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]  # (level, index): leaves [index << level, (index + 1) << level)
Range = tuple[int, int]  # leaves [lo, hi)
HashReader = Callable[[Sequence[Node]], list[bytes]]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def stored_index(level: int, index: int) -> int:
    """Position of perfect subtree (level, index) in the append-only stored-hash sequence."""
    last_leaf = ((index + 1) << level) - 1
    return stored_count(last_leaf) + level


def stored_count(size: int) -> int:
    """How many hashes a tree of `size` leaves stores (perfect subtrees at every level)."""
    return 2 * size - size.bit_count()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect_nodes(lo: int, hi: int) -> list[Node]:
    """The perfect subtrees covering leaves [lo, hi), left to right; RFC ranges are aligned."""
    nodes = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect subtrees: the tree is left-filled, so fold from the right."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 6962 PATH(index, D[0:size]) as leaf ranges, ordered leaf to root."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[Range]:
    """RFC 6962 PROOF(size1, D[0:size2]) (SUBPROOF with b = true) as leaf ranges."""
    ranges = []
    lo, hi, m, whole = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _range_hashes(read: HashReader, ranges: Sequence[Range]) -> list[bytes]:
    plans = [_perfect_nodes(lo, hi) for lo, hi in ranges]
    hashes = iter(read([node for plan in plans for node in plan]))
    return [_fold([next(hashes) for _ in plan]) for plan in plans]


def tree_root(read: HashReader, size: int) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes(read, [(0, size)])[0]


def prove_inclusion(read: HashReader, index: int, size: int) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    return _range_hashes(read, _inclusion_ranges(index, size))


def prove_consistency(read: HashReader, size1: int, size2: int) -> list[bytes]:
    """Consistency proof from size1 to size2; empty when size1 is 0 or equals size2."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0:
        return []
    return _range_hashes(read, _consistency_ranges(size1, size2))


class CompactRange:
    """The perfect subtrees covering [0, size): enough to append leaves and to compute the root."""

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if len(subtrees) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} perfect subtrees, not {len(subtrees)}")
        self.size = size
        self._stack = list(subtrees)

    @classmethod
    def load(cls, read: HashReader, size: int) -> "CompactRange":
        return cls(size, read(_perfect_nodes(0, size)))

    def append(self, leaf: bytes) -> list[bytes]:
        """Add a leaf hash; returns the hashes to store, in stored order."""
        new = [leaf]
        h = leaf
        for _ in range((~self.size & (self.size + 1)).bit_length() - 1):  # trailing one bits of size
            h = node_hash(self._stack.pop(), h)
            new.append(h)
        self._stack.append(h)
        self.size += 1
        return new

    def root(self) -> bytes:
        return _fold(self._stack) if self._stack else EMPTY_ROOT


class MemoryTree:
    """A whole tree in memory (manifests, tests): stored hashes in a list, proofs in O(log n)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        compact = CompactRange()
        self._hashes: list[bytes] = []
        for h in leaf_hashes:
            self._hashes.extend(compact.append(h))
        self.size = compact.size
        self.root = compact.root()

    def read(self, nodes: Sequence[Node]) -> list[bytes]:
        return [self._hashes[stored_index(level, index)] for level, index in nodes]

    def leaf(self, index: int) -> bytes:
        return self._hashes[stored_index(0, index)]

    def inclusion_proof(self, index: int) -> list[bytes]:
        return prove_inclusion(self.read, index, self.size)

    def consistency_proof(self, size1: int) -> list[bytes]:
        return prove_consistency(self.read, size1, self.size)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion proof for leaf `index` in the tree of all `leaf_hashes`."""
    return MemoryTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """Consistency proof from the first `size1` leaves to the tree of all `leaf_hashes`."""
    return MemoryTree(leaf_hashes).consistency_proof(size1)


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationFailed(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(h, f"proof[{i}]")


def _shift_to_odd(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162 step "right-shift fn and sn until LSB(fn) is set or fn is 0"."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2; raises VerificationFailed with the reason."""
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    _check_proof(proof)
    if not 0 <= leaf_index < tree_size:
        raise VerificationFailed(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationFailed("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_to_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailed("inclusion proof is too short")
    if r != root:
        raise VerificationFailed("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2; size1 == 0 needs an empty proof and the empty-tree root."""
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    _check_proof(proof)
    if not 0 <= size1 <= size2:
        raise VerificationFailed(f"size {size1} cannot be a prefix of size {size2}")
    if size1 == size2 or size1 == 0:
        if proof:
            raise VerificationFailed(f"consistency proof from size {size1} to {size2} must be empty")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise VerificationFailed("first root is not the empty-tree root for size 0")
        if size1 == size2 and root1 != root2:
            raise VerificationFailed(f"different roots for the same size {size1}")
        return
    if not proof:
        raise VerificationFailed("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationFailed("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_to_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailed("consistency proof is too short")
    if fr != root1:
        raise VerificationFailed("consistency proof does not lead to the first root")
    if sr != root2:
        raise VerificationFailed("consistency proof does not lead to the second root")
