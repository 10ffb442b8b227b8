"""DSSE v1 envelopes (secure-systems-lab/dsse) signed with Ed25519 over PAE.

Verification fails closed: the envelope's shape is checked, a signature by a trusted key must
verify over PAE(payloadType, payload), and only then is the payload handed to the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Sequence

from ledger.errors import VerificationFailed
from ledger.note import Signer, Verifier

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_ref(verifier: Verifier) -> str:
    """The envelope's keyid: `name+hex8`, the first two fields of the C2SP verifier key."""
    return f"{verifier.name}+{verifier.key_id.hex()}"


def sign_envelope(payload: bytes, signer: Signer, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> dict[str, Any]:
    signature = signer.private_key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_ref(signer.verifier), "sig": base64.b64encode(signature).decode()}],
    }


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationFailed(f"DSSE envelope: {what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise VerificationFailed(f"DSSE envelope: {what} is not valid base64") from None


def verify_envelope(
    envelope: bytes | dict[str, Any],
    verifiers: Sequence[Verifier],
    payload_type: str = IN_TOTO_PAYLOAD_TYPE,
) -> bytes:
    """The payload bytes, once a trusted key's signature verifies; VerificationFailed otherwise."""
    if isinstance(envelope, bytes):
        try:
            envelope = json.loads(envelope)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VerificationFailed(f"DSSE envelope is not JSON: {err}") from None
        except RecursionError:
            raise VerificationFailed("DSSE envelope is not JSON: nested too deeply") from None
    if not isinstance(envelope, dict):
        raise VerificationFailed("DSSE envelope is not a JSON object")
    if envelope.get("payloadType") != payload_type:
        raise VerificationFailed(f"DSSE payloadType is {envelope.get('payloadType')!r}, expected {payload_type!r}")
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationFailed("DSSE envelope has no signatures")
    message = pae(payload_type, payload)
    trusted = {key_ref(v): v for v in verifiers}
    known = False
    for entry in signatures:
        if not isinstance(entry, dict):
            raise VerificationFailed("DSSE signature entry is not an object")
        keyid = entry.get("keyid")
        verifier = trusted.get(keyid) if isinstance(keyid, str) else None
        if verifier is None:
            continue
        known = True
        if verifier.verify(message, _b64(entry.get("sig"), "signature")):
            return payload
    if not known:
        raise VerificationFailed("DSSE envelope is not signed by any trusted certifier key")
    raise VerificationFailed("DSSE signature does not verify (payload or signature altered)")
