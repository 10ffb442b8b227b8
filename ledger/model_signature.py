"""OpenSSF model signing interop: `model.sig`, a model-signing v1.0 signature over a certified bundle.

Registry consumers check models with OpenSSF model signing (`model-signing` on PyPI, the
sigstore/model-transparency project). Its key-based signatures are a Sigstore bundle
(`application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE envelope whose payload is an
in-toto Statement v1 of predicate type `https://model_signing/signature/v1.0`: one subject (the
model's name, and the SHA-256 over the resources' digests in the order listed) and a predicate
with the `serialization` used (`files`, `sha256`, no symlinks, the ignored paths) and one
`resources` entry per file (name, algorithm, digest). `model_signing` verifies no Ed25519 keys,
so this signature is made with its own ECDSA P-256 key (SHA-256); the bundle names the key by
the SHA-256 of its public PEM (`verificationMaterial.publicKey.hint`), as model_signing's own
key signer does.

What it covers: every regular file of the bundle except `attestation/` (our certificate and
tlog-proof, written after it and naming it) and `model.sig` itself; that is every file our
certificate lists as a subject but `model.sig`. The four git paths model_signing ignores by
default are recorded as ignored too, as model_signing's own signer records them.

It is written with `cryptography` alone (the signing service needs no model_signing install),
and verified here with `cryptography` alone, so `erasure verify` on the base install checks it.
Our certificate names it (subject `model.sig` with its sha256, and `modelSignature` in the
predicate with the public key), so the certifier's signature vouches for the key; `model.sig`
carries no unlearning claim, only which files these are.

The key lives beside the other keys in `ERASURE_KEY_DIR`: `model-signing.key.pem` (PKCS#8, mode
0600, encrypted when `ERASURE_KEY_PASSPHRASE` is set) and `model-signing.pub.pem`, the PEM a
consumer passes to `model_signing verify key --public_key`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ledger.canonical import canonical_json
from ledger.dsse import IN_TOTO_PAYLOAD_TYPE, pae
from ledger.errors import VerificationFailed
from ledger.p256_key import P256Key
from ledger.statement import ATTESTATION_DIR, STATEMENT_TYPE, bundle_digests

NAME = "model-signing"
SIGNATURE_FILE = "model.sig"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")  # model_signing ignores these by default
IGNORE_PATHS = (ATTESTATION_DIR, SIGNATURE_FILE, *GIT_PATHS)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------
# the key


KEY = P256Key(NAME, "model-signing", "erasure keys init")
private_path = KEY.private_path
public_path = KEY.public_path
init_model_signing_key = KEY.init  # an existing key is never replaced; True if created
load_public = KEY.load_public
load_private = KEY.load_private  # checked to be P-256, owner-only and to match its public PEM


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def parse_public_pem(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise VerificationFailed("the model-signing public key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationFailed("the model-signing public key is not an ECDSA P-256 key")
    return key


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """model_signing's key identifier: the hex SHA-256 of the public key's PEM."""
    return hashlib.sha256(public_pem(key).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# signing


def covers(name: str) -> bool:
    """Whether model.sig covers the bundle file at POSIX relative path `name`."""
    return not any(name == p or name.startswith(p + "/") for p in IGNORE_PATHS)


def signed_files(bundle: Path) -> dict[str, str]:
    """POSIX relative path -> sha256 of every file model.sig covers (see the module docstring)."""
    return {name: sha for name, sha in bundle_digests(bundle).items() if covers(name)}


def _root_digest(digests: list[str]) -> str:
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


def sign_model(bundle: Path, key: ec.EllipticCurvePrivateKey, model_name: str) -> bytes:
    """Write `model.sig` over the bundle as it is now (atomically); returns its bytes."""
    files = signed_files(bundle)
    resources = [{"name": name, "algorithm": "sha256", "digest": sha} for name, sha in sorted(files.items())]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": _root_digest([r["digest"] for r in resources])}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": list(IGNORE_PATHS)},
            "resources": resources,
        },
    }
    payload = canonical_json(statement)
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    data = json.dumps(document, indent=2).encode() + b"\n"
    path = bundle / SIGNATURE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


# ---------------------------------------------------------------------------------------------
# verifying


def _field(obj: Any, key: str, kind: type, what: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise VerificationFailed(f"model.sig: {what} is missing or malformed")
    return value


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationFailed(f"model.sig: {what} is not valid base64") from None


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VerificationFailed(f"model.sig: {what} is not JSON") from None
    except RecursionError:
        raise VerificationFailed(f"model.sig: {what} is nested too deeply") from None


def verify_model_signature(data: bytes, key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The files (path -> sha256) a model.sig signed by `key` covers; VerificationFailed otherwise.

    Checks what `model_signing verify key` checks before it hashes the files: the bundle's media
    type, the key hint, the ECDSA signature over PAE, the statement and predicate types, the
    serialization (files, sha256) and the subject digest over the resources.
    """
    document = _json(data, "the signature bundle")
    if not isinstance(document, dict) or document.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise VerificationFailed(f"model.sig is not a {BUNDLE_MEDIA_TYPE} Sigstore bundle")
    material = _field(document, "verificationMaterial", dict, "verificationMaterial")
    hint = _field(_field(material, "publicKey", dict, "verificationMaterial.publicKey"), "hint", str, "key hint")
    if hint != key_hint(key):
        raise VerificationFailed(f"model.sig is signed by key {hint[:16]}…, not the certified {key_hint(key)[:16]}…")
    envelope = _field(document, "dsseEnvelope", dict, "dsseEnvelope")
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationFailed(f"model.sig: payloadType is not {IN_TOTO_PAYLOAD_TYPE}")
    payload = _b64(_field(envelope, "payload", str, "payload"), "payload")
    signatures = _field(envelope, "signatures", list, "signatures")
    if len(signatures) != 1:  # model_signing reads the first signature only: accept exactly one
        raise VerificationFailed(f"model.sig carries {len(signatures)} signatures, expected 1")
    signature = _b64(_field(signatures[0], "sig", str, "signature"), "signature")
    try:
        key.verify(signature, pae(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationFailed("model.sig: the ECDSA signature does not verify (payload or signature altered)") from None

    statement = _json(payload, "the statement")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationFailed(f"model.sig: statement _type is not {STATEMENT_TYPE}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationFailed(f"model.sig: predicateType is not {PREDICATE_TYPE}")
    predicate = _field(statement, "predicate", dict, "predicate")
    serialization_ = _field(predicate, "serialization", dict, "serialization")
    if serialization_.get("method") != "files" or serialization_.get("hash_type") != "sha256":
        raise VerificationFailed("model.sig: serialization is not per file with sha256")
    files: dict[str, str] = {}
    for resource in _field(predicate, "resources", list, "resources"):
        name, digest = _field(resource, "name", str, "resource name"), _field(resource, "digest", str, "resource digest")
        if resource.get("algorithm") != "sha256" or not _HEX64.match(digest) or name in files:
            raise VerificationFailed(f"model.sig: resource {name!r} is malformed or listed twice")
        files[name] = digest
    subjects = _field(statement, "subject", list, "subject")
    if len(subjects) != 1:
        raise VerificationFailed(f"model.sig: {len(subjects)} subjects, expected 1")
    root = _field(_field(subjects[0], "digest", dict, "subject digest"), "sha256", str, "subject sha256")
    if root != _root_digest(list(files.values())):
        raise VerificationFailed("model.sig: the subject digest is not the digest of its resources")
    return files
