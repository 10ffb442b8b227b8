"""RFC 6962 hashing and proofs: known answers, the transparency-dev vectors, and properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import VerificationFailed

VECTORS = sorted((Path(__file__).parents[1] / "data" / "rfc6962-inclusion").glob("*.json"))

# Certificate Transparency test leaves and the roots of their first 0..8 leaves.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_HASHES = [merkle.leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES]


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


# Straight transcriptions of RFC 6962 §2.1: the reference the stored-hash code must agree with.
def rfc_mth(d: list[bytes]) -> bytes:
    if not d:
        return merkle.EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return merkle.node_hash(rfc_mth(d[:k]), rfc_mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m < k:
        return rfc_path(m, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m <= k:
        return rfc_subproof(m, d[:k], b) + [rfc_mth(d[k:])]
    return rfc_subproof(m - k, d[k:], False) + [rfc_mth(d[:k])]


def test_hash_prefixes() -> None:
    assert merkle.leaf_hash(b"") == bytes.fromhex(CT_ROOTS[1])
    assert merkle.node_hash(CT_HASHES[0], CT_HASHES[1]) == bytes.fromhex(CT_ROOTS[2])


@pytest.mark.parametrize("n", range(9))
def test_ct_roots(n: int) -> None:
    assert merkle.root(CT_HASHES[:n]).hex() == CT_ROOTS[n]


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_transparency_dev_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [base64.b64decode(h) for h in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], base64.b64decode(case["leafHash"]), proof, base64.b64decode(case["root"]))
    if case["wantErr"]:
        with pytest.raises(VerificationFailed):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


def test_vector_set_is_complete() -> None:
    assert len(VECTORS) == 98
    assert (VECTORS[0].parent / "LICENSE-transparency-dev-merkle").is_file()


def test_proofs_match_rfc_definitions_up_to_64_leaves() -> None:
    d = leaves(64)
    for n in range(1, 65):
        tree = merkle.MemoryTree(d[:n])
        assert tree.root == rfc_mth(d[:n])
        for m in range(n):
            assert tree.inclusion_proof(m) == rfc_path(m, d[:n])
        for m in range(1, n + 1):
            assert tree.consistency_proof(m) == rfc_subproof(m, d[:n], True)


def test_stored_layout_is_dense_and_append_only() -> None:
    tree = merkle.MemoryTree(leaves(37))
    positions = sorted(
        merkle.stored_index(level, index) for level in range(6) for index in range(37 >> level)
    )
    assert positions == list(range(merkle.stored_count(37)))
    assert tree.read([(5, 0)]) == [rfc_mth(leaves(32))]


def test_compact_range_resumes_from_stored_subtrees() -> None:
    d = leaves(23)
    tree = merkle.MemoryTree(d)
    resumed = merkle.CompactRange.load(tree.read, 13)
    for h in d[13:]:
        resumed.append(h)
    assert resumed.root() == tree.root


def test_empty_tree() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT
    merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    merkle.verify_consistency(0, 5, [], merkle.EMPTY_ROOT, merkle.root(leaves(5)))
    with pytest.raises(VerificationFailed, match="empty-tree root"):
        merkle.verify_consistency(0, 5, [], merkle.root(leaves(5)), merkle.root(leaves(5)))
    with pytest.raises(VerificationFailed, match="must be empty"):
        merkle.verify_consistency(0, 5, [b"\x00" * 32], merkle.EMPTY_ROOT, merkle.root(leaves(5)))


def test_equal_sizes() -> None:
    r = merkle.root(leaves(6))
    merkle.verify_consistency(6, 6, [], r, r)
    with pytest.raises(VerificationFailed, match="different roots"):
        merkle.verify_consistency(6, 6, [], r, merkle.root(leaves(5)))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_rejects_hashes_that_are_not_32_bytes(bad: bytes) -> None:
    d = leaves(4)
    tree = merkle.MemoryTree(d)
    proof = tree.inclusion_proof(1)
    with pytest.raises(VerificationFailed, match="not 32"):
        merkle.verify_inclusion(1, 4, bad, proof, tree.root)
    with pytest.raises(VerificationFailed, match="not 32"):
        merkle.verify_inclusion(1, 4, d[1], proof, bad)
    with pytest.raises(VerificationFailed, match="not 32"):
        merkle.verify_inclusion(1, 4, d[1], [*proof[:1], bad, *proof[2:]], tree.root)
    with pytest.raises(VerificationFailed, match="not 32"):
        merkle.verify_consistency(2, 4, tree.consistency_proof(2), bad, tree.root)


def fails(verify, *args) -> bool:
    try:
        verify(*args)
    except VerificationFailed:
        return True
    return False


def flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    h = bytearray(proof[i])
    h[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:i], bytes(h), *proof[i + 1 :]]


@st.composite
def inclusion_cases(draw):
    n = draw(st.integers(1, 3000))
    return n, draw(st.integers(0, n - 1))


@settings(max_examples=80, deadline=None)
@given(case=inclusion_cases(), data=st.data())
def test_inclusion_property(case, data) -> None:
    n, m = case
    d = leaves(n)
    tree = merkle.MemoryTree(d)
    proof = tree.inclusion_proof(m)
    merkle.verify_inclusion(m, n, d[m], proof, tree.root)

    def rejected(*args) -> bool:
        return fails(merkle.verify_inclusion, *args)

    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        assert rejected(m, n, d[m], flip(proof, i, data.draw(st.integers(0, 255))), tree.root)
        assert rejected(m, n, d[m], proof[:-1], tree.root)
    assert rejected(m, n, d[m], [*proof, d[0]], tree.root)
    assert rejected(m, n, flip([d[m]], 0, data.draw(st.integers(0, 255)))[0], proof, tree.root)
    assert rejected(m, n, d[m], proof, flip([tree.root], 0, data.draw(st.integers(0, 255)))[0])
    wrong_index = data.draw(st.integers(-1, n + 1).filter(lambda j: j != m))
    assert rejected(wrong_index, n, d[m], proof, tree.root)
    wrong_size = data.draw(st.integers(0, 2 * n + 1).filter(lambda s: s != n))
    # A path binds the size only through its left/right pattern: another size with the same
    # pattern above leaf m accepts the same path (against the same root), as RFC 9162 allows.
    if not (m < wrong_size and sides(m, wrong_size) == sides(m, n)):
        assert rejected(m, wrong_size, d[m], proof, tree.root)


def sides(m: int, n: int) -> list[bool]:
    """For each sibling on leaf m's path, whether it lies left of the leaf."""
    return [lo < m for lo, _ in merkle._inclusion_ranges(m, n)]


