"""The witness over HTTP: `POST /add-checkpoint` (C2SP tlog-witness), standard library only.

HTTP/1.1 with keep-alive; a body needs a Content-Length and may be at most
`MAX_REQUEST_BYTES`. Every answer is one request line in the log (stderr by default).
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ledger.errors import BadInput, ErasureError
from ledger.witness.protocol import ADD_CHECKPOINT, MAX_REQUEST_BYTES
from ledger.witness.service import Refused, Witness

log = logging.getLogger("erasure.witness")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "erasure-witness/1"
    witness: Witness  # set on the subclass make_server builds

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path.split("?", 1)[0] != f"/{ADD_CHECKPOINT}":
            return self._answer(404, b"not found\n")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._answer(411, b"a Content-Length is required\n", close=True)
        if int(length) > MAX_REQUEST_BYTES:
            return self._answer(413, f"request is larger than {MAX_REQUEST_BYTES} bytes\n".encode(), close=True)
        body = self.rfile.read(int(length))
        try:
            cosigned = self.witness.add_checkpoint(body)
        except Refused as refused:
            log.warning("refused %s: %d %s", self.client_address[0], refused.status, refused.reason)
            return self._answer(refused.status, refused.body, refused.content_type)
        except ErasureError as err:  # the witness's own state failed: not the client's fault
            log.error("cannot answer %s: %s", self.client_address[0], err)
            return self._answer(503, b"the witness cannot answer now\n")
        c = cosigned.checkpoint
        log.info("cosigned %s size %d (from %d)", c.origin, c.size, cosigned.previous_size)
        self._answer(200, cosigned.lines.encode())

    def do_GET(self) -> None:  # noqa: N802
        status = 405 if self.path.split("?", 1)[0] == f"/{ADD_CHECKPOINT}" else 404
        self._answer(status, b"add-checkpoint takes a POST\n" if status == 405 else b"not found\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "POST")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the answers above say what happened
        pass


def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for `witness` bound to host:port (port 0: a free one); call serve_forever()."""
    handler = type("WitnessHandler", (_Handler,), {"witness": witness})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        raise BadInput(f"cannot listen on {host}:{port}: {err.strerror}") from None
    server.daemon_threads = True
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
