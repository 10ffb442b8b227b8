"""The HTTP intake as a service: uvicorn serving the intake app on a socket bound before it
starts (port 0: a free one, logged), in a thread of `erasure serve --role intake`."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from consumers.intake.desk import Desk
from consumers.topics import Topics
from ledger.errors import ServiceError
from ledger.workspace import Workspace

log = logging.getLogger("erasure.intake")


class Intake:
    def __init__(self, ws: Workspace, topics: Topics, bootstrap: str, host: str = "127.0.0.1", port: int = 8080,
                 kafka_timeout_s: float = 15.0) -> None:
        """Bind the socket and load the senders and the intake key; nothing is served before `run`."""
        import uvicorn

        from consumers.intake.app import make_app

        self.desk = Desk(ws, topics, bootstrap, kafka_timeout_s)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)
        except OSError as err:
            self.socket.close()
            raise ServiceError(f"the intake cannot listen on {host}:{port}: {err.strerror}") from None
        self.host, self.port = host, self.socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(make_app(self.desk), log_config=None, access_log=False,
                                                     lifespan="off"))

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; requests in flight finish first."""
        log.info("intake listening on %s (POST /v1/requests, POST /v1/ddrf, GET /.well-known/dsrdelete.json, "
                 "GET /dashboard)",
                 self.url)
        try:
            asyncio.run(self._serve(stop))
        finally:
            self.desk.close()
            self.socket.close()

    async def _serve(self, stop: threading.Event) -> None:
        serving = asyncio.create_task(self._server.serve(sockets=[self.socket]))
        while not serving.done():
            if stop.is_set():
                self._server.should_exit = True
            await asyncio.wait([serving], timeout=0.2)
        serving.result()
