"""A witness served in this process (stdlib HTTP server on a free port), for the tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.note import CosignatureSigner
from ledger.witness.server import make_server, server_url
from ledger.witness.service import Witness
from ledger.witness.state import WitnessState

NOW = 1_700_000_000


@dataclass(frozen=True)
class Served:
    url: str
    witness: Witness

    @property
    def vkey(self) -> str:
        return self.witness.signer.verifier.vkey


def new_witness(state_dir: Path, logs: dict[str, str], name: str = "witness.example/w1") -> Witness:
    """A witness of `logs` (origin -> log vkey) with a fresh key and a fixed clock."""
    state = WitnessState.open(state_dir)
    for origin, vkey in logs.items():
        state.add_log(origin, vkey)
    return Witness(state, CosignatureSigner(name, Ed25519PrivateKey.generate()), clock=lambda: NOW)


@contextmanager
def serving(witness: Witness) -> Iterator[Served]:
    server = make_server(witness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server_url(server), witness)
    finally:
        server.shutdown()
        server.server_close()
