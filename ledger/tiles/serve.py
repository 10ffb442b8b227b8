"""Serve published tiles over HTTP (C2SP tlog-tiles), for local use: from a directory, or
from the object store they were published to.

Only the spec's resources are served: `checkpoint` (text/plain, not cached beyond a few
seconds) and tile and entry-bundle paths (application/octet-stream, immutable); entry bundles
are gzipped for clients that accept it. Anything else is a 404, so nothing else in the
directory (the lock file, temporary files) leaks. Nothing is verified here: the client verifies
everything it fetches. Any static file server serving the directory (or the bucket, read-only)
does as well in production.
"""

from __future__ import annotations

import gzip
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ledger.errors import BadInput, ErasureError
from ledger.objects import ObjectMissing, ObjectStore
from ledger.tiles.layout import CHECKPOINT_PATH, parse_path
from ledger.tiles.publish import Target, open_target

IMMUTABLE = "public, max-age=31536000, immutable"
CHECKPOINT_CACHE = "public, max-age=2"


class TileHandler(BaseHTTPRequestHandler):
    objects: ObjectStore  # set on the subclass `make_server` builds
    server_version = "erasure-tiles/1"

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = urlsplit(self.path).path.removeprefix("/")
        parsed = parse_path(path)
        if path == CHECKPOINT_PATH:
            kind, cache = "text/plain; charset=utf-8", CHECKPOINT_CACHE
        elif parsed is not None:
            kind, cache = "application/octet-stream", IMMUTABLE
        else:
            return self._status(HTTPStatus.NOT_FOUND)
        try:
            data = self.objects.get(path)
        except ObjectMissing:
            return self._status(HTTPStatus.NOT_FOUND)
        except ErasureError:  # the object store is down: the client tries again later
            return self._status(HTTPStatus.SERVICE_UNAVAILABLE)
        headers = {"Content-Type": kind, "Cache-Control": cache}
        if parsed is not None and parsed[0] is None:  # entry bundles: compressed if the client takes gzip
            headers["Vary"] = "Accept-Encoding"
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                data = gzip.compress(data, mtime=0)
                headers["Content-Encoding"] = "gzip"
        self.send_response(HTTPStatus.OK)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _status(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: a log server is hit per tile
        pass


def make_server(target: Target, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server for the tiles published to `target` (not started); port 0 picks a free port."""
    objects = open_target(target)
    if not objects.exists(CHECKPOINT_PATH):
        raise BadInput(f"{objects.url} holds no published checkpoint: run `erasure ledger publish --to {objects.url}`")
    handler = type("Handler", (TileHandler,), {"objects": objects})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        raise BadInput(f"cannot listen on {host}:{port}: {err.strerror}") from None


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
