"""C2SP signed notes (Ed25519), tlog-checkpoint bodies and verifier keys.

Formats: https://c2sp.org/signed-note (v1.0.0) and https://c2sp.org/tlog-checkpoint (v1.0.0).
A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <name> base64(key id[4] || signature)`. Signatures from unknown keys are ignored (that is what
makes key rotation possible); a signature from a known key must verify, and at least one must.
Malformed or unverifiable notes raise VerificationFailed: a note is untrusted input until verified.

Witnesses add C2SP tlog-cosignature/v1 signatures (https://c2sp.org/tlog-cosignature, type 0x04):
timestamped Ed25519 signatures over `cosignature/v1\ntime <t>\n` + the checkpoint text, in the same
note. A cosignature verifier is one more note verifier, so `open_note` takes both kinds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import HASH_SIZE

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04  # timestamped Ed25519 cosignature (tlog-cosignature v1)
MAX_TIMESTAMP = (1 << 63) - 1
MAX_SIGNATURES = 64  # the spec asks verifiers to accept at least 16
MAX_NOTE_BYTES = 1_000_000
_SIG_PREFIX = "\u2014 "  # em dash, space
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-f]{8}")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): no other alphabet, no missing padding, no whitespace."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationFailed(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise VerificationFailed(f"{what} is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def check_key_name(name: str) -> str:
    if not name or "+" in name or any(ch.isspace() for ch in name) or not _encodable(name):
        raise BadInput(f"invalid key name {name!r}: it must be non-empty UTF-8, without spaces or '+'")
    return name


def _encodable(text: str) -> bool:
    """Whether `text` is valid Unicode: a str from a lenient decoder may hold lone surrogates."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> bytes:
    """C2SP key ID: SHA-256(name || 0x0A || alg || public key)[:4] (alg 0x01 signs notes, 0x04 cosigns)."""
    data = name.encode() + b"\n" + bytes([alg]) + raw_public_key(public_key)
    return hashlib.sha256(data).digest()[:4]


def vkey(name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> str:
    """Verifier key text: `name+hex8(key id)+base64(alg || public key)`."""
    check_key_name(name)
    encoded = b64encode(bytes([alg]) + raw_public_key(public_key))
    return f"{name}+{key_id(name, public_key, alg).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @property
    def vkey(self) -> str:
        return vkey(self.name, self.public_key)


def parse_vkey(text: str) -> Verifier:
    """Parse `name+hex8+base64(0x01 || key)`; BadInput when it is not a valid Ed25519 vkey."""
    name, hex_id, public_key = _parse_vkey(text, ALG_ED25519, "an Ed25519 key (type 0x01 + 32 bytes)")
    return Verifier(name, bytes.fromhex(hex_id), public_key)


def _parse_vkey(text: str, alg: int, kind: str) -> tuple[str, str, Ed25519PublicKey]:
    # Names cannot contain '+', base64 can: split at most twice.
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise BadInput(f"verifier key {text!r} is not of the form name+hex8+base64")
    name, hex_id, encoded = parts
    check_key_name(name)
    if not _HEX8.fullmatch(hex_id):
        raise BadInput(f"verifier key {name}: key ID {hex_id!r} is not 8 lowercase hex digits")
    try:
        raw = b64decode(encoded, "verifier key")
    except VerificationFailed as err:
        raise BadInput(f"verifier key {name}: {err}") from None
    if len(raw) != 33 or raw[0] != alg:
        raise BadInput(f"verifier key {name}: not {kind}")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public_key, alg).hex() != hex_id:
        raise BadInput(f"verifier key {name}: key ID {hex_id} does not match the key")
    return name, hex_id, public_key


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    def __repr__(self) -> str:  # never print key material
        return f"Signer(name={self.name!r})"

    @property
    def verifier(self) -> Verifier:
        public_key = self.private_key.public_key()
        return Verifier(self.name, key_id(self.name, public_key), public_key)

    def sign(self, message: bytes) -> bytes:
        """Key ID || Ed25519 signature, the bytes a signature line carries."""
        return self.verifier.key_id + self.private_key.sign(message)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]
    verified_by: tuple[str, ...] = ()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise VerificationFailed("note text does not end with a newline")
    bad = next((ch for ch in text if (ch < " " and ch != "\n") or ch == "\x7f"), None)
    if bad is not None:
        raise VerificationFailed(f"note text contains control character {bad!r}")


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    try:
        _check_text(text)
    except VerificationFailed as err:
        raise BadInput(f"cannot sign: {err}") from None
    if "\n\n" in text:
        raise BadInput("cannot sign: note text contains a blank line")
    lines = [f"{_SIG_PREFIX}{s.name} {b64encode(s.sign(text.encode()))}\n" for s in signers]
    return text + "\n" + "".join(lines)


