"""The witness's own cosigning key: Ed25519, beside the other keys in `ERASURE_KEY_DIR`
(PKCS#8 PEM, mode 0600, encrypted when `ERASURE_KEY_PASSPHRASE` is set, a public PEM beside it).

Its name (C2SP: a schema-less URL naming the witness) is kept in the witness's state; the key
never cosigns under two names (a cosignature/v1 does not commit to the name).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import BadInput
from ledger.keys import read_private_pem, read_public_pem, write_key_pair
from ledger.note import ALG_COSIGNATURE_V1, CosignatureSigner, raw_public_key, vkey

NAME = "witness"


def private_path(key_dir: Path) -> Path:
    return key_dir / f"{NAME}.key.pem"


def public_path(key_dir: Path) -> Path:
    return key_dir / f"{NAME}.pub.pem"


def _missing(path: Path) -> BadInput:
    return BadInput(f"no witness key at {path}: run `erasure witness init` (or set ERASURE_KEY_DIR)")


def init_witness_key(key_dir: Path) -> bool:
    """Create the key unless it exists (an existing key is never replaced); True if created."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if private_path(key_dir).exists():
        return False
    write_key_pair(private_path(key_dir), public_path(key_dir), Ed25519PrivateKey.generate())
    return True


def load_public(key_dir: Path) -> Ed25519PublicKey:
    path = public_path(key_dir)
    key = read_public_pem(path, _missing(path))
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key")
    return key


def load_cosigner(key_dir: Path, name: str) -> CosignatureSigner:
    """The signing key, checked to be Ed25519, readable by its owner alone and to match its public PEM."""
    path = private_path(key_dir)
    key = read_private_pem(path, _missing(path))
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path} is not an Ed25519 private key")
    if raw_public_key(key.public_key()) != raw_public_key(load_public(key_dir)):
        raise BadInput(f"{path} does not match {public_path(key_dir)}")
    return CosignatureSigner(name, key)


def witness_vkey(key_dir: Path, name: str) -> str:
    """The vkey logs and auditors pin: `name+hex8+base64(0x04 || key)`."""
    return vkey(name, load_public(key_dir), ALG_COSIGNATURE_V1)
