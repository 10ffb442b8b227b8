"""in-toto Statement v1 over a bundle directory: every file outside `attestation/` is a subject.

A verifier recomputes the digests of the files it holds and requires the two sets to be equal:
a missing, extra or altered file fails.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ledger.canonical import canonical_json
from ledger.errors import VerificationFailed

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
ATTESTATION_DIR = "attestation"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_digests(bundle: Path) -> dict[str, str]:
    """POSIX relative path -> sha256 of every regular file outside `attestation/`."""
    digests = {}
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if rel == ATTESTATION_DIR or rel.startswith(ATTESTATION_DIR + "/"):
            continue
        if path.is_symlink():
            raise VerificationFailed(f"bundle file {rel} is a symbolic link")
        if path.is_file():
            digests[rel] = file_sha256(path)
    return digests


def build_statement(bundle: Path, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    subjects = [{"name": name, "digest": {"sha256": sha}} for name, sha in bundle_digests(bundle).items()]
    statement = {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": predicate_type, "predicate": predicate}
    return canonical_json(statement)


def parse_statement(payload: bytes, predicate_type: str) -> dict[str, Any]:
    """Parse a verified payload as a Statement of the expected predicate type."""
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VerificationFailed(f"statement is not JSON: {err}") from None
    except RecursionError:
        raise VerificationFailed("statement is not JSON: nested too deeply") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationFailed(f"statement _type is not {STATEMENT_TYPE}")
    if statement.get("predicateType") != predicate_type:
        raise VerificationFailed(f"predicateType {statement.get('predicateType')!r} is not {predicate_type!r}")
    if not isinstance(statement.get("predicate"), dict):
        raise VerificationFailed("statement has no predicate object")
    return statement


def check_subjects(statement: dict[str, Any], bundle: Path) -> None:
    """The statement's subjects are exactly the bundle's files with the same digests."""
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationFailed("statement has no subjects")
    claimed: dict[str, str] = {}
    for s in subjects:
        sha = s.get("digest", {}).get("sha256") if isinstance(s, dict) and isinstance(s.get("digest"), dict) else None
        name = s.get("name") if isinstance(s, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str) or name in claimed:
            raise VerificationFailed("statement subject is malformed or listed twice")
        claimed[name] = sha
    actual = bundle_digests(bundle)
    for name in sorted(claimed.keys() | actual.keys()):
        if name not in actual:
            shown = name if name.isprintable() else repr(name)  # the statement's, untrusted: one line
            raise VerificationFailed(f"bundle file {shown} is missing")
        if name not in claimed:
            raise VerificationFailed(f"bundle file {name} is not covered by the certificate")
        if claimed[name] != actual[name]:
            raise VerificationFailed(f"bundle file {name} has sha256 {actual[name][:16]}…, "
                                     f"the certificate says {claimed[name][:16]}…")
