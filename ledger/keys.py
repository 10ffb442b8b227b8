"""Ed25519 keys per role (ledger, certifier), their verifier keys, and auditors' trust files.

A trust file may also require cosignatures by k of n witnesses (C2SP tlog-cosignature/v1) on
the ledger's checkpoints; such a file is schema v2, which a reader of v1 refuses rather than
ignoring the requirement.

Private keys are PKCS#8 PEM files, mode 0600, in `ERASURE_KEY_DIR`, encrypted when
`ERASURE_KEY_PASSPHRASE` is set. A public-key PEM beside each lets `vkey` and `trust` work
without the passphrase, and loading a signer checks that the two still belong together.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import BadInput, VerificationFailed
from ledger.note import (
    Checkpoint,
    Cosignature,
    CosignatureVerifier,
    Signer,
    Verifier,
    check_key_name,
    parse_cosigner_vkey,
    parse_vkey,
    raw_public_key,
    verified_cosignatures,
    verify_checkpoint,
    vkey,
)
from ledger.workspace import Workspace

ROLES = ("ledger", "certifier")
# The ledger key's name is the log's origin (C2SP: the key name SHOULD equal the origin).
DEFAULT_NAMES = {"ledger": "erasure.local/ledger/v1", "certifier": "erasure.local/certifier/v1"}
_CONFIG_KEYS = {"ledger": ("ledger", "origin"), "certifier": ("certifier", "name")}
PASSPHRASE_ENV = "ERASURE_KEY_PASSPHRASE"
TRUST_SCHEMA = "erasure.trust/v1"
TRUST_SCHEMA_WITNESSED = "erasure.trust/v2"  # v1 + a witness policy


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise BadInput(f"unknown key role {role!r} (expected one of: {', '.join(ROLES)})")
    return role


def key_name(workspace: Workspace, role: str) -> str:
    """The key's name (the ledger's origin for the ledger key), from `erasure.toml` or the default."""
    section, field = _CONFIG_KEYS[_check_role(role)]
    name = workspace.config().get(section, {}).get(field, DEFAULT_NAMES[role])
    if not isinstance(name, str):
        raise BadInput(f"erasure.toml: [{section}] {field} must be a string")
    return check_key_name(name)


def private_key_path(key_dir: Path, role: str) -> Path:
    return key_dir / f"{_check_role(role)}.key.pem"


def public_key_path(key_dir: Path, role: str) -> Path:
    return key_dir / f"{_check_role(role)}.pub.pem"


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet; a crash leaves no half-written key under `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only remove bits; set exactly what we want
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # unlike rename, never replaces an existing key
    finally:
        tmp.unlink()


def write_key_pair(private_path: Path, public_path: Path, key) -> None:  # type: ignore[no-untyped-def]
    """Write a new private key (PKCS#8 PEM, mode 0600, encrypted when ERASURE_KEY_PASSPHRASE is
    set) and its public key (PEM, 0644) beside it; an existing private key is never replaced."""
    passphrase = _passphrase()
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_path.unlink(missing_ok=True)
    _write_new(public_path, public_pem, 0o644)
    _write_new(private_path, private_pem, 0o600)


def init_keys(key_dir: Path, roles: tuple[str, ...] = ROLES) -> dict[str, bool]:
    """Create the missing role keys; existing keys are never replaced. Returns role -> created."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = {}
    for role in roles:
        private_path = private_key_path(key_dir, role)
        if private_path.exists():
            created[role] = False
            continue
        write_key_pair(private_path, public_key_path(key_dir, role), Ed25519PrivateKey.generate())
        created[role] = True
    return created


def _missing(path: Path) -> BadInput:
    return BadInput(f"no key at {path}: run `erasure keys init` (or set ERASURE_KEY_DIR)")


def read_public_pem(path: Path, missing: BadInput):  # type: ignore[no-untyped-def]
    """The public key in a PEM file; `missing` is raised when there is no file."""
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise missing from None
    except ValueError:
        raise BadInput(f"{path} is not a PEM public key") from None


def load_public_key(key_dir: Path, role: str) -> Ed25519PublicKey:
    path = public_key_path(key_dir, role)
    key = read_public_pem(path, _missing(path))
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key")
    return key


