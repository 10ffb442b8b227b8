"""Role keys on disk (0600, PKCS#8, optional passphrase), verifier keys and trust files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ledger.errors import BadInput
from ledger.keys import (
    build_trust,
    init_keys,
    key_name,
    load_signer,
    private_key_path,
    public_key_path,
    read_trust,
    role_vkey,
    write_trust,
)
from ledger.note import open_note, parse_vkey, sign_note
from ledger.workspace import Workspace


def test_init_creates_private_files(workspace: Workspace) -> None:
    assert init_keys(workspace.key_dir) == {"ledger": True, "certifier": True}
    assert stat.S_IMODE(workspace.key_dir.stat().st_mode) == 0o700
    for role in ("ledger", "certifier"):
        path = private_key_path(workspace.key_dir, role)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert public_key_path(workspace.key_dir, role).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert not list(workspace.key_dir.glob(".*tmp"))


def test_init_never_replaces_keys(workspace: Workspace) -> None:
    init_keys(workspace.key_dir)
    before = role_vkey(workspace, "ledger")
    assert init_keys(workspace.key_dir) == {"ledger": False, "certifier": False}
    assert role_vkey(workspace, "ledger") == before


def test_umask_does_not_widen_permissions(workspace: Workspace) -> None:
    old = os.umask(0)
    try:
        init_keys(workspace.key_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private_key_path(workspace.key_dir, "ledger").stat().st_mode) == 0o600


def test_signer_matches_vkey_and_names(workspace: Workspace) -> None:
    init_keys(workspace.key_dir)
    signer = load_signer(workspace, "ledger")
    assert signer.name == key_name(workspace, "ledger") == "erasure.local/ledger/v1"
    assert key_name(workspace, "certifier") == "erasure.local/certifier/v1"
    verifier = parse_vkey(role_vkey(workspace, "ledger"))
    assert verifier.verify(b"x\n", signer.sign(b"x\n")[4:])


def test_names_come_from_config(workspace: Workspace) -> None:
    workspace.ensure()
    workspace.config_file.write_text('[ledger]\norigin = "example.org/log/v2"\n[certifier]\nname = "example.org/cert"\n')
    assert key_name(workspace, "ledger") == "example.org/log/v2"
    assert key_name(workspace, "certifier") == "example.org/cert"
    workspace.config_file.write_text('[ledger]\norigin = "bad name"\n')
    with pytest.raises(BadInput, match="key name"):
        key_name(workspace, "ledger")


def test_passphrase_encryption(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_KEY_PASSPHRASE", "correct horse")
    init_keys(workspace.key_dir)
    assert private_key_path(workspace.key_dir, "ledger").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    assert load_signer(workspace, "ledger").name == "erasure.local/ledger/v1"
    monkeypatch.setenv("ERASURE_KEY_PASSPHRASE", "wrong")
    with pytest.raises(BadInput, match="wrong ERASURE_KEY_PASSPHRASE"):
        load_signer(workspace, "ledger")
    monkeypatch.delenv("ERASURE_KEY_PASSPHRASE")
    with pytest.raises(BadInput, match="is encrypted"):
        load_signer(workspace, "ledger")
    # The public half needs no passphrase.
    assert role_vkey(workspace, "ledger").startswith("erasure.local/ledger/v1+")


def test_load_errors(workspace: Workspace) -> None:
    with pytest.raises(BadInput, match="erasure keys init"):
        load_signer(workspace, "ledger")
    init_keys(workspace.key_dir)
    private = private_key_path(workspace.key_dir, "ledger")
    private.chmod(0o640)
    with pytest.raises(BadInput, match="accessible by other users"):
        load_signer(workspace, "ledger")
    private.chmod(0o600)
    public_key_path(workspace.key_dir, "ledger").write_bytes(public_key_path(workspace.key_dir, "certifier").read_bytes())
    with pytest.raises(BadInput, match="does not match"):
        load_signer(workspace, "ledger")
    with pytest.raises(BadInput, match="unknown key role"):
        load_signer(workspace, "auditor")


def test_trust_file_round_trip(workspace: Workspace, tmp_path: Path) -> None:
    init_keys(workspace.key_dir)
    path = tmp_path / "trust.json"
    write_trust(build_trust(workspace), path)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "erasure.trust/v1"
    assert doc["roles"]["ledger"] == {"origin": "erasure.local/ledger/v1", "vkeys": [role_vkey(workspace, "ledger")]}
    trust = read_trust(path)
    signer = load_signer(workspace, "certifier")
    note = sign_note("hello\n", [signer])
    assert open_note(note, trust.role("certifier").verifiers()).verified_by == (signer.name,)
    assert "PRIVATE" not in path.read_text()
    with pytest.raises(BadInput, match="no 'auditor' role"):
        trust.role("auditor")


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        '{"schema": "other"}',
        '{"schema": "erasure.trust/v1", "roles": {"ledger": {"origin": "o"}}}',
        '{"schema": "erasure.trust/v1", "roles": {"ledger": {"origin": "o", "vkeys": ["nope"]}}}',
    ],
)
def test_bad_trust_files(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "trust.json"
    path.write_text(doc)
    with pytest.raises(BadInput):
        read_trust(path)
