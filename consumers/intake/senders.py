"""Who may send requests to the intake: per sender a bearer token, of which only the SHA-256 is
kept, and for the IAB DDRF the issuer domain its JWTs name and the public keys they verify with.

One JSON file, `$ERASURE_HOME/intake/senders.json`, mode 0600, rewritten whole under a lock and
moved into place; the intake rereads it when it changes, so `erasure intake add-sender` and
`remove-sender` take effect without a restart. A token is 32 random bytes (URL-safe base64
after `ers_`): at that entropy a plain SHA-256 resists guessing as well as a slow hash would,
and a lookup compares digests in constant time.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ledger.errors import BadInput
from ledger.workspace import Workspace

SCHEMA = "erasure.intake-senders/v1"
TOKEN_PREFIX = "ers_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")  # also the DDRF issuer (an eTLD+1) unless one is given


@dataclass(frozen=True)
class Sender:
    name: str
    token_sha256: str
    created_at: str
    ddrf_issuer: str | None = None
    ddrf_keys: list[dict] = field(default_factory=list)

    def public(self) -> dict:
        """What `erasure intake senders` shows: no token digest."""
        return {"name": self.name, "created_at": self.created_at, "ddrf_issuer": self.ddrf_issuer,
                "ddrf_keys": [k.get("kid") for k in self.ddrf_keys]}


def senders_file(ws: Workspace) -> Path:
    return ws.home / "intake" / "senders.json"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Senders:
    def __init__(self, ws: Workspace) -> None:
        self.path = senders_file(ws)
        self._seen: tuple[int, int, int] | None = None
        self._senders: dict[str, Sender] = {}

    def all(self) -> dict[str, Sender]:
        """Every sender, reread when the file changed; BadInput when it cannot be read."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # each write is a new file: a new inode
        if seen != self._seen:
            self._senders, self._seen = self._read(), seen
        return self._senders

    def by_token(self, token: str) -> Sender | None:
        digest = token_digest(token)
        found = None
        for sender in self.all().values():  # every digest compared: the time taken names no sender
            if hmac.compare_digest(sender.token_sha256, digest):
                found = sender
        return found

    def by_issuer(self, issuer: str) -> Sender | None:
        return next((s for s in self.all().values() if s.ddrf_issuer == issuer), None)

    def keys_of(self, issuer: str) -> list[dict] | None:
        sender = self.by_issuer(issuer)
        return sender.ddrf_keys if sender else None

    def add(self, name: str, ddrf_keys: list[dict] | None = None, ddrf_issuer: str | None = None,
            replace: bool = False) -> str:
        """Register `name` (or, with `replace`, give it a new token and keys) and return its token,
        which is not stored: the caller shows it once."""
        if not NAME.fullmatch(name):
            raise BadInput(f"sender name {name!r} must match {NAME.pattern}")
        issuer = (ddrf_issuer or name) if ddrf_keys else None
        if issuer is not None and not NAME.fullmatch(issuer):
            raise BadInput(f"DDRF issuer {issuer!r} must match {NAME.pattern}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as senders:
            if name in senders and not replace:
                raise BadInput(f"sender {name!r} exists: pass --replace to give it a new token")
            clash = next((s.name for s in senders.values() if issuer and s.ddrf_issuer == issuer and s.name != name), None)
            if clash:
                raise BadInput(f"DDRF issuer {issuer!r} belongs to sender {clash!r}")
            senders[name] = Sender(name, token_digest(token), datetime.now(UTC).isoformat(timespec="seconds"),
                                   issuer, list(ddrf_keys or []))
        return token

    def remove(self, name: str) -> None:
        with self._locked() as senders:
            if senders.pop(name, None) is None:
                raise BadInput(f"no sender {name!r}")

    def _read(self) -> dict[str, Sender]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("schema") != SCHEMA:
                raise ValueError(f"not an {SCHEMA} document")
            return {name: Sender(**fields) for name, fields in doc["senders"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise BadInput(f"cannot read the senders file {self.path}: {err}") from None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Sender]]:
        """The senders to change, written back when the block succeeds; one writer at a time."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            senders = self._read()
            yield senders
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            doc = {"schema": SCHEMA, "senders": {n: s.__dict__ for n, s in sorted(senders.items())}}
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(fd, 0o600)  # the umask may only remove bits
                f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(fd)
            os.replace(tmp, self.path)
        finally:
            os.close(lock)
