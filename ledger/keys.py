"""Ed25519 keys per role (ledger, certifier), their verifier keys, and auditors' trust files.

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

from ledger.errors import BadInput
from ledger.note import Signer, Verifier, check_key_name, parse_vkey, raw_public_key, vkey
from ledger.workspace import Workspace

ROLES = ("ledger", "certifier")
# The ledger key's name is the log's origin (C2SP: the key name SHOULD equal the origin).
DEFAULT_NAMES = {"ledger": "erasure.local/ledger/v1", "certifier": "erasure.local/certifier/v1"}
_CONFIG_KEYS = {"ledger": ("ledger", "origin"), "certifier": ("certifier", "name")}
PASSPHRASE_ENV = "ERASURE_KEY_PASSPHRASE"
TRUST_SCHEMA = "erasure.trust/v1"


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


def init_keys(key_dir: Path, roles: tuple[str, ...] = ROLES) -> dict[str, bool]:
    """Create the missing role keys; existing keys are never replaced. Returns role -> created."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    passphrase = _passphrase()
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    created = {}
    for role in roles:
        private_path = private_key_path(key_dir, role)
        if private_path.exists():
            created[role] = False
            continue
        key = Ed25519PrivateKey.generate()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        public_key_path(key_dir, role).unlink(missing_ok=True)
        _write_new(public_key_path(key_dir, role), public_pem, 0o644)
        _write_new(private_path, private_pem, 0o600)
        created[role] = True
    return created


def _missing(path: Path) -> BadInput:
    return BadInput(f"no key at {path}: run `erasure keys init` (or set ERASURE_KEY_DIR)")


def load_public_key(key_dir: Path, role: str) -> Ed25519PublicKey:
    path = public_key_path(key_dir, role)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise _missing(path) from None
    except ValueError:
        raise BadInput(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key")
    return key


def load_private_key(key_dir: Path, role: str) -> Ed25519PrivateKey:
    path = private_key_path(key_dir, role)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise _missing(path) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying the key is encrypted and needs the passphrase
        passphrase = _passphrase()
        if passphrase is None:
            raise BadInput(f"{path} is encrypted: set {PASSPHRASE_ENV}") from None
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except ValueError:
            raise BadInput(f"cannot load {path}: wrong {PASSPHRASE_ENV}?") from None
    except ValueError:
        raise BadInput(f"cannot load {path}: not a PKCS#8 PEM private key") from None
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
class Trust:
    """What an auditor pins: per role, the expected origin (key name) and its verifier keys."""

    roles: dict[str, RoleTrust]

    def role(self, role: str) -> RoleTrust:
        if role not in self.roles:
            raise BadInput(f"trust file has no {role!r} role")
        return self.roles[role]

    def to_json(self) -> dict:
        return {
            "schema": TRUST_SCHEMA,
            "roles": {name: {"origin": r.origin, "vkeys": list(r.vkeys)} for name, r in sorted(self.roles.items())},
        }


def build_trust(workspace: Workspace) -> Trust:
    """The trust an auditor needs for this workspace's keys (public parts only)."""
    return Trust({role: RoleTrust(key_name(workspace, role), (role_vkey(workspace, role),)) for role in ROLES})


def write_trust(trust: Trust, path: Path) -> None:
    path.write_text(json.dumps(trust.to_json(), indent=2, sort_keys=True) + "\n")


def read_trust(path: Path) -> Trust:
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise BadInput(f"cannot read trust file {path}: {err.strerror}") from None
    except ValueError as err:
        raise BadInput(f"trust file {path} is not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("schema") != TRUST_SCHEMA or not isinstance(doc.get("roles"), dict):
        raise BadInput(f"trust file {path} is not an {TRUST_SCHEMA} document")
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
    return Trust(roles)
