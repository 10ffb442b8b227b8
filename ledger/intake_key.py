"""The HTTP intake's acknowledgement key: ECDSA P-256, the ES256 key its IAB DDRF `acJWT`s are
signed with (`consumers.intake`).

It lives beside the ledger and certifier keys in `ERASURE_KEY_DIR`, as they do: a PKCS#8 PEM,
mode 0600, encrypted when `ERASURE_KEY_PASSPHRASE` is set, and a public-key PEM beside it, so
publishing the key (`GET /.well-known/dsrdelete.json`) needs no passphrase. Its key id is the
first 16 hex digits of the SHA-256 of the public key's DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ledger.p256_key import P256Key, der

NAME = "intake-ack"
_KEY = P256Key(NAME, "intake", "erasure keys intake")


def private_path(key_dir: Path) -> Path:
    return _KEY.private_path(key_dir)


def public_path(key_dir: Path) -> Path:
    return _KEY.public_path(key_dir)


def init_intake_key(key_dir: Path) -> bool:
    """Create the key unless it exists (an existing key is never replaced); True if created."""
    return _KEY.init(key_dir)


def load_public(key_dir: Path) -> ec.EllipticCurvePublicKey:
    return _KEY.load_public(key_dir)


def load_private(key_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key, checked to be P-256, readable by its owner alone and to match its public PEM."""
    return _KEY.load_private(key_dir)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    return hashlib.sha256(der(key)).hexdigest()[:16]
