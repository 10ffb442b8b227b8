"""The witnesses a ledger sends its checkpoints to, and the cosignatures it collects.

Configured in `$ERASURE_HOME/witnesses.json` (`erasure ledger witness add URL VKEY`). On each
checkpoint the ledger sends every witness the checkpoint with a consistency proof from the size
that witness last cosigned (kept as a hint in `witness-status.json`; a 409 names the real one and
the request is sent once more from there), and stores the cosignatures it gets back in the
checkpoint's note. A witness that is down, or refuses, never stops the checkpoint: its outcome is
recorded in the status file and logged as one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ledger.errors import BadInput, ErasureError, VerificationFailed
from ledger.note import (
    CosignatureVerifier,
    Signature,
    parse_checkpoint,
    parse_cosigner_vkey,
    parse_note,
    verified_cosignatures,
)
from ledger.witness.client import WitnessClient, WitnessConflict
from ledger.workspace import Workspace

CONFIG_SCHEMA = "erasure.witnesses/v1"
DEFAULT_TIMEOUT_S = 5.0
log = logging.getLogger("erasure.ledger")

Prover = Callable[[int, int], list[bytes]]  # (old size, new size) -> RFC 6962 consistency proof


@dataclass(frozen=True)
class WitnessEndpoint:
    url: str  # submission prefix: http(s)://host[:port][/prefix]
    vkey: str  # its cosignature/v1 verifier key

    @property
    def verifier(self) -> CosignatureVerifier:
        return parse_cosigner_vkey(self.vkey)

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class Outcome:
    witness: str  # vkey
    url: str
    size: int  # the checkpoint's size
    cosigned: bool
    error: str | None = None
    at: float = 0.0


def config_path(workspace: Workspace) -> Path:
    return workspace.home / "witnesses.json"


def status_path(workspace: Workspace) -> Path:
    return workspace.home / "witness-status.json"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"witness URL {url!r} is not http(s)://host[:port][/prefix]")
    return url


def read_witnesses(workspace: Workspace) -> tuple[list[WitnessEndpoint], float]:
    """The configured witnesses and the timeout of one request to one of them (seconds)."""
    path = config_path(workspace)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return [], DEFAULT_TIMEOUT_S
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read {path}: {err}") from None
    rows = doc.get("witnesses") if isinstance(doc, dict) and doc.get("schema") == CONFIG_SCHEMA else None
    timeout = doc.get("timeout_s", DEFAULT_TIMEOUT_S) if isinstance(doc, dict) else None
    if (not isinstance(rows, list) or not isinstance(timeout, int | float) or isinstance(timeout, bool)
            or not 0 < timeout <= 600):
        raise BadInput(f"{path} is not an {CONFIG_SCHEMA} document (witnesses: [...], timeout_s: 0 < s <= 600)")
    witnesses = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("url"), str) or not isinstance(row.get("vkey"), str):
            raise BadInput(f"{path}: every witness needs a url and a vkey")
        witness = WitnessEndpoint(check_url(row["url"]), row["vkey"])
        witness.verifier  # a malformed key is an error when the file is read, not when first used
        witnesses.append(witness)
    return witnesses, float(timeout)


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _write_witnesses(workspace: Workspace, witnesses: Sequence[WitnessEndpoint], timeout: float) -> None:
    _write_json(config_path(workspace), {"schema": CONFIG_SCHEMA, "timeout_s": timeout,
                                         "witnesses": [asdict(w) for w in witnesses]})


def add_witness(workspace: Workspace, url: str, vkey: str) -> bool:
    """Send checkpoints to the witness at `url` with key `vkey`; False if it was configured already
    (a witness of the same key name gets the new URL and key)."""
    witness = WitnessEndpoint(check_url(url), parse_cosigner_vkey(vkey).vkey)
    witnesses, timeout = read_witnesses(workspace)
    if witness in witnesses:
        return False
    _write_witnesses(workspace, [w for w in witnesses if w.name != witness.name] + [witness], timeout)
    return True


def remove_witness(workspace: Workspace, name: str) -> bool:
    witnesses, timeout = read_witnesses(workspace)
    kept = [w for w in witnesses if name not in (w.name, w.vkey)]
    if len(kept) == len(witnesses):
        return False
    _write_witnesses(workspace, kept, timeout)
    return True


def read_status(workspace: Workspace) -> dict[str, Outcome]:
    """The last outcome per witness vkey (a hint: unreadable is empty)."""
    try:
        doc = json.loads(status_path(workspace).read_text())
        return {key: Outcome(**row) for key, row in doc.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class Cosigning:
    """A ledger's witnesses: `collect` gets their cosignatures on one checkpoint."""

    def __init__(self, workspace: Workspace, witnesses: Sequence[WitnessEndpoint], timeout: float) -> None:
        self.workspace = workspace
        self.witnesses = list(witnesses)
        self.timeout = timeout

    @classmethod
    def configured(cls, workspace: Workspace) -> "Cosigning | None":
        witnesses, timeout = read_witnesses(workspace)
        return cls(workspace, witnesses, timeout) if witnesses else None

    def collect(self, note: str, previous_size: int, prove: Prover) -> list[Signature]:
        """Cosignatures on `note` from the witnesses whose cosignature it lacks; failures are
        recorded and logged, never raised. `previous_size` is the size of the log's previous checkpoint."""
        text = parse_note(note).text
        size = parse_checkpoint(text).size
        status = read_status(self.workspace)
        signatures = []
        for witness in self.witnesses:
            if verified_cosignatures(note, [witness.verifier]):
                continue
            hint = status.get(witness.vkey)
            old = hint.size if hint is not None and hint.cosigned and hint.size <= size else previous_size
            try:
                signatures.append(self._submit(witness, old, size, note, prove))
                status[witness.vkey] = Outcome(witness.vkey, witness.url, size, True, at=time.time())
            except ErasureError as err:
                status[witness.vkey] = Outcome(witness.vkey, witness.url, size, False, str(err), time.time())
                log.warning("witness %s (%s) did not cosign the checkpoint of size %d: %s", witness.name,
                            witness.url, size, err)
        try:
            _write_json(status_path(self.workspace), {k: asdict(v) for k, v in status.items()})
        except OSError as err:
            log.warning("cannot record the witnesses' status in %s: %s", status_path(self.workspace), err)
        return signatures

    def _submit(self, witness: WitnessEndpoint, old: int, size: int, note: str, prove: Prover) -> Signature:
        client = WitnessClient(witness.url, witness.verifier, self.timeout)
        try:
            return client.add_checkpoint(old, prove(old, size), note)
        except WitnessConflict as conflict:
            if conflict.size > size:
                raise VerificationFailed(f"it has cosigned size {conflict.size}, beyond this checkpoint's {size}: "
                                         "it has seen another history of this log (a fork, or a rollback)") from None
            if conflict.size == old:
                raise VerificationFailed(f"it refused the checkpoint: {conflict}") from None
            return client.add_checkpoint(conflict.size, prove(conflict.size, size), note)
