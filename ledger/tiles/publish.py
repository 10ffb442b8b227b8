"""Publish the ledger as a C2SP tiled log: a directory any static HTTP server can serve.

The directory holds `checkpoint` (the newest signed checkpoint, verbatim), `tile/<L>/<N>[.p/<W>]`
and `tile/entries/<N>[.p/<W>]`, laid out as their URL paths. Each publish adds what the tree
grew by since the checkpoint already published, and writes that checkpoint last, so a reader
never sees a checkpoint whose tiles are missing. Full tiles are written once and never
rewritten: finding other bytes under a full tile's name stops the publish. A partial tile is
written for the published size and deleted (as the spec allows) once its full tile exists;
clients then read the full tile's prefix. Publishers in several processes take turns on a lock
file, and a publish never replaces the directory's checkpoint by an older one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ledger.errors import BadInput, ServiceError, VerificationFailed
from ledger.merkle import stored_index, tree_root
from ledger.note import Checkpoint, parse_checkpoint, parse_note
from ledger.store import LogReader, LogStore, hash_reader
from ledger.tiles.layout import (
    CHECKPOINT_PATH,
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_path,
    encode_bundle,
    level_size,
    tile_path,
)
from ledger.workspace import Workspace

LOCK_FILE = ".publish.lock"


@dataclass(frozen=True)
class Published:
    directory: str
    size: int  # the size of the checkpoint the directory now serves
    previous_size: int | None  # what it served before; None for a new directory
    tiles: int  # hash tiles written
    bundles: int  # entry bundles written

    def to_json(self) -> dict:
        return asdict(self)


def tiles_dir(workspace: Workspace) -> Path | None:
    """`[ledger] tiles_dir` of erasure.toml (relative to ERASURE_HOME), where checkpoints publish."""
    value = workspace.config().get("ledger", {}).get("tiles_dir")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadInput(f"{workspace.config_file}: [ledger] tiles_dir must be a non-empty string")
    return workspace.home / Path(value).expanduser()


def default_tiles_dir(workspace: Workspace) -> Path:
    return tiles_dir(workspace) or workspace.home / "tiles"


def _unverified(note: str | bytes) -> Checkpoint:
    return parse_checkpoint(parse_note(note).text)


def publish(store: LogStore, directory: Path) -> Published:
    """Publish the log's newest signed checkpoint and the tiles and bundles it needs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory), store.reading() as view:
            return _publish(view, store.origin, directory)
    except OSError as err:
        raise ServiceError(f"cannot publish the ledger to {directory}: {err.strerror or err}") from None


def _publish(view: LogReader, origin: str, directory: Path) -> Published:
    latest = view.latest_checkpoint()
    if latest is None:
        raise BadInput("the ledger has no signed checkpoint to publish: run `erasure ledger checkpoint`")
    size, note = latest
    checkpoint = _unverified(note)
    read = hash_reader(view)
    previous = _published(directory, origin)
    if previous is not None:
        if previous.size > size:  # a newer checkpoint is already out there
            return Published(str(directory), previous.size, previous.size, 0, 0)
        if tree_root(read, previous.size) != previous.root:
            raise VerificationFailed(f"refusing to publish to {directory}: it serves a checkpoint of size "
                                     f"{previous.size} that this ledger is not consistent with")
    start = 0 if previous is None else previous.size
    tiles = bundles = 0
    level = 0
    while hashes := level_size(size, level):
        old = level_size(start, level)
        for number in range(old // TILE_WIDTH, hashes // TILE_WIDTH):  # tiles completed since `start`
            tiles += _put_tile(view, directory, level, number, TILE_WIDTH)
            if level == 0:
                bundles += _put_bundle(view, directory, number, TILE_WIDTH)
        number, width = divmod(hashes, TILE_WIDTH)
        if width:
            tiles += _put_tile(view, directory, level, number, width)
            if level == 0:
                bundles += _put_bundle(view, directory, number, width)
        level += 1
    if checkpoint.root != tree_root(read, size):
        raise VerificationFailed(f"refusing to publish: the stored checkpoint of size {size} does not match the log")
    current = directory / CHECKPOINT_PATH
    if not current.exists() or current.read_text(encoding="utf-8") != note:  # same size: new cosignatures
        _write(current, note.encode())
    return Published(str(directory), size, None if previous is None else previous.size, tiles, bundles)


def _published(directory: Path, origin: str) -> Checkpoint | None:
    path = directory / CHECKPOINT_PATH
    try:
        note = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        checkpoint = _unverified(note)
    except VerificationFailed as err:
        raise BadInput(f"{path} is not a checkpoint: {err}") from None
    if checkpoint.origin != origin:
        raise BadInput(f"{directory} publishes the log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


def _put_tile(view: LogReader, directory: Path, level: int, number: int, width: int) -> int:
    first = number * TILE_WIDTH
    positions = [stored_index(TILE_HEIGHT * level, first + i) for i in range(width)]
    written = _put(directory, tile_path(level, number, width), b"".join(view.read_hashes(positions)))
    if width == TILE_WIDTH:
        _drop_partials(directory / tile_path(level, number))
    return written


def _put_bundle(view: LogReader, directory: Path, number: int, width: int) -> int:
    first = number * TILE_WIDTH
    entries = [data for _, data in view.entries(first, first + width)]
    written = _put(directory, bundle_path(number, width), encode_bundle(entries, first))
    if width == TILE_WIDTH:
        _drop_partials(directory / bundle_path(number))
    return written


def _drop_partials(full: Path) -> None:
    """The partial versions of a tile now full (`N.p/`), no longer needed."""
    shutil.rmtree(full.with_name(full.name + ".p"), ignore_errors=True)


def _put(directory: Path, relative: str, data: bytes) -> int:
    """Write an immutable resource; 1 if written, 0 if it was there with the same bytes."""
    path = directory / relative
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        _write(path, data)
        return 1
    if existing != data:
        raise VerificationFailed(f"refusing to rewrite {path}: it holds other bytes, and tiles never change "
                                 f"(does {directory} hold another log?)")
    return 0


def _write(path: Path, data: bytes) -> None:
    """Atomically, and durably before anything that refers to it is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    import fcntl  # here, not at the top: `ledger` (the auditor's install) also imports on systems without it

    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
