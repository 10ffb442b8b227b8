"""IAB Tech Lab Data Deletion Request Framework (DDRF) 1.0: verify a request's `rqJWT` and the
`idJWT` it carries against the keys registered for their issuers, map it to our `ErasureRequest`,
and build the claims of the `acJWT` that answers it (signing it is the intake's: producers never
sign), or verify one as its requester does.

What the framework says (github.com/InteractiveAdvertisingBureau/Data-Subject-Rights, "Data
Deletion Request Framework.md", 1.0):

- idJWT, by the 1st party: version, jti (the request's id across the chain), iss (the 1st
  party's eTLD+1), sub (identifierValue, identifierType, identifierFormat), iat;
- rqJWT, by the requester, one per recipient: version, idJWT, jti (this transaction), iss (the
  requester's eTLD+1), sub (the identifier as the recipient knows it), iat, optionalParameters;
- acJWT, by the recipient: version, rqJWT, jti, iss, iat, raResultCode (`Result`), raResultString;
- keys: the JWKs of each party's dsrdelete.json (`publicKey`); HTTP 202 on success, 400 on an error.

What it leaves open, decided here, failing closed: a key verifies ES256 if it is EC P-256 and
RS256 if it is RSA of 2048 bits or more (the framework names no algorithm; its examples show
both), whatever else a token's header asks for; `aud` is optional and must name us when present;
`exp` is optional and must not have passed; no `iat` may lie in the future (60 s leeway) and an
rqJWT may be at most `max_age_s` old (an idJWT may be old: the chain takes time); `sub` is the
object of the framework's examples or a string holding one; the rqJWT's `sub` is what we erase.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

import jwt

from ledger.errors import BadInput
from producers.schemas import ErasureRequest, new_request

VERSION = "1.0"
ALGORITHMS = {"EC": "ES256", "RSA": "RS256"}  # key type -> the one algorithm it verifies
MIN_RSA_BITS = 2048
LEEWAY_S = 60
MAX_AGE_S = 86_400
ECHO_MAX = 65_536  # an acJWT quotes at most this much of a body that is not an rqJWT


class Result(IntEnum):
    """The framework's raResultCode values."""

    SUCCESS = 0
    MALFORMED_REQUEST = 1
    INVALID_SIGNATURE = 2
    INVALID_TOKEN = 3
    UNSUPPORTED_IDENTIFIER_TYPE = 4
    INCORRECT_IDENTIFIER_FORMAT = 5
    INVALID_TIMESTAMP = 6


