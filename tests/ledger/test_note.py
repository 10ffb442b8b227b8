"""C2SP signed notes, checkpoints and verifier keys: known answers and parse/verify edge cases."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import BadInput, VerificationFailed
from ledger.merkle import EMPTY_ROOT
from ledger.note import (
    Checkpoint,
    Signer,
    open_note,
    parse_checkpoint,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)

# Published examples: golang.org/x/mod/sumdb/note documentation and the C2SP signed-note spec.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY_SEED = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # the documentation's example key
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = f"{GO_TEXT}\n\u2014 PeterNeumann {GO_SIG}\n"
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"

ROOT = bytes(range(32))


def other_signer(name: str = "other.example/log") -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def test_go_note_known_answer() -> None:
    verifier = parse_vkey(GO_VKEY)
    assert verifier.key_id.hex() == "c74f20a3"
    note = open_note(GO_NOTE, [verifier])
    assert note.text == GO_TEXT and note.verified_by == ("PeterNeumann",)
    seed = base64.b64decode(GO_SKEY_SEED)[1:]
    signer = Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.verifier.vkey == GO_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE  # Ed25519 is deterministic


def test_c2sp_vkey_known_answer() -> None:
    verifier = parse_vkey(C2SP_VKEY)
    assert (verifier.name, verifier.key_id.hex()) == ("example.com/foo", "530d903a")
    assert verifier.vkey == C2SP_VKEY


@pytest.mark.parametrize(
    "text",
    [
        "nameonly",
        "example.com/foo+530d903a",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong id
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # not lowercase
        "example.com/foo+530d903a+AkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # bad base64
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # type 0x02
        "exam ple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_bad_vkeys(text: str) -> None:
    with pytest.raises(BadInput):
        parse_vkey(text)


def test_sign_and_verify_checkpoint(signer: Signer, origin: str) -> None:
    note = sign_checkpoint(Checkpoint(origin, 12, ROOT), signer)
    assert note.startswith(f"{origin}\n12\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {origin} ")
    assert verify_checkpoint(note, [signer.verifier], origin) == Checkpoint(origin, 12, ROOT)


def test_unknown_keys_are_ignored_but_one_known_is_needed(signer: Signer, origin: str) -> None:
    text = Checkpoint(origin, 3, ROOT).text()
    stranger = other_signer()
    both = sign_note(text, [stranger, signer])
    assert open_note(both, [signer.verifier]).verified_by == (origin,)
    with pytest.raises(VerificationFailed, match="not signed by a trusted key"):
        open_note(sign_note(text, [stranger]), [signer.verifier])
    # Same name, different key: still unknown (the id differs), still not enough.
    impostor = other_signer(origin)
    with pytest.raises(VerificationFailed, match="not signed by a trusted key"):
        open_note(sign_note(text, [impostor]), [signer.verifier])


def test_bad_signature_by_a_known_key_rejects_the_note(signer: Signer, origin: str) -> None:
    note = sign_checkpoint(Checkpoint(origin, 3, ROOT), signer)
    other = sign_checkpoint(Checkpoint(origin, 4, ROOT), signer)
    # Signature of another text under the right name and key id.
    forged = note.split("\n\n")[0] + "\n\n" + other.split("\n\n")[1]
    with pytest.raises(VerificationFailed, match="invalid signature"):
        open_note(forged, [signer.verifier])
    # A valid signature by a second trusted key does not excuse a bad one.
    second = other_signer()
    doubled = forged + sign_note(Checkpoint(origin, 3, ROOT).text(), [second]).split("\n\n")[1]
    with pytest.raises(VerificationFailed, match="invalid signature"):
        open_note(doubled, [signer.verifier, second.verifier])


def test_tampered_text_fails(signer: Signer, origin: str) -> None:
    note = sign_checkpoint(Checkpoint(origin, 3, ROOT), signer)
    with pytest.raises(VerificationFailed, match="invalid signature"):
        open_note(note.replace("\n3\n", "\n4\n"), [signer.verifier])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.rstrip("\n"), "do not end with a newline"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no signatures"),
        (lambda n: n.replace("\u2014 ", "- "), "malformed signature line"),
        (lambda n: n.replace("\u2014 ", "\u2014  "), "malformed signature line"),
        (lambda n: n.replace("\n\n", "\n\x01\n\n"), "control character"),
        (lambda n: n.encode()[:-3] + b"\xff\n", "not valid UTF-8"),
        (lambda n: n[:-5] + "!!!!\n", "base64"),
    ],
    ids=["missing-blank-line", "no-final-newline", "no-signatures", "ascii-dash", "double-space",
         "control-char", "bad-utf8", "bad-base64"],
)
def test_malformed_notes(signer: Signer, origin: str, mutate, reason: str) -> None:
    note = sign_checkpoint(Checkpoint(origin, 3, ROOT), signer)
    with pytest.raises(VerificationFailed, match=reason):
        open_note(mutate(note), [signer.verifier])


def test_too_many_signatures(signer: Signer, origin: str) -> None:
    text = Checkpoint(origin, 3, ROOT).text()
    note = sign_note(text, [signer] + [other_signer(f"w{i}.example") for i in range(64)])
    with pytest.raises(VerificationFailed, match="more than 64"):
        open_note(note, [signer.verifier])
    assert open_note(sign_note(text, [signer] * 16), [signer.verifier]).verified_by == (origin,) * 16


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("o\n012\n{root}\n", "canonical decimal"),
        ("o\n+12\n{root}\n", "canonical decimal"),
        ("o\n 12\n{root}\n", "canonical decimal"),
        ("o\n12\n", "origin, size and root"),
        ("\n12\n{root}\n", "origin is empty"),
        ("o\n12\n{short}\n", "not 32"),
        ("o\n12\n{root_nopad}\n", "base64"),
        ("o\n12\n{root}\n\n", "empty extension"),
        ("o\n12\n{root}", "newline"),
    ],
)
def test_checkpoint_parse_edge_cases(body: str, reason: str) -> None:
    encoded = base64.b64encode(ROOT).decode()
    text = body.format(root=encoded, short=base64.b64encode(ROOT[:31]).decode(), root_nopad=encoded.rstrip("="))
    with pytest.raises(VerificationFailed, match=reason):
        parse_checkpoint(text)


def test_checkpoint_extensions_and_empty_tree() -> None:
    text = f"o\n0\n{base64.b64encode(EMPTY_ROOT).decode()}\nextra line\n"
    checkpoint = parse_checkpoint(text)
    assert (checkpoint.size, checkpoint.root, checkpoint.extensions) == (0, EMPTY_ROOT, ("extra line",))
    assert checkpoint.text() == text


def test_origin_must_match(signer: Signer, origin: str) -> None:
    note = sign_checkpoint(Checkpoint(origin, 1, ROOT), signer)
    with pytest.raises(VerificationFailed, match="origin"):
        verify_checkpoint(note, [signer.verifier], "elsewhere.example/log")


def test_cannot_sign_bad_text(signer: Signer) -> None:
    with pytest.raises(BadInput, match="newline"):
        sign_note("no newline", [signer])
    with pytest.raises(BadInput, match="blank line"):
        sign_note("a\n\nb\n", [signer])
    with pytest.raises(BadInput, match="key name"):
        Signer("has space", Ed25519PrivateKey.generate())


def test_signer_repr_hides_the_key(signer: Signer) -> None:
    assert "private" not in repr(signer).lower() and signer.name in repr(signer)
