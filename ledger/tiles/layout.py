"""C2SP tlog-tiles resources: their paths, their widths at a tree size, entry bundles.

https://c2sp.org/tlog-tiles: a tile is up to 256 consecutive hashes of one tile level; level
L holds the hashes of the perfect subtrees of 256**L leaves (level 0: the leaf hashes), so hash i
of tile N at level L is RFC 6962 node (8L, 256N + i). A tile of fewer than 256 hashes is
partial (path suffix `.p/<W>`); the tile at level L of a tree of size s holds
floor(s / 256**L) mod 256 hashes. Entry bundles hold the entries of the level-0 tile with the
same index, each prefixed by its length as a big-endian uint16.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF  # the uint16 length prefix of an entry bundle
CHECKPOINT_PATH = "checkpoint"

_INDEX = r"(?:x\d{3}/)*\d{3}"
_TILE = re.compile(rf"tile/(?:(0|[1-9]\d?)|(entries))/({_INDEX})(?:\.p/([1-9]\d{{0,2}}))?")


def encode_index(index: int) -> str:
    """A tile index as zero-padded 3-digit path elements, all but the last prefixed `x`:
    1234067 -> x001/x234/067."""
    if index < 0:
        raise ValueError(f"tile index {index} is negative")
    groups = []
    while True:
        index, group = divmod(index, 1000)
        groups.append(group)
        if not index:
            break
    *upper, last = reversed(groups)
    return "".join(f"x{g:03d}/" for g in upper) + f"{last:03d}"


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"tile level {level} is outside 0..{MAX_LEVEL}")
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def bundle_path(index: int, width: int = TILE_WIDTH) -> str:
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


def parse_path(path: str) -> tuple[int | None, int, int] | None:
    """(level, or None for an entry bundle; index; width) of a tile path, None if it is not one."""
    match = _TILE.fullmatch(path)
    if match is None:
        return None
    level, _, index, width = match.groups()
    if (width is not None and int(width) >= TILE_WIDTH) or (level is not None and int(level) > MAX_LEVEL):
        return None
    digits = index.replace("x", "").replace("/", "")
    if len(index) > 3 and index.startswith("x000"):  # one index, one path: no leading zero groups
        return None
    return (None if level is None else int(level)), int(digits), (TILE_WIDTH if width is None else int(width))


def level_size(size: int, level: int) -> int:
    """How many hashes level `level` holds for a tree of `size` leaves."""
    return size >> (TILE_HEIGHT * level)


def tile_width(size: int, level: int, index: int) -> int:
    """Hashes in tile `index` of `level` for a tree of `size` leaves (0: the tile does not exist yet)."""
    return max(0, min(TILE_WIDTH, level_size(size, level) - index * TILE_WIDTH))


def edge_tiles(size: int) -> list[tuple[int, int, int]]:
    """(level, index, width) of the partial tiles of a tree: its right edge, lowest level first."""
    edge = []
    level = 0
    while hashes := level_size(size, level):
        index, width = divmod(hashes, TILE_WIDTH)
        if width:
            edge.append((level, index, width))
        level += 1
    return edge


def split_hashes(data: bytes, what: str, width: int) -> list[bytes]:
    """A tile's hashes; VerificationFailed unless it is exactly `width` hashes long."""
    if len(data) != width * HASH_SIZE:
        raise VerificationFailed(f"{what} is {len(data)} bytes, not {width} hashes ({width * HASH_SIZE} bytes)")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes], first: int = 0) -> bytes:
    """Entries as an entry bundle; `first` is the index of the first, for the error."""
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_BYTES:
            raise BadInput(f"entry {first + i} is {len(entry)} bytes: a tlog-tiles entry bundle holds entries "
                           f"of at most {MAX_ENTRY_BYTES} bytes")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, what: str, width: int) -> list[bytes]:
    """The entries of a bundle; VerificationFailed unless it holds exactly `width` of them."""
    entries, offset = [], 0
    while offset < len(data):
        if len(entries) == width:
            raise VerificationFailed(f"{what} holds more than {width} entries")
        if offset + 2 > len(data):
            raise VerificationFailed(f"{what} is truncated in the length of entry {len(entries)}")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(data):
            raise VerificationFailed(f"{what} is truncated in entry {len(entries)}")
        entries.append(data[offset : offset + length])
        offset += length
    if len(entries) != width:
        raise VerificationFailed(f"{what} holds {len(entries)} entries, not {width}")
    return entries