class Refused(BadInput):
    """A request refused with one of the framework's result codes and a one-line reason."""

    def __init__(self, code: Result, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Identifier:
    type: str
    format: str
    value: str


@dataclass(frozen=True)
class DdrfRequest:
    """A verified rqJWT and the idJWT it carries."""

    token: str  # the rqJWT as received
    requester: str  # the rqJWT's iss
    jti: str  # the rqJWT's
    first_party: str  # the idJWT's iss
    origin_jti: str  # the idJWT's jti
    identifier: Identifier  # the rqJWT's sub
    requested_at: datetime  # the idJWT's iat
    options: dict

    @property
    def request_id(self) -> str:
        return f"ddrf:{self.requester}:{self.jti}"


def public_keys(doc: object, source: str) -> list[dict]:
    """The JWKs of a dsrdelete.json (`publicKey`) or a JWKS (`keys`), each a public EC P-256 or
    RSA (2048+ bits) signing key; BadInput naming `source` and the key otherwise."""
    keys = (doc.get("publicKey") or doc.get("keys")) if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise BadInput(f"{source}: no keys: expected a dsrdelete.json with publicKey or a JWKS with keys")
    for i, jwk in enumerate(keys):
        where = f"{source}: key {i}"
        if not isinstance(jwk, dict):
            raise BadInput(f"{where} is not a JSON object")
        if "d" in jwk:
            raise BadInput(f"{where} is a private key: register public keys only")
        algorithm = ALGORITHMS.get(jwk.get("kty"))  # type: ignore[arg-type]
        if algorithm is None or jwk.get("alg", algorithm) != algorithm or jwk.get("use", "sig") != "sig":
            raise BadInput(f"{where}: only EC P-256 (ES256) and RSA (RS256) signing keys are accepted")
        try:
            key = jwt.PyJWK(jwk, algorithm).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as err:
            raise BadInput(f"{where}: {err}") from None
        if jwk["kty"] == "EC" and jwk.get("crv") != "P-256" or jwk["kty"] == "RSA" and key.key_size < MIN_RSA_BITS:
            raise BadInput(f"{where}: only EC P-256 (ES256) and RSA of {MIN_RSA_BITS}+ bits (RS256) are accepted")
    return keys


def read_public_keys(path: Path) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise BadInput(f"{path} is not JSON: {err}") from None
    return public_keys(doc, str(path))


def verify_request(token: str, keys_of: Callable[[str], list[dict] | None], audience: str,
                   identifiers: Iterable[tuple[str, str]], max_age_s: float = MAX_AGE_S,
                   now: float | None = None) -> DdrfRequest:
    """Verify an rqJWT and its idJWT against `keys_of(issuer)` (None: no keys registered for
    it); `identifiers`: the (type, format) pairs we accept. Refused with the framework's code."""
    rq = _decode(token.strip(), keys_of, audience, "rqJWT")
    age = (time.time() if now is None else now) - rq["iat"]
    if age > max_age_s:
        raise Refused(Result.INVALID_TIMESTAMP, f"rqJWT issued {age:.0f} s ago, over the {max_age_s:.0f} s "
                      "this recipient accepts")
    id_token = rq.get("idJWT")
    if not isinstance(id_token, str):
        raise Refused(Result.MALFORMED_REQUEST, "rqJWT: the idJWT claim is missing or not a string")
    idc = _decode(id_token, keys_of, None, "idJWT")
    identifier = _identifier(rq, "rqJWT")
    _identifier(idc, "idJWT")
    accepted = set(identifiers)
    if (identifier.type, identifier.format) not in accepted:
        named = ", ".join(sorted(f"{t}/{f}" for t, f in accepted))
        if identifier.type not in {t for t, _ in accepted}:
            raise Refused(Result.UNSUPPORTED_IDENTIFIER_TYPE, f"unsupported identifier type {identifier.type!r} "
                          f"(this recipient takes {named})")
        raise Refused(Result.INCORRECT_IDENTIFIER_FORMAT, f"identifier type {identifier.type!r} in format "
                      f"{identifier.format!r} (this recipient takes {named})")
    options = rq.get("optionalParameters", {})
    if isinstance(options, str):
        options = _json_object(options)
    if not isinstance(options, dict):
        raise Refused(Result.MALFORMED_REQUEST, "rqJWT: optionalParameters is not a JSON object")
    return DdrfRequest(token.strip(), _text(rq, "iss", "rqJWT", 120), _text(rq, "jti", "rqJWT", 128),
                       _text(idc, "iss", "idJWT", 253), _text(idc, "jti", "idJWT", 256), identifier,
                       datetime.fromtimestamp(idc["iat"], UTC), options)


def to_request(ddrf: DdrfRequest, requester: str) -> ErasureRequest:
    """Our request for a verified DDRF request: erase the subject its rqJWT names, for `requester`
    (the registered sender); the legal basis from optionalParameters `legalBasis` when given."""
    basis = ddrf.options.get("legalBasis")
    try:
        return new_request({"request_id": ddrf.request_id, "kind": "erase_subject",
                            "subject_id": ddrf.identifier.value, "requested_at": ddrf.requested_at,
                            "requester": requester, **({"legal_basis": basis} if isinstance(basis, str) else {})})
    except BadInput as err:
        raise Refused(Result.MALFORMED_REQUEST, f"rqJWT: {err}") from None


def ack_claims(rq_token: str, issuer: str, code: Result, reason: str | None = None,
               now: float | None = None) -> dict:
    """The claims of the acJWT answering `rq_token` (quoted up to ECHO_MAX characters)."""
    claims = {"version": VERSION, "rqJWT": rq_token[:ECHO_MAX], "jti": str(uuid.uuid4()), "iss": issuer,
              "iat": int(time.time() if now is None else now), "raResultCode": int(code)}
    return {**claims, "raResultString": reason} if reason else claims


def verify_ack(token: str, keys: list[dict], issuer: str) -> dict:
    """A requester's check of an acJWT: signed by one of `keys` (the recipient's published JWKs),
    issued by `issuer`, with the framework's claims; its claims, or Refused."""
    claims = _decode(token, lambda iss: keys if iss == issuer else None, None, "acJWT")
    if not isinstance(claims.get("rqJWT"), str) or type(claims.get("raResultCode")) is not int:
        raise Refused(Result.MALFORMED_REQUEST, "acJWT: rqJWT or raResultCode is missing")
    return claims


def _decode(token: str, keys_of: Callable[[str], list[dict] | None], audience: str | None, what: str) -> dict:
    """The claims of `token`, signed by a key registered for its issuer, with iss, jti, iat and
    version 1.x; Refused with the framework's code otherwise."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as err:
        raise Refused(Result.INVALID_TOKEN, f"{what} is not a JWT: {err}") from None
    issuer = unverified.get("iss")
    if "aud" not in unverified:  # optional in the framework (PyJWT would require it once given an audience)
        audience = None
    if not isinstance(issuer, str) or not issuer:
        raise Refused(Result.MALFORMED_REQUEST, f"{what}: the iss claim is missing or not a string")
    keys = keys_of(issuer)
    if not keys:
        raise Refused(Result.INVALID_SIGNATURE, f"{what}: no keys registered for issuer {issuer!r}")
    alg, kid = header.get("alg"), header.get("kid")
    keys = [k for k in keys if ALGORITHMS.get(k.get("kty")) == alg and (kid is None or k.get("kid") == kid)]
    if not keys:
        raise Refused(Result.INVALID_SIGNATURE, f"{what}: no key registered for {issuer!r} verifies alg {alg!r}"
                      + (f" with kid {kid!r}" if kid is not None else ""))
    for jwk in keys:
        try:
            claims = jwt.decode(token, jwt.PyJWK(jwk, alg).key, algorithms=[alg], audience=audience, leeway=LEEWAY_S,
                                options={"require": ["iss", "jti", "iat"], "verify_sub": False,
                                         "verify_aud": what != "idJWT"})  # one idJWT serves the whole chain
            break
        except jwt.InvalidSignatureError:
            continue
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError) as err:
            raise Refused(Result.INVALID_TIMESTAMP, f"{what}: {err}") from None
        except jwt.MissingRequiredClaimError as err:
            raise Refused(Result.MALFORMED_REQUEST, f"{what}: {err}") from None
        except jwt.InvalidAudienceError:
            raise Refused(Result.INVALID_TOKEN, f"{what}: its aud does not name this recipient ({audience!r})") from None
        except jwt.InvalidTokenError as err:
            raise Refused(Result.INVALID_TOKEN, f"{what}: {err}") from None
    else:
        raise Refused(Result.INVALID_SIGNATURE, f"{what}: the signature does not verify with the keys registered "
                      f"for {issuer!r}")
    version = claims.get("version")
    if not isinstance(version, str) or version.split(".")[0] != VERSION.split(".")[0]:
        raise Refused(Result.MALFORMED_REQUEST, f"{what}: version {version!r} is not DDRF {VERSION.split('.')[0]}.x")
    return claims


def _text(claims: dict, name: str, what: str, longest: int) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        raise Refused(Result.MALFORMED_REQUEST, f"{what}: {name} must be a string of 1 to {longest} characters")
    return value


def _json_object(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _identifier(claims: dict, what: str) -> Identifier:
    sub = claims.get("sub")
    sub = _json_object(sub) if isinstance(sub, str) else sub
    fields = ("identifierType", "identifierFormat", "identifierValue")
    if not isinstance(sub, dict) or not all(isinstance(sub.get(f), str) and 0 < len(sub[f]) <= 256 for f in fields):
        raise Refused(Result.MALFORMED_REQUEST, f"{what}: sub must hold {', '.join(fields)} (strings of 1 to 256 "
                      "characters)")
    return Identifier(*(sub[f] for f in fields))
