"""Sorted-Merkle manifests: roots, membership and non-membership proofs, the leaves file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import BadInput, VerificationFailed
from ledger.manifest import Manifest, verify_leaves_file, verify_membership, verify_non_membership

commitments = st.binary(min_size=32, max_size=32)


def c(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def test_root_is_rfc6962_over_sorted_leaves() -> None:
    values = [c(i) for i in range(10)]
    manifest = Manifest.from_commitments(values)
    assert manifest.leaves == sorted(values) and manifest.size == 10
    assert manifest.root == merkle.root([merkle.leaf_hash(v) for v in sorted(values)])
    assert Manifest.from_commitments([]).root == merkle.EMPTY_ROOT


def test_rejects_duplicates_and_bad_lengths() -> None:
    with pytest.raises(BadInput, match="duplicates"):
        Manifest.from_commitments([c(1), c(2), c(1)])
    with pytest.raises(BadInput, match="32 bytes"):
        Manifest.from_commitments([c(1), b"short"])
    with pytest.raises(BadInput, match="sorts before"):
        Manifest(sorted([c(1), c(2)], reverse=True))


@settings(max_examples=60, deadline=None)
@given(values=st.sets(commitments, max_size=300), probe=commitments, data=st.data())
def test_membership_and_non_membership(values: set[bytes], probe: bytes, data) -> None:
    manifest = Manifest.from_commitments(values)
    for member in data.draw(st.lists(st.sampled_from(sorted(values)), max_size=3)) if values else []:
        proof = manifest.membership_proof(member)
        verify_membership(manifest.root, manifest.size, member, proof)
        if probe not in values:  # a member's proof of absence cannot be made (below), nor borrowed from another value
            with pytest.raises(VerificationFailed):
                verify_non_membership(manifest.root, manifest.size, member, manifest.non_membership_proof(probe))
        with pytest.raises(BadInput):
            manifest.non_membership_proof(member)
    if probe in values:
        return
    assert not manifest.contains(probe)
    proof = manifest.non_membership_proof(probe)
    verify_non_membership(manifest.root, manifest.size, probe, proof)
    with pytest.raises(BadInput):
        manifest.membership_proof(probe)
    # The same proof must not vouch for another manifest.
    other = Manifest.from_commitments(values | {data.draw(commitments.filter(lambda v: v not in values))})
    with pytest.raises(VerificationFailed):
        verify_non_membership(other.root, other.size, probe, proof)


def test_edges() -> None:
    values = [bytes([0x10]) * 32, bytes([0x20]) * 32, bytes([0x30]) * 32]
    manifest = Manifest.from_commitments(values)
    below, above, between = bytes(32), b"\xff" * 32, bytes([0x25]) * 32
    low = manifest.non_membership_proof(below)
    assert low["left"] is None and low["right"]["index"] == 0
    high = manifest.non_membership_proof(above)
    assert high["right"] is None and high["left"]["index"] == 2
    mid = manifest.non_membership_proof(between)
    assert (mid["left"]["index"], mid["right"]["index"]) == (1, 2)
    for probe, proof in [(below, low), (above, high), (between, mid)]:
        verify_non_membership(manifest.root, 3, probe, proof)

    empty = Manifest.from_commitments([])
    proof = empty.non_membership_proof(between)
    assert proof == {"commitment": between.hex(), "left": None, "right": None}
    verify_non_membership(merkle.EMPTY_ROOT, 0, between, proof)
    with pytest.raises(VerificationFailed, match="empty-tree root"):
        verify_non_membership(manifest.root, 0, between, proof)
    with pytest.raises(VerificationFailed, match="no neighbours"):
        verify_non_membership(manifest.root, 3, between, proof)

    one = Manifest.from_commitments([values[1]])
    for probe in (below, above):
        verify_non_membership(one.root, 1, probe, one.non_membership_proof(probe))


def test_forgeries_are_rejected() -> None:
    manifest = Manifest.from_commitments([c(i) for i in range(50)])
    leaves = manifest.leaves
    probe = (int.from_bytes(leaves[20], "big") + 1).to_bytes(32, "big")
    assert leaves[20] < probe < leaves[21]
    honest = manifest.non_membership_proof(probe)
    verify_non_membership(manifest.root, 50, probe, honest)

    def neighbour(i: int) -> dict:
        return manifest.membership_proof(leaves[i])

    non_adjacent = {**honest, "right": neighbour(22)}
    with pytest.raises(VerificationFailed, match="not adjacent"):
        verify_non_membership(manifest.root, 50, probe, non_adjacent)
    wrong_side = {**honest, "left": neighbour(21), "right": neighbour(22)}
    with pytest.raises(VerificationFailed, match="does not sort below"):
        verify_non_membership(manifest.root, 50, probe, wrong_side)
    only_right = {**honest, "left": None}
    with pytest.raises(VerificationFailed, match="must be leaf 0"):
        verify_non_membership(manifest.root, 50, probe, only_right)
    only_left = {**honest, "right": None}
    with pytest.raises(VerificationFailed, match="must be leaf 49"):
        verify_non_membership(manifest.root, 50, probe, only_left)
    lying_index = {**honest, "right": {**honest["right"], "index": 22}}
    with pytest.raises(VerificationFailed, match="right neighbour"):
        verify_non_membership(manifest.root, 50, probe, lying_index)
    with pytest.raises(VerificationFailed, match="not about commitment"):
        verify_non_membership(manifest.root, 50, c(999), honest)
    with pytest.raises(VerificationFailed, match="hex"):
        verify_non_membership(manifest.root, 50, probe, {**honest, "left": {**honest["left"], "commitment": "zz"}})


def test_leaves_file_round_trip_and_verifier(tmp_path: Path) -> None:
    manifest = Manifest.from_commitments([c(i) for i in range(7)])
    path = tmp_path / "manifest.leaves"
    manifest.write(path)
    assert path.read_bytes() == b"".join(manifest.leaves)
    assert Manifest.read(path).root == manifest.root
    assert verify_leaves_file(path, manifest.root, 7).leaves == manifest.leaves
    with pytest.raises(VerificationFailed, match="7 leaves, not 8"):
        verify_leaves_file(path, manifest.root, 8)
    with pytest.raises(VerificationFailed, match="root"):
        verify_leaves_file(path, Manifest.from_commitments([c(1)]).root, 7)

    leaves = manifest.leaves
    cases = {
        "unsorted": b"".join([leaves[1], leaves[0], *leaves[2:]]),
        "duplicate": b"".join([leaves[0], leaves[0], *leaves[2:]]),
        "truncated": b"".join(leaves)[:-1],
    }
    reasons = {"unsorted": "sorts before", "duplicate": "duplicates", "truncated": "multiple of 32"}
    for name, data in cases.items():
        bad = tmp_path / f"{name}.leaves"
        bad.write_bytes(data)
        with pytest.raises(VerificationFailed, match=reasons[name]):
            verify_leaves_file(bad, manifest.root, 7)
        with pytest.raises(BadInput, match=reasons[name]):
            Manifest.read(bad)
    with pytest.raises(BadInput, match="cannot read"):
        verify_leaves_file(tmp_path / "missing.leaves", manifest.root, 7)