def read_private_pem(path: Path, missing: BadInput):  # type: ignore[no-untyped-def]
    """The private key in a PEM file that only its owner may read, decrypted with
    ERASURE_KEY_PASSPHRASE when it is encrypted; `missing` is raised when there is no file."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying the key is encrypted and needs the passphrase
        passphrase = _passphrase()
        if passphrase is None:
            raise BadInput(f"{path} is encrypted: set {PASSPHRASE_ENV}") from None
        try:
            return serialization.load_pem_private_key(data, password=passphrase)
        except ValueError:
            raise BadInput(f"cannot load {path}: wrong {PASSPHRASE_ENV}?") from None
    except ValueError:
        raise BadInput(f"cannot load {path}: not a PKCS#8 PEM private key") from None


def load_private_key(key_dir: Path, role: str) -> Ed25519PrivateKey:
    path = private_key_path(key_dir, role)
    key = read_private_pem(path, _missing(path))
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path} is not an Ed25519 private key")
    if raw_public_key(key.public_key()) != raw_public_key(load_public_key(key_dir, role)):
        raise BadInput(f"{path} does not match {public_key_path(key_dir, role)}")
    return key


def load_signer(workspace: Workspace, role: str) -> Signer:
    return Signer(key_name(workspace, role), load_private_key(workspace.key_dir, role))


def role_vkey(workspace: Workspace, role: str) -> str:
    return vkey(key_name(workspace, role), load_public_key(workspace.key_dir, role))


@dataclass(frozen=True)
class RoleTrust:
    origin: str
    vkeys: tuple[str, ...]

    def verifiers(self) -> list[Verifier]:
        return [parse_vkey(v) for v in self.vkeys]


@dataclass(frozen=True)
class WitnessPolicy:
    """Checkpoints count only with valid cosignatures by at least `threshold` of these witnesses."""

    vkeys: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        keys = [parse_cosigner_vkey(v).vkey for v in self.vkeys]  # BadInput on a malformed key
        if len(set(keys)) != len(keys):
            raise BadInput("a witness key is listed twice")
        if not 1 <= self.threshold <= len(keys):
            raise BadInput(f"witness threshold {self.threshold} is outside 1..{len(keys)} (the witness keys given)")

    def verifiers(self) -> list[CosignatureVerifier]:
        return [parse_cosigner_vkey(v) for v in self.vkeys]

    def check(self, note: str | bytes, what: str = "the checkpoint") -> list[Cosignature]:
        """The valid cosignatures on `note` by these witnesses; VerificationFailed if fewer than
        the threshold (or if one by a listed witness does not verify)."""
        try:
            found = verified_cosignatures(note, self.verifiers())
        except VerificationFailed as err:
            raise VerificationFailed(f"{what}: {err}") from None
        if len(found) < self.threshold:
            have = ", ".join(c.signature.name for c in found) or "none"
            raise VerificationFailed(f"{what} carries {len(found)} valid witness cosignatures ({have}); the trust "
                                     f"file requires {self.threshold} of {len(self.vkeys)}")
        return found

    def satisfied(self, note: str | bytes) -> bool:
        try:
            self.check(note)
        except VerificationFailed:
            return False
        return True


@dataclass(frozen=True)
class Trust:
    """What an auditor pins: per role, the expected origin (key name) and its verifier keys;
    optionally the witnesses whose cosignatures the ledger's checkpoints need."""

    roles: dict[str, RoleTrust]
    witnesses: WitnessPolicy | None = None

    def role(self, role: str) -> RoleTrust:
        if role not in self.roles:
            raise BadInput(f"trust file has no {role!r} role")
        return self.roles[role]

    def verify_checkpoint(self, note: str | bytes, what: str = "the checkpoint") -> Checkpoint:
        """A ledger checkpoint signed by a trusted ledger key for the trusted origin and, when the
        trust requires it, cosigned by enough witnesses."""
        ledger = self.role("ledger")
        checkpoint = verify_checkpoint(note, ledger.verifiers(), ledger.origin)
        if self.witnesses is not None:
            self.witnesses.check(note, what)
        return checkpoint

    def to_json(self) -> dict:
        doc: dict = {
            "schema": TRUST_SCHEMA if self.witnesses is None else TRUST_SCHEMA_WITNESSED,
            "roles": {name: {"origin": r.origin, "vkeys": list(r.vkeys)} for name, r in sorted(self.roles.items())},
        }
        if self.witnesses is not None:
            doc["witnesses"] = {"threshold": self.witnesses.threshold, "vkeys": list(self.witnesses.vkeys)}
        return doc


def build_trust(workspace: Workspace, witnesses: WitnessPolicy | None = None) -> Trust:
    """The trust an auditor needs for this workspace's keys (public parts only)."""
    roles = {role: RoleTrust(key_name(workspace, role), (role_vkey(workspace, role),)) for role in ROLES}
    return Trust(roles, witnesses)


def write_trust(trust: Trust, path: Path) -> None:
    path.write_text(json.dumps(trust.to_json(), indent=2, sort_keys=True) + "\n")


def read_trust(path: Path) -> Trust:
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise BadInput(f"cannot read trust file {path}: {err.strerror}") from None
    except ValueError as err:
        raise BadInput(f"trust file {path} is not JSON: {err}") from None
    schemas = (TRUST_SCHEMA, TRUST_SCHEMA_WITNESSED)
    if not isinstance(doc, dict) or doc.get("schema") not in schemas or not isinstance(doc.get("roles"), dict):
        raise BadInput(f"trust file {path} is not an {TRUST_SCHEMA} or {TRUST_SCHEMA_WITNESSED} document")
    roles = {}
    for name, entry in doc["roles"].items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("origin"), str)
            or not isinstance(entry.get("vkeys"), list)
            or not all(isinstance(v, str) for v in entry["vkeys"])
        ):
            raise BadInput(f"trust file {path}: role {name!r} needs an origin and a list of vkeys")
        role = RoleTrust(check_key_name(entry["origin"]), tuple(entry["vkeys"]))
        role.verifiers()  # reject malformed keys when the file is read, not when first used
        roles[name] = role
    return Trust(roles, _witness_policy(doc, path))


def _witness_policy(doc: dict, path: Path) -> WitnessPolicy | None:
    if doc["schema"] == TRUST_SCHEMA:
        if "witnesses" in doc:
            raise BadInput(f"trust file {path}: a witness policy needs schema {TRUST_SCHEMA_WITNESSED}")
        return None
    entry = doc.get("witnesses")
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("vkeys"), list)
        or not all(isinstance(v, str) for v in entry["vkeys"])
        or not isinstance(entry.get("threshold"), int)
        or isinstance(entry["threshold"], bool)
    ):
        raise BadInput(f"trust file {path}: witnesses needs a list of vkeys and an integer threshold")
    try:
        return WitnessPolicy(tuple(entry["vkeys"]), entry["threshold"])
    except BadInput as err:
        raise BadInput(f"trust file {path}: {err}") from None
