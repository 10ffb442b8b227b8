"""A DDRF party for the tests: a signing key, its published JWKS, and the JWTs it makes."""

from __future__ import annotations

import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


class Party:
    def __init__(self, domain: str, kind: str = "EC", kid: str = "k1") -> None:
        self.domain, self.kid = domain, kid
        if kind == "EC":
            self.key, self.alg = ec.generate_private_key(ec.SECP256R1()), "ES256"
            public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        else:
            self.key, self.alg = rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
            public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwk = {**public, "kid": kid, "use": "sig", "alg": self.alg}

    def dsrdelete(self) -> dict:
        return {"endpoint": f"https://{self.domain}/ddrf", "identifiers": [{"id": 1, "type": "ppuid",
                "format": "plaintext"}], "publicKey": [self.jwk], "vendorScriptRequirement": False}

    def sign(self, claims: dict, key: object = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm=self.alg, headers={"kid": self.kid})

    def id_jwt(self, subject: str, **claims: object) -> str:
        return self.sign({"version": "1.0", "jti": f"id-{uuid.uuid4().hex[:10]}", "iss": self.domain,
                          "sub": identifier(subject), "iat": int(time.time()), **claims})

    def rq_jwt(self, id_jwt: str, subject: str, key: object = None, **claims: object) -> str:
        """An rqJWT carrying `id_jwt`; `key` signs it instead of ours (a forgery)."""
        return self.sign({"version": "1.0", "idJWT": id_jwt, "jti": f"rq-{uuid.uuid4().hex[:10]}", "iss": self.domain,
                          "sub": identifier(subject), "iat": int(time.time()), **claims}, key)


def identifier(value: str, kind: str = "ppuid", form: str = "plaintext") -> dict:
    return {"identifierValue": value, "identifierType": kind, "identifierFormat": form}