def parse_note(note: str | bytes) -> Note:
    """Split a signed note into text and signature lines, without checking any signature."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise VerificationFailed(f"note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationFailed("note is not valid UTF-8") from None
    elif not _encodable(note):
        raise VerificationFailed("note is not valid UTF-8 (it holds lone surrogates)")
    elif len(note.encode()) > MAX_NOTE_BYTES:
        raise VerificationFailed(f"note is larger than {MAX_NOTE_BYTES} bytes")
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationFailed("note has no blank line between text and signatures")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not block:
        raise VerificationFailed("note has no signatures")
    if not block.endswith("\n"):
        raise VerificationFailed("note signatures do not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationFailed(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        fields = line.removeprefix(_SIG_PREFIX).split(" ")
        if not line.startswith(_SIG_PREFIX) or len(fields) != 2:
            raise VerificationFailed(f"malformed signature line {line!r}")
        name, encoded = fields
        try:
            check_key_name(name)
        except BadInput as err:
            raise VerificationFailed(str(err)) from None
        raw = b64decode(encoded, f"signature by {name}")
        if len(raw) < 5:
            raise VerificationFailed(f"signature by {name} is too short")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    return Note(text, tuple(signatures))


def open_note(note: str | bytes, verifiers: Sequence[Verifier | CosignatureVerifier]) -> Note:
    """Parse and verify a signed note; returns it with the names of the keys that verified it."""
    parsed = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = parsed.text.encode()
    verified = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise VerificationFailed(f"invalid signature by {sig.name}+{sig.key_id.hex()}")
        verified.append(sig.name)
    if not verified:
        signers = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in parsed.signatures)
        raise VerificationFailed(f"note is not signed by a trusted key (signed by: {signers})")
    return Note(parsed.text, parsed.signatures, tuple(verified))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Strict tlog-checkpoint body: origin, decimal size without leading zeros, base64 root."""
    if not text.endswith("\n"):
        raise VerificationFailed("checkpoint does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationFailed("checkpoint needs origin, size and root lines")
    origin, size, root, *extensions = lines
    if not origin:
        raise VerificationFailed("checkpoint origin is empty")
    if not _DECIMAL.fullmatch(size) or int(size) >= 1 << 63:
        raise VerificationFailed(f"checkpoint size {size!r} is not a canonical decimal number")
    raw_root = b64decode(root, "checkpoint root")
    if len(raw_root) != HASH_SIZE:
        raise VerificationFailed(f"checkpoint root is {len(raw_root)} bytes, not {HASH_SIZE}")
    if any(not line for line in extensions):
        raise VerificationFailed("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size), raw_root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    return sign_note(checkpoint.text(), [signer])


def verify_checkpoint(note: str | bytes, verifiers: Sequence[Verifier], origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note; with `origin`, its origin line must match."""
    checkpoint = parse_checkpoint(open_note(note, verifiers).text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationFailed(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    return checkpoint


# Witness cosignatures: C2SP tlog-cosignature/v1, Ed25519 (type 0x04).

COSIGNATURE_BYTES = 8 + 64  # u64 big-endian timestamp || Ed25519 signature


def cosigned_message(text: str | bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: a header line, a time line, then the checkpoint text."""
    body = text.encode() if isinstance(text, str) else text
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosignature_time(signature: bytes) -> int:
    """The POSIX timestamp a cosignature (the bytes after the key ID) carries."""
    return int.from_bytes(signature[:8], "big")


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's cosignature/v1 key: a note verifier whose signatures are timestamp || Ed25519."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != COSIGNATURE_BYTES or cosignature_time(signature) > MAX_TIMESTAMP:
            return False
        try:
            self.public_key.verify(signature[8:], cosigned_message(message, cosignature_time(signature)))
        except InvalidSignature:
            return False
        return True

    @property
    def vkey(self) -> str:
        return vkey(self.name, self.public_key, ALG_COSIGNATURE_V1)


def parse_cosigner_vkey(text: str) -> CosignatureVerifier:
    """Parse a witness vkey `name+hex8+base64(0x04 || key)`; BadInput when it is not one."""
    name, hex_id, public_key = _parse_vkey(text, ALG_COSIGNATURE_V1, "an Ed25519 cosigner key (type 0x04 + 32 bytes)")
    return CosignatureVerifier(name, bytes.fromhex(hex_id), public_key)


@dataclass(frozen=True)
class CosignatureSigner:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    def __repr__(self) -> str:  # never print key material
        return f"CosignatureSigner(name={self.name!r})"

    @property
    def verifier(self) -> CosignatureVerifier:
        public_key = self.private_key.public_key()
        return CosignatureVerifier(self.name, key_id(self.name, public_key, ALG_COSIGNATURE_V1), public_key)

    def cosign(self, text: str, timestamp: int) -> Signature:
        """A cosignature/v1 of a checkpoint's text at `timestamp` (POSIX seconds)."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise BadInput(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
        raw = timestamp.to_bytes(8, "big") + self.private_key.sign(cosigned_message(text, timestamp))
        return Signature(self.name, self.verifier.key_id, raw)


def format_signature(signature: Signature) -> str:
    """One note signature line: `— <name> base64(key ID || signature)`, newline-terminated."""
    return f"{_SIG_PREFIX}{signature.name} {b64encode(signature.key_id + signature.signature)}\n"


@dataclass(frozen=True)
class Cosignature:
    witness: str  # the witness's vkey
    timestamp: int
    signature: Signature


def verified_cosignatures(note: str | bytes, witnesses: Sequence[CosignatureVerifier]) -> list[Cosignature]:
    """The valid cosignatures on a note by `witnesses`, one per witness key (its newest), in the
    order of `witnesses`. Signatures by other keys are ignored; one by a known witness key that
    does not verify rejects the note, as in `open_note`. Checks no log signature."""
    parsed = parse_note(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    message = parsed.text.encode()
    found: dict[str, Cosignature] = {}
    for sig in parsed.signatures:
        witness = known.get((sig.name, sig.key_id))
        if witness is None:
            continue
        if not witness.verify(message, sig.signature):
            raise VerificationFailed(f"invalid cosignature by witness {sig.name}+{sig.key_id.hex()}")
        cosignature = Cosignature(witness.vkey, cosignature_time(sig.signature), sig)
        if witness.vkey not in found or found[witness.vkey].timestamp < cosignature.timestamp:
            found[witness.vkey] = cosignature
    return [found[w.vkey] for w in witnesses if w.vkey in found]


def add_signatures(note: str, signatures: Sequence[Signature]) -> str:
    """The note with `signatures` appended as signature lines; a line it already carries, or a
    second signature by the same key (name and key ID), replaces nothing and is not added."""
    parsed = parse_note(note)
    have = {(s.name, s.key_id) for s in parsed.signatures}
    lines = []
    for sig in signatures:
        if (sig.name, sig.key_id) not in have:
            have.add((sig.name, sig.key_id))
            lines.append(format_signature(sig))
    return note + "".join(lines)
