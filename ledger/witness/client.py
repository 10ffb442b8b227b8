"""A log's side of add-checkpoint: submit a checkpoint and a consistency proof to one witness
and get back its cosignature, verified against the witness's pinned key (stdlib urllib)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import ServiceError, VerificationFailed
from ledger.note import CosignatureVerifier, Signature, parse_note, verified_cosignatures
from ledger.witness.protocol import (
    ADD_CHECKPOINT,
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    format_add_checkpoint,
    parse_size,
)

USER_AGENT = "erasure-witness-client/1"


class WitnessConflict(Exception):
    """409: the witness last cosigned another size (`size`) than the old size sent."""

    def __init__(self, size: int, reason: str) -> None:
        super().__init__(reason)
        self.size = size


@dataclass(frozen=True)
class WitnessClient:
    url: str  # the witness's submission prefix, e.g. http://127.0.0.1:8080/
    verifier: CosignatureVerifier
    timeout: float = 5.0

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> Signature:
        """The witness's cosignature of `note` (verified); WitnessConflict on a 409 that names
        its size, VerificationFailed on a refusal or a bad answer, ServiceError when unreachable."""
        target = self.url.rstrip("/") + "/" + ADD_CHECKPOINT
        request = urllib.request.Request(
            target, data=format_add_checkpoint(old_size, proof, note), method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(MAX_REQUEST_BYTES + 1)
        except urllib.error.HTTPError as err:
            with err:
                answer = err.read(MAX_REQUEST_BYTES + 1)
                content_type = (err.headers.get("Content-Type") or "").split(";")[0].strip()
            if err.code == 409 and content_type == SIZE_CONTENT_TYPE:
                size = parse_size(answer)
                raise WitnessConflict(size, f"{target}: 409 Conflict, it last cosigned size {size}") from None
            reason = answer[:200].decode("utf-8", errors="replace").strip() or err.reason
            raise VerificationFailed(f"{target} refused the checkpoint: HTTP {err.code}: {reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ServiceError(f"cannot reach witness {target}: {getattr(err, 'reason', None) or err}") from None
        if len(body) > MAX_REQUEST_BYTES:
            raise VerificationFailed(f"{target}: the answer is larger than {MAX_REQUEST_BYTES} bytes")
        # tlog-witness: the answer is signature lines; read them as the checkpoint's own.
        text = parse_note(note).text
        try:
            found = verified_cosignatures(text + "\n" + body.decode("utf-8"), [self.verifier])
        except (UnicodeDecodeError, VerificationFailed) as err:
            raise VerificationFailed(f"{target}: the answer is not a valid cosignature: {err}") from None
        if not found:
            raise VerificationFailed(f"{target}: the answer carries no cosignature by {self.verifier.vkey}")
        return found[0].signature