@st.composite
def consistency_cases(draw):
    n = draw(st.integers(2, 3000))
    return draw(st.integers(1, n - 1)), n


@settings(max_examples=80, deadline=None)
@given(case=consistency_cases(), data=st.data())
def test_consistency_property(case, data) -> None:
    m, n = case
    d = leaves(n)
    tree = merkle.MemoryTree(d)
    root1 = merkle.root(d[:m])
    proof = tree.consistency_proof(m)
    merkle.verify_consistency(m, n, proof, root1, tree.root)

    def rejected(*args) -> bool:
        return fails(merkle.verify_consistency, *args)

    i = data.draw(st.integers(0, len(proof) - 1))
    assert rejected(m, n, flip(proof, i, data.draw(st.integers(0, 255))), root1, tree.root)
    assert rejected(m, n, proof[:-1], root1, tree.root)
    assert rejected(m, n, [*proof, d[0]], root1, tree.root)
    assert rejected(m, n, proof, flip([root1], 0, 7)[0], tree.root)
    assert rejected(m, n, proof, root1, flip([tree.root], 0, 7)[0])
    assert rejected(n, m, proof, tree.root, root1)
    other = data.draw(st.integers(1, n).filter(lambda s: s != m))
    assert rejected(other, n, proof, root1, tree.root)
    if m > 1:
        assert rejected(m, n, proof, merkle.root(d[: m - 1]), tree.root)
