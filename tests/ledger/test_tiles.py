"""The ledger as a C2SP tiled log: paths, widths and bundles per spec; publishing as the log
grows; verification from tiles alone, and refusal of tampered tiles, bundles and histories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import BadInput, VerificationFailed
from ledger.log import Ledger
from ledger.note import Signer, verify_checkpoint
from ledger.tiles import TileLog, check_state, open_tree
from ledger.tiles.layout import (
    bundle_path,
    decode_bundle,
    edge_tiles,
    encode_bundle,
    encode_index,
    level_size,
    parse_path,
    tile_path,
    tile_width,
)
from ledger.tiles.publish import publish

ORIGIN = "test.erasure.local/ledger/v1"


def grow(ledger: Ledger, size: int) -> None:
    while ledger.size < size:
        ledger.append_many([("key_event", {"n": i}) for i in range(ledger.size, min(size, ledger.size + 20000))])
    ledger.checkpoint()


def tree_of(directory: Path, signer: Signer):  # type: ignore[no-untyped-def]
    return open_tree(TileLog(str(directory)), [signer.verifier], ORIGIN)


# --- paths and widths (c2sp.org/tlog-tiles) -------------------------------------------------

@pytest.mark.parametrize(("index", "encoded"), [
    (0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067"),  # the spec's example
    (1_000_000, "x001/x000/000"), (123_456_789, "x123/x456/789"),
])
def test_index_encoding(index: int, encoded: str) -> None:
    assert encode_index(index) == encoded
    assert parse_path(f"tile/3/{encoded}") == (3, index, 256)


def test_tile_and_bundle_paths() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 0, 17) == "tile/1/000.p/17"
    assert bundle_path(273, 112) == "tile/entries/273.p/112"
    assert bundle_path(1234067) == "tile/entries/x001/x234/067"
    assert parse_path("tile/entries/x001/x234/067.p/5") == (None, 1234067, 5)
    assert parse_path("tile/63/000") == (63, 0, 256)
    for width in (0, 257):
        with pytest.raises(ValueError):
            tile_path(0, 0, width)


@pytest.mark.parametrize("path", [
    "tile/00/000", "tile/64/000", "tile/0/1", "tile/0/0000", "tile/0/x000/001", "tile/0/001/002", "tile/0/000.p/256",
    "tile/0/000.p/0", "tile/0/000.p/07", "tile/entries/000.p", "tile/0/000/", "/tile/0/000", "tile/0/../checkpoint",
    "checkpoint", ".publish.lock", "tile/x/000",
])
def test_non_tile_paths(path: str) -> None:
    assert parse_path(path) is None


def test_widths_of_the_spec_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0 tile of
    # width 112, one full level 1 tile, one partial level 1 tile of width 17, and one partial level 2 tile of width 1"
    assert level_size(70000, 0) // 256 == 273 and level_size(70000, 1) // 256 == 1
    assert edge_tiles(70000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert [tile_width(70000, 0, n) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile of width 1"
    assert edge_tiles(256) == [(1, 0, 1)] and tile_width(256, 0, 0) == 256
    assert edge_tiles(0) == [] and edge_tiles(1) == [(0, 0, 1)]


def test_entry_bundles() -> None:
    entries = [b"", b"a", b"x" * 300, b"\x00\xff" * 30000]
    data = encode_bundle(entries)
    assert data[:5] == b"\x00\x00\x00\x01a" and len(data) == 2 * 4 + sum(map(len, entries))
    assert decode_bundle(data, "b", 4) == entries
    with pytest.raises(VerificationFailed, match="holds 4 entries, not 5"):
        decode_bundle(data, "b", 5)
    with pytest.raises(VerificationFailed, match="more than 3 entries"):
        decode_bundle(data, "b", 3)
    with pytest.raises(VerificationFailed, match="truncated in entry 3"):
        decode_bundle(data[:-1], "b", 4)
    with pytest.raises(VerificationFailed, match="truncated in the length of entry 1"):
        decode_bundle(b"\x00\x00\x01", "b", 2)
    with pytest.raises(BadInput, match="entry 7 is 65536 bytes: a tlog-tiles entry bundle holds entries of at most"):
        encode_bundle([b"x" * 65536], first=7)


# --- publishing and verifying as the log grows ----------------------------------------------

@pytest.fixture
def log(tmp_path: Path, signer: Signer):  # type: ignore[no-untyped-def]
    with Ledger.open(tmp_path / "ledger.db", ORIGIN, signer) as ledger:
        yield ledger


def test_consistency_and_inclusion_across_growth(log: Ledger, signer: Signer, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    seen = []  # (checkpoint, root) of every size published so far
    for size in (1, 2, 255, 256, 257, 511, 512, 700):
        grow(log, size)
        result = publish(log.store, out)
        assert (result.size, result.previous_size) == (size, seen[-1].size if seen else None)
        assert (out / "checkpoint").read_text() == log.latest_checkpoint()
        tree = tree_of(out, signer)
        assert (tree.size, tree.root) == (size, log.root())
        for index in {0, size // 2, size - 1}:
            assert tree.entry(index) == log.entry(index)
            assert tree.inclusion_proof(index) == log.inclusion_proof(index)
        for older in seen:
            tree.check_extends(older)
            assert tree.consistency_proof(older.size) == log.consistency_proof(older.size)
        seen.append(tree.checkpoint)
    partials = sorted(str(p.relative_to(out)) for p in out.rglob("*.p/*"))
    # 700 = 2 * 256 + 188; the partials of smaller sizes are gone once their full tile is there
    assert partials == ["tile/0/002.p/188", "tile/1/000.p/1", "tile/1/000.p/2", "tile/entries/002.p/188"]


def test_fetches_only_the_paths_it_needs(log: Ledger, signer: Signer, tmp_path: Path) -> None:
    grow(log, 70000)  # three tile levels
    publish(log.store, tmp_path / "tiles")
    tree = tree_of(tmp_path / "tiles", signer)
    assert tree.log.stats.requests == 4  # checkpoint + the edge: tile/0/273.p/112, tile/1/001.p/17, tile/2/000.p/1
    assert tree.entry(12345) == log.entry(12345)
    assert tree.log.stats.requests == 7  # + tile/entries/048, tile/0/048 and its parent tile/1/000
    tree.check_extends(verify_checkpoint(_checkpoint_at(log, signer, 1000), [signer.verifier]))
    assert tree.root_at(65536) == log.root(65536) and tree.root_at(69999) == log.root(69999)


def _checkpoint_at(log: Ledger, signer: Signer, size: int) -> str:
    from ledger.note import Checkpoint, sign_checkpoint

    return sign_checkpoint(Checkpoint(ORIGIN, size, log.root(size)), signer)


def test_full_tiles_are_never_rewritten(log: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    grow(log, 300)
    publish(log.store, out)
    full = out / "tile" / "0" / "000"
    before = (full.stat().st_ino, full.stat().st_mtime_ns)
    grow(log, 600)
    assert publish(log.store, out).tiles == 3  # tile/0/001, tile/0/002.p/88, tile/1/000.p/2
    assert (full.stat().st_ino, full.stat().st_mtime_ns) == before
    assert not (out / "tile/0/001.p").exists() and not (out / "tile/entries/001.p").exists()  # now full
    again = publish(log.store, out)
    assert (again.size, again.previous_size, again.tiles, again.bundles) == (600, 600, 0, 0)
    full.write_bytes(bytes(8192))
    grow(log, 800)
    os.remove(out / "checkpoint")  # publish everything again: the changed full tile is refused
    with pytest.raises(VerificationFailed, match="refusing to rewrite .*tile/0/000: it holds other bytes"):
        publish(log.store, out)


def test_publish_refuses_another_log(log: Ledger, signer: Signer, tmp_path: Path) -> None:
    grow(log, 10)
    publish(log.store, tmp_path / "tiles")
    with Ledger.open(tmp_path / "other.db", "other.example/log", Signer("other.example/log", signer.private_key)) as other:
        grow(other, 3)
        with pytest.raises(BadInput, match="publishes the log 'test.erasure.local/ledger/v1', not 'other.example/log'"):
            publish(other.store, tmp_path / "tiles")
    with Ledger.open(tmp_path / "fork.db", ORIGIN, signer) as fork:
        fork.append("key_event", {"forked": True})
        grow(fork, 20)
        with pytest.raises(VerificationFailed, match="serves a checkpoint of size 10 that this ledger is not consistent"):
            publish(fork.store, tmp_path / "tiles")


def test_a_stale_publisher_never_replaces_a_newer_checkpoint(log: Ledger, tmp_path: Path) -> None:
    grow(log, 10)
    publish(log.store, tmp_path / "tiles")
    newer = (tmp_path / "tiles" / "checkpoint").read_text()
    grow(log, 5)  # no-op: the log is larger already; publish an older copy of the database
    old_db = tmp_path / "old.db"
    with Ledger.open(old_db, ORIGIN, log.signer) as old:
        for _, data in log.entries(0, 5):
            old.append("key_event", {"n": _json(data)["n"]})
    with Ledger.open(old_db, ORIGIN, log.signer) as old:
        old.checkpoint()
        assert publish(old.store, tmp_path / "tiles").size == 10
    assert (tmp_path / "tiles" / "checkpoint").read_text() == newer


def _json(data: bytes) -> dict:
    import json

    return json.loads(data)


def test_publish_needs_a_checkpoint(log: Ledger, tmp_path: Path) -> None:
    log.append("key_event", {})
    with pytest.raises(BadInput, match="no signed checkpoint to publish: run `erasure ledger checkpoint`"):
        publish(log.store, tmp_path / "tiles")


def test_a_log_too_large_for_its_bundles_is_not_published(log: Ledger, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ledger.log.MAX_ENTRY_BYTES", 1 << 20)  # a log written before append_many refused it
    log.append("request_received", {"commitments": ["ab" * 32] * 1000})
    log.checkpoint()
    with pytest.raises(BadInput, match="entry 0 is 67.* bytes: a tlog-tiles entry bundle holds entries of at most"):
        publish(log.store, tmp_path / "tiles")
    assert not (tmp_path / "tiles" / "checkpoint").exists()


# --- tampering, forks, rollbacks ---------------------------------------------------------------

@pytest.fixture
def published(log: Ledger, tmp_path: Path) -> Path:
    grow(log, 600)
    publish(log.store, tmp_path / "tiles")
    return tmp_path / "tiles"


def _flip(path: Path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_full_tile_is_refused(published: Path, signer: Signer) -> None:
    _flip(published / "tile/0/001")
    tree = tree_of(published, signer)  # the edge is intact
    assert tree.entry(0) and tree.entry(599)
    with pytest.raises(VerificationFailed, match=r"^tile tile/0/001 from .* does not hash to its entry in "
                                                 r"tile/1/000.p/2: tampered, or not of this tree$"):
        tree.entry(300)


def test_a_tampered_partial_tile_is_refused(published: Path, signer: Signer) -> None:
    _flip(published / "tile/0/002.p/88")
    with pytest.raises(VerificationFailed, match=r"^the log's tiles tile/0/002.p/88, tile/1/000.p/2 do not hash to its "
                                                 r"signed root \(size 600\): tampered, or not of this tree$"):
        tree_of(published, signer)


def test_a_tampered_entry_bundle_is_refused(published: Path, signer: Signer) -> None:
    bundle = published / "tile/entries/001"
    bundle.write_bytes(bundle.read_bytes().replace(b'"n":300', b'"n":301', 1))
    tree = tree_of(published, signer)
    with pytest.raises(VerificationFailed, match=r"^entry bundle tile/entries/001 from .*: entry 300 does not hash to "
                                                 r"its leaf in tile/0/001: tampered, or not of this tree$"):
        tree.entry(301)
    with pytest.raises(VerificationFailed, match="does not serve another entry|serves another entry at index 5"):
        tree.check_entry(5, b"{}")


@pytest.mark.parametrize(("path", "content", "reason"), [
    ("tile/0/001", bytes(100), r"tile/0/001 is 100 bytes, not 256 hashes \(8192 bytes\)"),
    ("tile/entries/001", b"\x00\x02{}", "tile/entries/001 holds 1 entries, not 256"),
])
def test_misshapen_resources_are_refused(published: Path, signer: Signer, path: str, content: bytes,
                                         reason: str) -> None:
    (published / path).write_bytes(content)
    with pytest.raises(VerificationFailed, match=reason):
        tree_of(published, signer).entry(300)


def test_a_missing_tile_is_refused_and_a_gone_partial_read_from_its_full_tile(published: Path, signer: Signer,
                                                                             log: Ledger) -> None:
    os.remove(published / "tile/0/001")
    with pytest.raises(VerificationFailed, match="does not serve tile/0/001, which its checkpoint needs"):
        tree_of(published, signer).entry(300)
    # a client holding the checkpoint of 600 while the log moves on and drops the partials of 600
    grow(log, 800)
    publish(log.store, published)
    (published / "checkpoint").write_text(_checkpoint_at(log, signer, 600))
    assert not (published / "tile/0/002.p").exists()
    tree = tree_of(published, signer)
    assert tree.size == 600 and tree.entry(599) == log.entry(599)


def test_the_checkpoint_must_be_signed_by_the_trusted_key(published: Path, signer: Signer) -> None:
    other = Signer(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(VerificationFailed, match=r"^the checkpoint at .*: note is not signed by a trusted key"):
        tree_of(published, other)
    with pytest.raises(VerificationFailed, match="origin 'test.erasure.local/ledger/v1' is not the expected 'x/y'"):
        open_tree(TileLog(str(published)), [signer.verifier], "x/y")


def test_auditor_state_catches_forks_and_rollbacks(log: Ledger, signer: Signer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    grow(log, 100)
    publish(log.store, tmp_path / "tiles")
    first = check_state(tree_of(tmp_path / "tiles", signer), [signer.verifier], state)
    assert (first.previous_size, first.saved) == (None, True)
    grow(log, 300)
    publish(log.store, tmp_path / "tiles")
    assert check_state(tree_of(tmp_path / "tiles", signer), [signer.verifier], state).previous_size == 100
    # the same log key signs a different history of the same origin: a split view
    with Ledger.open(tmp_path / "fork.db", ORIGIN, signer) as fork:
        fork.append("key_event", {"forked": True})
        grow(fork, 400)
        publish(fork.store, tmp_path / "fork")
        with pytest.raises(VerificationFailed, match=r"^the log's checkpoint \(size 400\) is not consistent with the "
                                                     r"checkpoint verified before \(size 300\): the log forked$"):
            check_state(tree_of(tmp_path / "fork", signer), [signer.verifier], state)
        grow(fork, 200)
        with Ledger.open(tmp_path / "short.db", ORIGIN, signer) as short:
            grow(short, 200)
            publish(short.store, tmp_path / "short")
        with pytest.raises(VerificationFailed, match=r"^the log serves a checkpoint of size 200, older than the "
                                                     r"checkpoint verified before \(size 300\): rolled back$"):
            check_state(tree_of(tmp_path / "short", signer), [signer.verifier], state)


def test_an_empty_log(log: Ledger, signer: Signer, tmp_path: Path) -> None:
    log.checkpoint()
    publish(log.store, tmp_path / "tiles")
    tree = tree_of(tmp_path / "tiles", signer)
    assert tree.size == 0 and tree.log.stats.requests == 1
    with pytest.raises(VerificationFailed, match="entry 0 is not in the log's checkpoint of size 0"):
        tree.entry(0)


def test_checkpoints_publish_automatically_when_configured(workspace, runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cli.app import app
    from ledger.log import open_ledger

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    workspace.ensure().config_file.write_text('[ledger]\ntiles_dir = "public"\n')
    with open_ledger(workspace, sign=True) as ledger:
        ledger.append("key_event", {"n": 1})
        note = ledger.checkpoint()
        assert (workspace.home / "public" / "checkpoint").read_text() == note
        assert (workspace.home / "public" / "tile/entries/000.p/1").exists()
        ledger.append("key_event", {"n": 2})
        index = ledger.append("key_event", {"n": 3})
        ledger.tlog_proof(index)  # checkpoints (and so publishes) on the way
        assert (workspace.home / "public" / "tile/0/000.p/3").exists()


def test_a_failed_automatic_publish_costs_a_warning_not_the_checkpoint(log: Ledger, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    log.publish_to = tmp_path / "tiles"
    log.append("key_event", {})
    log.checkpoint()
    monkeypatch.setattr("ledger.log.MAX_ENTRY_BYTES", 1 << 20)  # a log written before append_many refused it
    log.append("request_received", {"commitments": ["ab" * 32] * 1000})  # too large for an entry bundle
    note = log.checkpoint()
    assert note == log.latest_checkpoint() and "\n2\n" in note
    assert "the ledger's tiles in" in caplog.text and "entry 1 is 67" in caplog.text
    assert (tmp_path / "tiles" / "checkpoint").read_text().split("\n")[1] == "1"  # the last one it could publish
