"""IAB DDRF 1.0 verification (producers.ddrf): what verifies, what is refused with which code."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ledger.errors import BadInput
from producers.ddrf import Refused, Result, ack_claims, public_keys, read_public_keys, to_request, verify_ack, verify_request
from tests.producers.ddrf_kit import Party, identifier

PUBLISHER, EXCHANGE = Party("publisher.example"), Party("exchange.example", "RSA", "r1")
REGISTERED = {p.domain: [p.jwk] for p in (PUBLISHER, EXCHANGE)}
OURS = "erasure.example"
IDENTIFIERS = [("ppuid", "plaintext"), ("email", "sha256")]


def verify(token: str, **options: object):  # type: ignore[no-untyped-def]
    return verify_request(token, REGISTERED.get, OURS, IDENTIFIERS, **options)  # type: ignore[arg-type]


def refused(token: str, **options: object) -> Refused:
    with pytest.raises(Refused) as caught:
        verify(token, **options)
    return caught.value


def test_a_chained_request_verifies_and_maps_to_an_erasure_of_the_rqjwt_subject() -> None:
    id_jwt = PUBLISHER.id_jwt("user-1", iat=int(time.time()) - 7 * 86_400)  # the 1st party's request may be old
    token = EXCHANGE.rq_jwt(id_jwt, "alias-1", aud=OURS, optionalParameters=json.dumps({"legalBasis": "CCPA"}))
    verified = verify(token)
    assert (verified.requester, verified.first_party, verified.identifier.value) == (
        "exchange.example", "publisher.example", "alias-1")
    request = to_request(verified, "exchange")
    assert request.request_id == f"ddrf:exchange.example:{verified.jti}" and request.subject_id == "alias-1"
    assert request.kind == "erase_subject" and request.requester == "exchange" and request.legal_basis == "CCPA"
    assert request.requested_at.timestamp() == jwt.decode(id_jwt, options={"verify_signature": False})["iat"]


@pytest.mark.parametrize(("make", "code", "words"), [
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", key=ec.generate_private_key(ec.SECP256R1())),
     Result.INVALID_SIGNATURE, "signature does not verify"),
    (lambda: PUBLISHER.rq_jwt(Party("publisher.example").id_jwt("u"), "u"), Result.INVALID_SIGNATURE, "idJWT"),
    (lambda: Party("stranger.example").rq_jwt(PUBLISHER.id_jwt("u"), "u"), Result.INVALID_SIGNATURE,
     "no keys registered for issuer 'stranger.example'"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", aud="someone.else"), Result.INVALID_TOKEN, "aud"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", exp=int(time.time()) - 120), Result.INVALID_TIMESTAMP,
     "expired"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", iat=int(time.time()) - 2 * 86_400),
     Result.INVALID_TIMESTAMP, "over the 86400 s"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", iat=int(time.time()) + 600), Result.INVALID_TIMESTAMP,
     "not yet valid"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", idJWT=None), Result.MALFORMED_REQUEST, "idJWT"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", sub="user 1"), Result.MALFORMED_REQUEST, "sub must hold"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", version="2.0"), Result.MALFORMED_REQUEST, "version"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", jti=None), Result.MALFORMED_REQUEST, "jti"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", sub=identifier("u", "idfa")),
     Result.UNSUPPORTED_IDENTIFIER_TYPE, "'idfa'"),
    (lambda: PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", sub=identifier("u", "email", "md5")),
     Result.INCORRECT_IDENTIFIER_FORMAT, "'md5'"),
    (lambda: "not.a.jwt", Result.INVALID_TOKEN, "not a JWT"),
])
def test_refusals_carry_the_framework_result_code(make, code: Result, words: str) -> None:  # type: ignore[no-untyped-def]
    err = refused(make())
    assert err.code == code and words in str(err), str(err)


def test_a_token_cannot_pick_its_algorithm() -> None:
    """alg none, or HS256 keyed with the public key's bytes: no registered key verifies them."""
    claims = jwt.decode(PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u"), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    assert refused(unsigned).code == Result.INVALID_SIGNATURE
    hs = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "k1"})
    assert refused(hs).code == Result.INVALID_SIGNATURE
    es_with_rsa_kid = PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u", iss="exchange.example")
    assert refused(es_with_rsa_kid).code == Result.INVALID_SIGNATURE


@pytest.mark.parametrize(("keys", "words"), [
    ({"publicKey": [{**PUBLISHER.jwk, "d": "secret"}]}, "private key"),
    ({"keys": [jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)]},
     "P-256"),
    ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "only EC P-256"),
    ({"keys": [{**PUBLISHER.jwk, "alg": "ES384"}]}, "only EC P-256"),
    ({"endpoint": "https://x"}, "no keys"),
])
def test_registered_keys_are_public_p256_or_rsa_signing_keys(keys: dict, words: str) -> None:
    with pytest.raises(BadInput, match=words):
        public_keys(keys, "keys.json")


def test_a_dsrdelete_file_or_jwks_registers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dsrdelete.json"
    path.write_text(json.dumps(PUBLISHER.dsrdelete()))
    assert read_public_keys(path) == [PUBLISHER.jwk]
    path.write_text(json.dumps({"keys": [EXCHANGE.jwk]}))
    assert read_public_keys(path) == [EXCHANGE.jwk]


def test_an_ack_verifies_with_the_recipients_published_key_only() -> None:
    us = Party(OURS)
    token = PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u"), "u")
    ack = us.sign(ack_claims(token, OURS, Result.INVALID_TIMESTAMP, "stale"))
    claims = verify_ack(ack, [us.jwk], OURS)
    assert (claims["rqJWT"], claims["raResultCode"], claims["raResultString"]) == (token, 6, "stale")
    with pytest.raises(Refused):
        verify_ack(ack, [PUBLISHER.jwk], OURS)
    with pytest.raises(Refused):
        verify_ack(ack, [us.jwk], "someone.else")
