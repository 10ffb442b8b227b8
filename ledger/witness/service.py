"""The witness's add-checkpoint checks (C2SP tlog-witness), without HTTP.

In order, each refusal a `Refused` with its HTTP status:
400 a malformed request or an old size above the checkpoint's; 404 an origin it does not witness;
403 no valid signature by a key configured for that origin; 409 an old size that is not the
size it last cosigned (the answer carries that size), or the same size with another root;
422 a consistency proof from its stored checkpoint that does not verify.
Only then is the checkpoint stored (atomically with the checks against the stored one) and
cosigned. Refusals of validly signed checkpoints are kept as possible evidence of a fork.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import verify_consistency
from ledger.note import Checkpoint, CosignatureSigner, format_signature, open_note, parse_checkpoint, parse_note
from ledger.witness.protocol import SIZE_CONTENT_TYPE, AddCheckpoint, format_size, parse_add_checkpoint
from ledger.witness.state import Latest, WitnessState


class Refused(Exception):
    """An add-checkpoint the witness does not cosign: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str, size: int | None = None, fork: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.size = size  # with 409: the size of the latest checkpoint cosigned for the origin
        self.fork = fork  # a validly signed checkpoint inconsistent with the cosigned one: evidence

    @property
    def content_type(self) -> str:
        return SIZE_CONTENT_TYPE if self.size is not None else "text/plain; charset=utf-8"

    @property
    def body(self) -> bytes:
        return format_size(self.size) if self.size is not None else (self.reason + "\n").encode()


@dataclass(frozen=True)
class Cosigned:
    checkpoint: Checkpoint
    previous_size: int
    lines: str  # the cosignature line(s): the 200 answer's body


class Witness:
    def __init__(self, state: WitnessState, signer: CosignatureSigner,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.signer = signer
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> Cosigned:
        try:
            request = parse_add_checkpoint(body)
            text = parse_note(request.note).text
            checkpoint = parse_checkpoint(text)
        except (BadInput, VerificationFailed) as err:
            raise Refused(400, f"malformed add-checkpoint request: {err}") from None
        verifiers = self.state.verifiers(checkpoint.origin)
        if not verifiers:
            raise Refused(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            open_note(request.note, verifiers)
        except VerificationFailed as err:
            raise Refused(403, f"checkpoint of {checkpoint.origin}: {err}") from None
        if request.old_size > checkpoint.size:
            raise Refused(400, f"old size {request.old_size} is above the checkpoint size {checkpoint.size}")
        try:
            self.state.advance(checkpoint.origin, lambda latest: _check(latest, request, checkpoint),
                               checkpoint.size, checkpoint.root, request.note)
        except Refused as refused:
            if refused.fork:
                self.state.record_refusal(checkpoint.origin, refused.status, refused.reason, body)
            raise
        # The cosigned time is after the checkpoint is stored: it never predates what it states.
        signature = self.signer.cosign(text, int(self.clock()))
        return Cosigned(checkpoint, request.old_size, format_signature(signature))


def _check(latest: Latest, request: AddCheckpoint, checkpoint: Checkpoint) -> None:
    """The checks against the stored checkpoint; run inside the transaction that replaces it."""
    if request.old_size != latest.size:
        raise Refused(409, f"old size {request.old_size} is not {latest.size}, the size last cosigned for "
                      f"{checkpoint.origin}", latest.size)
    if checkpoint.size == latest.size and checkpoint.root != latest.root and latest.note is not None:
        raise Refused(409, f"checkpoint of size {checkpoint.size} has another root than the one cosigned for "
                      f"{checkpoint.origin} at that size", latest.size, fork=True)
    try:
        verify_consistency(latest.size, checkpoint.size, request.proof, latest.root, checkpoint.root)
    except VerificationFailed as err:
        raise Refused(422, f"checkpoint of {checkpoint.origin} (size {checkpoint.size}) is not consistent with "
                      f"the one cosigned at size {latest.size}: {err}", fork=True) from None
