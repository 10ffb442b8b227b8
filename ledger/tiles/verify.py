"""A tiled log's tree at one verified checkpoint: hashes, proofs and entries from its tiles,
each authenticated against the checkpoint's signed root before it is used.

How tiles are authenticated (the scheme of Go's sumdb `TileHashReader`):

- the partial tiles of a tree of size n (its right edge, one per level with
  floor(n / 256**L) mod 256 > 0) hold, between them, every perfect subtree covering [0, n):
  the root recomputed from them alone must be the checkpoint's root;
- a full tile hashes (as the perfect subtree of its 256 hashes) to one hash of its parent tile
  at the level above, which is checked first, up to a partial tile of the edge;
- an entry bundle's entries hash to the leaf hashes of the (checked) level-0 tile.

Nothing is fetched that a request does not need: a checkpoint, the edge tiles (about
log256(n) small tiles), the tiles on the requested paths and the bundles of requested entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.audit import save_state, state_file
from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, Node, leaf_hash, prove_consistency, prove_inclusion, tree_root
from ledger.merkle import root as merkle_root
from ledger.note import Checkpoint, Verifier, verify_checkpoint
from ledger.tiles.client import TileLog
from ledger.tiles.layout import (
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_path,
    edge_tiles,
    split_hashes,
    tile_path,
    tile_width,
)

TileGetter = Callable[[int, int], bytes]


def _node(level: int, index: int, tile: TileGetter) -> bytes:
    """Perfect subtree (level, index) from the tile holding the hashes below it (a perfect
    subtree's RFC 6962 hash is the root of its leaves)."""
    tile_level, height = divmod(level, TILE_HEIGHT)
    first = index << height
    number, offset = divmod(first, TILE_WIDTH)
    data = tile(tile_level, number)
    start = offset * HASH_SIZE
    hashes = [data[i : i + HASH_SIZE] for i in range(start, start + (HASH_SIZE << height), HASH_SIZE)]
    return merkle_root(hashes)


class TileTree:
    """The tree of `checkpoint` (already verified), read from `log`'s tiles."""

    def __init__(self, log: TileLog, checkpoint: Checkpoint, note: str) -> None:
        self.log = log
        self.checkpoint = checkpoint
        self.note = note
        self._tiles: dict[tuple[int, int], bytes] = {}
        self._bundles: dict[int, list[bytes]] = {}
        self._check_edge()

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    def _check_edge(self) -> None:
        """Fetch the partial tiles of the right edge; they must recompute the signed root."""
        if self.size == 0:
            if self.root != EMPTY_ROOT:
                raise VerificationFailed("the log's checkpoint of size 0 does not carry the empty-tree root")
            return
        edge = {(level, index): self.log.tile(level, index, width) for level, index, width in edge_tiles(self.size)}
        root = tree_root(lambda nodes: [_node(level, index, lambda lv, n: edge[(lv, n)]) for level, index in nodes],
                         self.size)
        if root != self.root:
            paths = ", ".join(tile_path(level, index, width) for level, index, width in edge_tiles(self.size))
            raise VerificationFailed(f"the log's tiles {paths} do not hash to its signed root (size {self.size}): "
                                     "tampered, or not of this tree")
        self._tiles.update(edge)

    def _tile(self, level: int, index: int) -> bytes:
        """A tile of this tree, authenticated: edge tiles at construction, full tiles against
        their (authenticated) parent."""
        key = (level, index)
        if key in self._tiles:
            return self._tiles[key]
        width = tile_width(self.size, level, index)
        if width != TILE_WIDTH:
            raise BadInput(f"tile {level}/{index} is not part of a tree of size {self.size}")
        data = self.log.tile(level, index)
        parent_index, position = divmod(index, TILE_WIDTH)
        parent = self._tile(level + 1, parent_index)
        expected = parent[position * HASH_SIZE : (position + 1) * HASH_SIZE]
        if merkle_root(split_hashes(data, tile_path(level, index), TILE_WIDTH)) != expected:
            parent_path = tile_path(level + 1, parent_index, tile_width(self.size, level + 1, parent_index))
            raise VerificationFailed(f"tile {tile_path(level, index)} from {self.log.url} does not hash to its "
                                     f"entry in {parent_path}: tampered, or not of this tree")
        self._tiles[key] = data
        return data

    def read(self, nodes: Sequence[Node]) -> list[bytes]:
        """A `ledger.merkle.HashReader`: perfect subtrees of this tree, authenticated."""
        hashes = []
        for level, index in nodes:
            if level < 0 or index < 0 or (index + 1) << level > self.size:
                raise BadInput(f"subtree ({level}, {index}) is not part of a tree of size {self.size}")
            hashes.append(_node(level, index, self._tile))
        return hashes

    def root_at(self, size: int) -> bytes:
        """The root of the first `size` entries, from this tree's tiles."""
        if not 0 <= size <= self.size:
            raise BadInput(f"tree size {size} is outside 0..{self.size}")
        return tree_root(self.read, size)

    def leaf(self, index: int) -> bytes:
        self._check_index(index)
        return self.read([(0, index)])[0]

    def inclusion_proof(self, index: int) -> list[bytes]:
        self._check_index(index)
        return prove_inclusion(self.read, index, self.size)

    def consistency_proof(self, size1: int) -> list[bytes]:
        """RFC 6962 consistency proof from `size1` to this tree (e.g. for a witness)."""
        if not 0 <= size1 <= self.size:
            raise BadInput(f"tree size {size1} is outside 0..{self.size}")
        return prove_consistency(self.read, size1, self.size)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.size:
            raise VerificationFailed(f"entry {index} is not in the log's checkpoint of size {self.size}")

    def entry(self, index: int) -> bytes:
        """Entry `index`, verbatim, from its bundle, which is checked against the level-0 tile."""
        self._check_index(index)
        number, position = divmod(index, TILE_WIDTH)
        if number not in self._bundles:
            width = tile_width(self.size, 0, number)
            entries = self.log.entries(number, width)
            leaves = split_hashes(self._tile(0, number), tile_path(0, number, width), width)
            for i, (data, leaf) in enumerate(zip(entries, leaves, strict=True)):
                if leaf_hash(data) != leaf:
                    raise VerificationFailed(f"entry bundle {bundle_path(number, width)} from {self.log.url}: entry "
                                             f"{number * TILE_WIDTH + i} does not hash to its leaf in "
                                             f"{tile_path(0, number, width)}: tampered, or not of this tree")
            self._bundles[number] = entries
        return self._bundles[number][position]

    def check_entry(self, index: int, data: bytes) -> None:
        """The log serves exactly `data` at `index`, in this tree."""
        if self.entry(index) != data:
            raise VerificationFailed(f"the log serves another entry at index {index} than the one cited")

    def check_extends(self, older: Checkpoint, what: str = "a signed checkpoint", behind: str = "rolled back") -> None:
        """This tree extends `older` (a verified checkpoint of the same log, described as `what`):
        no fork, and no rollback (`behind` says what a smaller tree means there)."""
        if older.origin != self.origin:
            raise VerificationFailed(f"checkpoint origin {older.origin!r} is not the log's {self.origin!r}")
        if older.size > self.size:
            raise VerificationFailed(f"the log serves a checkpoint of size {self.size}, older than {what} "
                                     f"(size {older.size}): {behind}")
        if self.root_at(older.size) != older.root:
            raise VerificationFailed(f"the log's checkpoint (size {self.size}) is not consistent with {what} "
                                     f"(size {older.size}): the log forked")


def open_tree(log: TileLog, verifiers: Sequence[Verifier], origin: str) -> TileTree:
    """Fetch the log's checkpoint, verify its signature and origin, and authenticate its edge."""
    raw = log.checkpoint()
    try:
        checkpoint = verify_checkpoint(raw, verifiers, origin)
    except VerificationFailed as err:
        raise VerificationFailed(f"the checkpoint at {log.url}: {err}") from None
    return TileTree(log, checkpoint, raw.decode("utf-8"))


@dataclass(frozen=True)
class StateCheck:
    previous_size: int | None  # the size verified before; None on first use
    saved: bool


def check_state(tree: TileTree, verifiers: Sequence[Verifier], state_dir: Path) -> StateCheck:
    """The tree extends the checkpoint this auditor verified last time (kept in `state_dir`, as
    `erasure ledger verify` keeps it); then it becomes the one kept (trust on first use)."""
    path = state_file(state_dir, tree.origin)
    try:
        note = path.read_text()
    except FileNotFoundError:
        note = None
    except OSError as err:
        raise BadInput(f"cannot read auditor state {path}: {err.strerror}") from None
    previous = None
    if note is not None:
        try:
            previous = verify_checkpoint(note, verifiers, tree.origin)
        except VerificationFailed as err:
            raise VerificationFailed(f"saved checkpoint {path}: {err}") from None
        tree.check_extends(previous, "the checkpoint verified before")
    newer = previous is None or previous.size < tree.size
    if newer:
        save_state(path, tree.note)
    return StateCheck(None if previous is None else previous.size, newer)


@dataclass(frozen=True)
class LogReport:
    url: str
    origin: str
    checkpoint_size: int
    previous_size: int | None  # the size this auditor verified before; None on first use or without state
    entries: dict[int, bytes]  # the requested entries, verified
    fetched: dict  # requests and bytes

    def to_json(self) -> dict:
        return {"url": self.url, "origin": self.origin, "checkpoint_size": self.checkpoint_size,
                "previous_size": self.previous_size, "fetched": self.fetched,
                "entries": [{"index": i, "entry": data.decode("utf-8", errors="replace")}
                            for i, data in sorted(self.entries.items())]}


def verify_log(url: str, verifiers: Sequence[Verifier], origin: str, state_dir: Path | None = None,
               entries: Sequence[int] = ()) -> LogReport:
    """`erasure ledger verify --log URL`: the served checkpoint, its consistency with the one
    verified last time (with `state_dir`), and the requested entries, from tiles only."""
    tree = open_tree(TileLog(url), verifiers, origin)
    previous = check_state(tree, verifiers, state_dir).previous_size if state_dir is not None else None
    found = {index: tree.entry(index) for index in entries}
    return LogReport(tree.log.url, tree.origin, tree.size, previous, found, tree.log.stats.to_json())
