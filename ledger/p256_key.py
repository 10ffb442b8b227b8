"""A named ECDSA P-256 key pair in `ERASURE_KEY_DIR` (the intake's ES256 key, the model-signing key).

Kept as the role keys are (`ledger.keys`): `NAME.key.pem`, a PKCS#8 PEM of mode 0600, encrypted
when `ERASURE_KEY_PASSPHRASE` is set, and `NAME.pub.pem` beside it, so publishing the public key
needs no passphrase; loading the private key checks that the two still belong together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ledger.errors import BadInput
from ledger.keys import read_private_pem, read_public_pem, write_key_pair


def der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class P256Key:
    name: str  # file stem
    label: str  # what error messages call it
    command: str  # the command that creates it

    def private_path(self, key_dir: Path) -> Path:
        return key_dir / f"{self.name}.key.pem"

    def public_path(self, key_dir: Path) -> Path:
        return key_dir / f"{self.name}.pub.pem"

    def _missing(self, path: Path) -> BadInput:
        return BadInput(f"no {self.label} key at {path}: run `{self.command}` (or set ERASURE_KEY_DIR)")

    def init(self, key_dir: Path) -> bool:
        """Create the key unless it exists (an existing key is never replaced); True if created."""
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.private_path(key_dir).exists():
            return False
        write_key_pair(self.private_path(key_dir), self.public_path(key_dir), ec.generate_private_key(ec.SECP256R1()))
        return True

    def load_public(self, key_dir: Path) -> ec.EllipticCurvePublicKey:
        path = self.public_path(key_dir)
        key = read_public_pem(path, self._missing(path))
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise BadInput(f"{path} is not an ECDSA P-256 public key")
        return key

    def load_private(self, key_dir: Path) -> ec.EllipticCurvePrivateKey:
        """The signing key, checked to be P-256, readable by its owner alone and to match its public PEM."""
        path = self.private_path(key_dir)
        key = read_private_pem(path, self._missing(path))
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise BadInput(f"{path} is not an ECDSA P-256 private key")
        if der(key.public_key()) != der(self.load_public(key_dir)):
            raise BadInput(f"{path} does not match {self.public_path(key_dir)}")
        return key
