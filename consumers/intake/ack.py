"""Our side of the IAB DDRF's signatures: the acJWT, signed ES256 with the intake key
(`ledger.intake_key`), and the dsrdelete.json that publishes its public JWK."""

from __future__ import annotations

from pathlib import Path

import jwt
from jwt.algorithms import ECAlgorithm

from ledger.intake_key import key_id, load_private
from producers.ddrf import Result, ack_claims

ALGORITHM = "ES256"


class AckSigner:
    def __init__(self, key_dir: Path, issuer: str) -> None:
        """`issuer`: our name in the acJWTs (the framework's eTLD+1 of the recipient)."""
        self._key = load_private(key_dir)
        self.kid = key_id(self._key.public_key())
        self.issuer = issuer

    def sign(self, rq_token: str, code: Result, reason: str | None = None) -> str:
        return jwt.encode(ack_claims(rq_token, self.issuer, code, reason), self._key, algorithm=ALGORITHM,
                          headers={"kid": self.kid})

    def jwk(self) -> dict:
        """Our public key as a JWK, with its kid, use and alg."""
        public = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def dsrdelete(self, endpoint: str, identifiers: list[tuple[str, str]]) -> dict:
        """Our dsrdelete.json: where to send requests, the identifiers we take, our public key."""
        return {"endpoint": endpoint,
                "identifiers": [{"id": i, "type": t, "format": f} for i, (t, f) in enumerate(identifiers, 1)],
                "publicKey": [self.jwk()], "vendorScriptRequirement": False}
