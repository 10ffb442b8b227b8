"""Workspace secrets for keyed hashes: 32-byte keys in `ERASURE_KEY_DIR`, created on first use.

`subject.key` tags subjects in ledger entries (`HMAC(subject-key, subject_id)`), so the
ledger never names a person. `partition.key` keys the split, shard and slice hashes, so
nobody can choose where their data lands. Key files are 0600 and their bytes are never
printed or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ledger.errors import BadInput
from ledger.keys import _write_new
from ledger.workspace import Workspace

KEY_BYTES = 32


def workspace_secret(workspace: Workspace, name: str) -> bytes:
    """The key `NAME.key` in the workspace key directory, created (0600, atomically) if missing."""
    path = workspace.key_dir / f"{name}.key"
    if not path.exists():
        workspace.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            _write_new(path, secrets.token_bytes(KEY_BYTES), 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise BadInput(f"key file {path} is not a {KEY_BYTES}-byte key")
    return key


def subject_tag(workspace: Workspace, subject_id: str) -> str:
    """How ledger entries name a subject: hex HMAC-SHA256(subject-key, subject_id)."""
    key = workspace_secret(workspace, "subject")
    return hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()
