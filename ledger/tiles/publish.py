"""Publish the ledger as a C2SP tiled log: a directory any static HTTP server can serve, or
an object store (an S3 bucket served over HTTP, or by `erasure ledger serve --from`).

The target holds `checkpoint` (the newest signed checkpoint, verbatim), `tile/<L>/<N>[.p/<W>]`
and `tile/entries/<N>[.p/<W>]`, keyed as their URL paths. Each publish adds what the tree grew
by since the checkpoint already published, and writes that checkpoint last, so a reader never
sees a checkpoint whose tiles are missing. Full tiles are written once and never rewritten (the
object store's write-once put): finding other bytes under a full tile's name stops the publish.
A partial tile is written for the published size and deleted (as the spec allows) once its full
tile exists; clients then read the full tile's prefix. Publishers take turns — on a lock file in
a directory, on the ledger store's publishing lock for an object store (held across hosts when
the ledger is in PostgreSQL) — and a publish never replaces the checkpoint by an older one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ledger.errors import BadInput, ServiceError, VerificationFailed
from ledger.merkle import stored_index, tree_root
from ledger.note import Checkpoint, parse_checkpoint, parse_note
from ledger.objects import LocalObjects, ObjectMissing, ObjectStore, open_object_store
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
Target = Path | str | ObjectStore  # a directory, a URL (s3://..., file://...), or an opened store


@dataclass(frozen=True)
class Published:
    target: str  # the directory or object store URL
    size: int  # the size of the checkpoint the target now serves
    previous_size: int | None  # what it served before; None for a new target
    tiles: int  # hash tiles written
    bundles: int  # entry bundles written

    def to_json(self) -> dict:
        return asdict(self)


def tiles_target(workspace: Workspace) -> Path | str | None:
    """`[ledger] tiles_dir` of erasure.toml, where checkpoints publish: a directory (relative to
    ERASURE_HOME) or an object store URL (`s3://BUCKET/PREFIX?endpoint=...`)."""
    value = workspace.config().get("ledger", {}).get("tiles_dir")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadInput(f"{workspace.config_file}: [ledger] tiles_dir must be a non-empty string")
    if "://" in value:
        return value
    return workspace.home / Path(value).expanduser()


def default_tiles_target(workspace: Workspace) -> Path | str:
    target = tiles_target(workspace)
    return workspace.home / "tiles" if target is None else target


def open_target(target: Target) -> ObjectStore:
    """The object store a target names (a directory is a local one)."""
    if isinstance(target, ObjectStore):
        return target
    return LocalObjects(target) if isinstance(target, Path) else open_object_store(target)


def _unverified(note: str | bytes) -> Checkpoint:
    return parse_checkpoint(parse_note(note).text)


def publish(store: LogStore, target: Target) -> Published:
    """Publish the log's newest signed checkpoint and the tiles and bundles it needs."""
    objects = open_target(target)
    try:
        with _turn(objects, store), store.reading() as view:
            return _publish(view, store.origin, objects)
    except OSError as err:
        raise ServiceError(f"cannot publish the ledger to {objects.url}: {err.strerror or err}") from None


def _publish(view: LogReader, origin: str, objects: ObjectStore) -> Published:
    latest = view.latest_checkpoint()
    if latest is None:
        raise BadInput("the ledger has no signed checkpoint to publish: run `erasure ledger checkpoint`")
    size, note = latest
    checkpoint = _unverified(note)
    read = hash_reader(view)
    served = _served(objects)
    previous = None if served is None else _published(objects, served, origin)
    if previous is not None:
        if previous.size > size:  # a newer checkpoint is already out there
            return Published(objects.url, previous.size, previous.size, 0, 0)
        if tree_root(read, previous.size) != previous.root:
            raise VerificationFailed(f"refusing to publish to {objects.url}: it serves a checkpoint of size "
                                     f"{previous.size} that this ledger is not consistent with")
    start = 0 if previous is None else previous.size
    tiles = bundles = 0
    level = 0
    while hashes := level_size(size, level):
        old = level_size(start, level)
        for number in range(old // TILE_WIDTH, hashes // TILE_WIDTH):  # tiles completed since `start`
            tiles += _put_tile(view, objects, level, number, TILE_WIDTH)
            if level == 0:
                bundles += _put_bundle(view, objects, number, TILE_WIDTH)
        number, width = divmod(hashes, TILE_WIDTH)
        if width:
            tiles += _put_tile(view, objects, level, number, width)
            if level == 0:
                bundles += _put_bundle(view, objects, number, width)
        level += 1
    if checkpoint.root != tree_root(read, size):
        raise VerificationFailed(f"refusing to publish: the stored checkpoint of size {size} does not match the log")
    if served != note.encode():  # same size: new cosignatures
        objects.replace(CHECKPOINT_PATH, note.encode())
    return Published(objects.url, size, None if previous is None else previous.size, tiles, bundles)


def _served(objects: ObjectStore) -> bytes | None:
    try:
        return objects.get(CHECKPOINT_PATH)
    except ObjectMissing:
        return None


def _published(objects: ObjectStore, note: bytes, origin: str) -> Checkpoint:
    try:
        checkpoint = _unverified(note)
    except VerificationFailed as err:
        raise BadInput(f"{objects.url}/{CHECKPOINT_PATH} is not a checkpoint: {err}") from None
    if checkpoint.origin != origin:
        raise BadInput(f"{objects.url} publishes the log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


def _put_tile(view: LogReader, objects: ObjectStore, level: int, number: int, width: int) -> int:
    first = number * TILE_WIDTH
    positions = [stored_index(TILE_HEIGHT * level, first + i) for i in range(width)]
    written = _put(objects, tile_path(level, number, width), b"".join(view.read_hashes(positions)))
    if width == TILE_WIDTH:
        _drop_partials(objects, tile_path(level, number))
    return written


def _put_bundle(view: LogReader, objects: ObjectStore, number: int, width: int) -> int:
    first = number * TILE_WIDTH
    entries = [data for _, data in view.entries(first, first + width)]
    written = _put(objects, bundle_path(number, width), encode_bundle(entries, first))
    if width == TILE_WIDTH:
        _drop_partials(objects, bundle_path(number))
    return written


def _drop_partials(objects: ObjectStore, full: str) -> None:
    """The partial versions of a tile now full (`N.p/W`), no longer needed."""
    for key in objects.list(full + ".p/"):
        objects.delete(key)


def _put(objects: ObjectStore, key: str, data: bytes) -> int:
    """Write an immutable resource; 1 if written, 0 if it was there with the same bytes."""
    if objects.put_if_absent(key, data):
        return 1
    if objects.get(key) != data:
        raise VerificationFailed(f"refusing to rewrite {objects.url}/{key}: it holds other bytes, and tiles never "
                                 f"change (does {objects.url} hold another log?)")
    return 0


def _turn(objects: ObjectStore, store: LogStore) -> AbstractContextManager[None]:
    """One publisher at a time: a lock file in a directory; else the ledger store's own lock."""
    if isinstance(objects, LocalObjects):
        return _locked(objects.root)
    return store.publishing()


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    import fcntl  # here, not at the top: `ledger` (the auditor's install) also imports on systems without it

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
