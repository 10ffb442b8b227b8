"""Fetch a tiled log's resources (C2SP tlog-tiles) over HTTP(S) or from a directory.

`TileLog` only fetches and checks shapes (a tile is exactly W hashes, a bundle exactly W
entries): nothing it returns is authenticated. `ledger.tiles.verify.TileTree` authenticates
tiles and entries against a verified checkpoint before any of them is used.

Standard library only (urllib): the auditor's base install has no HTTP client package.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ledger.errors import BadInput, ServiceError, VerificationFailed
from ledger.merkle import HASH_SIZE
from ledger.note import MAX_NOTE_BYTES
from ledger.tiles.layout import (
    CHECKPOINT_PATH,
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    bundle_path,
    decode_bundle,
    split_hashes,
    tile_path,
)

USER_AGENT = "erasure-tlog-client/1"
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)


@dataclass
class FetchStats:
    requests: int = 0
    bytes: int = 0  # as transferred (compressed where the log compressed them)

    def to_json(self) -> dict:
        return {"requests": self.requests, "bytes": self.bytes}


class NotServed(Exception):
    """The log answered that it has no such resource (HTTP 404, or no such file)."""


class TileLog:
    """A tiled log at `url`: `http(s)://host/prefix/`, `file:///dir` or a directory path.

    Responses are kept for the life of the object (tiles and bundles are immutable; the
    checkpoint is fetched afresh on every call).
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            if not parts.netloc:
                raise BadInput(f"log URL {url!r} has no host")
            self._dir = None
        elif parts.scheme == "file":
            self._dir = Path(unquote(parts.path))
        elif parts.scheme == "" or (len(parts.scheme) == 1 and url[1:3] in (":\\", ":/")):
            self._dir = Path(url)
        else:
            raise BadInput(f"log URL {url!r} is not http(s)://, file:// or a directory")
        if self._dir is not None and not self._dir.is_dir():
            raise BadInput(f"no tiled log directory at {self._dir}")
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.stats = FetchStats()
        self._cache: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"TileLog({self.url!r})"

    def checkpoint(self) -> bytes:
        """The log's current signed checkpoint note, unverified."""
        try:
            return self._get(CHECKPOINT_PATH, MAX_NOTE_BYTES)
        except NotServed:
            raise BadInput(f"no tiled log at {self.url}: it serves no checkpoint") from None

    def tile(self, level: int, index: int, width: int = TILE_WIDTH) -> bytes:
        """Tile `index` of `level` with `width` hashes, unverified. A partial tile the log no
        longer serves is read from the full tile that replaced it (tiles never change)."""
        path = tile_path(level, index, width)
        data, full = self._immutable(path, tile_path(level, index), TILE_WIDTH * HASH_SIZE)
        if full:
            split_hashes(data, f"{self.url}{tile_path(level, index)}", TILE_WIDTH)
            data = data[: width * HASH_SIZE]
        split_hashes(data, f"{self.url}{path}", width)
        return data

    def entries(self, index: int, width: int = TILE_WIDTH) -> list[bytes]:
        """The entries of bundle `index` (`width` of them), unverified."""
        path = bundle_path(index, width)
        data, full = self._immutable(path, bundle_path(index), MAX_BUNDLE_BYTES)
        if full:
            return decode_bundle(data, f"{self.url}{bundle_path(index)}", TILE_WIDTH)[:width]
        return decode_bundle(data, f"{self.url}{path}", width)

    def _immutable(self, path: str, full: str, limit: int) -> tuple[bytes, bool]:
        """`path`, or the full resource `full` when a partial `path` is gone; whether it is `full`."""
        try:
            return self._fetch_once(path, limit), path == full
        except NotServed:
            if path == full:
                raise VerificationFailed(f"the log at {self.url} does not serve {path}, which its checkpoint "
                                         "needs (not found)") from None
        try:
            return self._fetch_once(full, limit), True
        except NotServed:
            raise VerificationFailed(f"the log at {self.url} serves neither {path} nor {full}, which its "
                                     "checkpoint needs (not found)") from None

    def _fetch_once(self, path: str, limit: int) -> bytes:
        if path not in self._cache:
            self._cache[path] = self._get(path, limit)
        return self._cache[path]

    def _get(self, path: str, limit: int) -> bytes:
        if self._dir is not None:
            try:
                data = (self._dir / path).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                raise NotServed(path) from None
            except OSError as err:
                raise ServiceError(f"cannot read {self._dir / path}: {err.strerror}") from None
            self._count(len(data))
            return _bounded(data, limit, f"{self.url}{path}")
        url = self.url + path
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, identity", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(limit + 1)
                encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        except urllib.error.HTTPError as err:
            err.close()
            if err.code in (404, 410):
                raise NotServed(path) from None
            raise ServiceError(f"cannot fetch {url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise ServiceError(f"cannot fetch {url}: {reason}") from None
        self._count(len(body))
        if encoding == "gzip":
            body = _gunzip(body, limit, url)
        elif encoding != "identity":
            raise VerificationFailed(f"{url}: unsupported Content-Encoding {encoding!r}")
        return _bounded(body, limit, url)

    def _count(self, size: int) -> None:
        self.stats.requests += 1
        self.stats.bytes += size


def _bounded(data: bytes, limit: int, what: str) -> bytes:
    if len(data) > limit:
        raise VerificationFailed(f"{what} is larger than the {limit} bytes such a resource can be")
    return data


def _gunzip(data: bytes, limit: int, what: str) -> bytes:
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error as err:
        raise VerificationFailed(f"{what}: bad gzip body: {err}") from None
    if len(out) > limit:
        raise VerificationFailed(f"{what} is larger than the {limit} bytes such a resource can be")
    if not inflate.eof:
        raise VerificationFailed(f"{what}: truncated gzip body")
    return out
