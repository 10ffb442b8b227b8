"""The add-checkpoint request of C2SP tlog-witness, and the size a 409 Conflict answers with.

Body: `old <size>\n`, at most 63 base64 consistency-proof hashes (one a line), an empty line,
then the signed checkpoint note verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import HASH_SIZE
from ledger.note import b64decode, b64encode

ADD_CHECKPOINT = "add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 * 1024  # 63 hashes and a checkpoint with dozens of signatures fit many times over
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: str  # the signed checkpoint, verbatim


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    if old_size < 0 or len(proof) > MAX_PROOF_LINES:
        raise BadInput(f"cannot send old size {old_size} with {len(proof)} proof hashes")
    lines = [f"old {old_size}", *(b64encode(h) for h in proof), ""]
    return ("\n".join(lines) + "\n" + note).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """The request's parts; BadInput (a 400 answer) when it is not a well-formed request."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadInput(f"request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("request is not UTF-8") from None
    old, newline, rest = text.partition("\n")
    if not newline or not old.startswith("old ") or not _DECIMAL.fullmatch(old[4:]):
        raise BadInput("request does not start with an `old <size>` line (decimal, no leading zeros)")
    proof = []
    while True:
        line, newline, rest = rest.partition("\n")
        if not newline:
            raise BadInput("request has no empty line before its checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise BadInput(f"request has more than {MAX_PROOF_LINES} consistency proof lines")
        try:
            digest = b64decode(line, f"consistency proof line {len(proof) + 1}")
        except VerificationFailed as err:
            raise BadInput(str(err)) from None
        if len(digest) != HASH_SIZE:
            raise BadInput(f"consistency proof line {len(proof) + 1} is {len(digest)} bytes, not {HASH_SIZE}")
        proof.append(digest)
    if not rest:
        raise BadInput("request carries no checkpoint")
    return AddCheckpoint(int(old[4:]), tuple(proof), rest)


def format_size(size: int) -> bytes:
    return f"{size}\n".encode()


def parse_size(body: bytes) -> int:
    """The witness's latest cosigned size from a 409 answer (`<decimal>\n`)."""
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not _DECIMAL.fullmatch(text[:-1]):
        raise VerificationFailed(f"a 409 answer's body {text[:40]!r} is not a tree size")
    return int(text[:-1])
