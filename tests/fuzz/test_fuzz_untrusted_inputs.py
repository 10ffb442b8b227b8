"""Property-based fuzzing of every parser and verifier of untrusted bytes (issue 20, item 5).

Each property feeds arbitrary or mutated input to one entry point and allows exactly two
outcomes: a clear error (an ErasureError with a non-empty, one-line message) or a result that
says no more than the original signed or proved content said. Any other exception is a crash
and fails the property. Mutations are byte flips, byte changes, deletions, insertions of
bytes that matter to the formats, truncations, line edits (delete, duplicate, swap, replace)
and, for JSON documents, field deletions, additions, type changes, integer nudges and edits
of base64 strings through their decoded bytes.

Every property is derandomized (the same examples on every run) and sized so the whole
file runs in a few seconds on a 2-core machine.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical_json, parse_canonical
from ledger.certificate import ENVELOPE_FILE, PREDICATE_TYPE, TLOG_PROOF_FILE, verify_certificate
from ledger.dsse import sign_envelope, verify_envelope
from ledger.errors import ErasureError
from ledger.keys import build_trust, init_keys
from ledger.manifest import Manifest, verify_leaves_file, verify_membership, verify_non_membership
from ledger.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from ledger.note import (
    Checkpoint, Signer, open_note, parse_checkpoint, parse_note, parse_vkey, sign_checkpoint, sign_note,
    verify_checkpoint,
)
from ledger.proofs import (
    check_proof_json, consistency_json, format_tlog_proof, inclusion_json, parse_tlog_proof, verify_tlog_proof,
)
from ledger.statement import check_subjects, parse_statement
from ledger.workspace import Workspace
from producers.schemas import ErasureRequest, Job, OutcomeEvent, _Message, parse
from tests.ledger.test_certificate import _c, _issue
from unlearning.versions.safetensors_header import SafetensorsHeader, read_header

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=n)


REJECTED = object()


def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    """fn's result, or REJECTED after a clear error; any other exception propagates: a crash."""
    try:
        return fn(*args)
    except ErasureError as err:
        assert_clear(str(err))
        return REJECTED


def assert_clear(message: str) -> None:
    assert message.strip() and len(message.splitlines()) == 1, f"not a one-line reason: {message!r}"


# ---------------------------------------------------------------------------------------------
# mutations

# Bytes that mean something to at least one of the formats under test.
TOKENS = [b"\n", b"\n\n", b"\r", b"\x00", b"\x7f", "\u2014 ".encode(), b" ", b"+", b"=", b"==", b"/", b'"', b"{",
          b"}", b"[", b"]", b",", b":", b"0", b"-1", b"null", b"true", b"1e999", b"NaN", b"\\ud800", b"\\u0000",
          b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x80\x94", b"index 0", b"extra ", b"99999999999999999999"]


@st.composite
def mutated(draw: st.DrawFn, original: bytes, max_ops: int = 3) -> bytes:
    """`original` after 1..max_ops random edits."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "line"]))
        if op in ("flip", "set", "delete") and not n:
            op = "insert"
        if op == "flip":
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        elif op == "delete":
            i = draw(st.integers(0, n - 1))
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[draw(st.integers(0, max(n - 1, 0))) :]
        else:
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            edit = draw(st.sampled_from(["drop", "duplicate", "swap", "replace"]))
            if edit == "drop":
                del lines[i]
            elif edit == "duplicate":
                lines.insert(j, lines[i])
            elif edit == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = draw(st.binary(max_size=12) | st.sampled_from(TOKENS))
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def surrogate_text(raw: bytes) -> str:
    """Bytes as a str, undecodable bytes kept as lone surrogates (what a lenient reader hands over)."""
    return raw.decode("utf-8", "surrogateescape")


EDGE_TIMESTAMPS = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00",
                   "9999-12-31T23:59:59Z", "2026-02-30T00:00:00Z", "2026-11-22T10:00:00", "2026-11-22T25:00:00Z",
                   "2026-11-22T10:00:00+24:00", "-0001-01-01T00:00:00Z", "1e999", "now"]
EDGE_INTS = [0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 10**400]
EDGE_STRINGS = ["", " ", "\n", "a\nb", "\ud800", "\x00", "\u2028", "é", "=", "AA==", "x" * 300]

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
                | st.sampled_from(EDGE_INTS) | st.sampled_from(EDGE_STRINGS) | st.sampled_from(EDGE_TIMESTAMPS)
                | st.datetimes(timezones=st.builds(timezone, st.timedeltas(timedelta(hours=-23, minutes=-59),
                                                                            timedelta(hours=23, minutes=59)))
                               ).map(datetime.isoformat))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8) | st.sampled_from(EDGE_STRINGS), inner, max_size=4),
                           max_leaves=8)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        paths.extend(_paths(item, (*prefix, key)))
    return paths


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _edit_string(draw: st.DrawFn, value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if raw and draw(st.booleans()):  # edit what the base64 says, keep it valid base64
        return base64.b64encode(draw(mutated(raw, 1))).decode()
    return surrogate_text(draw(mutated(value.encode("utf-8", "surrogatepass"), 2)))


@st.composite
def edited(draw: st.DrawFn, original: Any, max_ops: int = 3) -> Any:
    """A JSON document after 1..max_ops field edits: delete, add, replace with any JSON value,
    nudge an integer, edit a string (or the bytes a base64 string holds), append to a list."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(_paths(doc)))
        value = _at(doc, path)
        ops = ["replace"] + ["delete"] * bool(path)
        if isinstance(value, dict):
            ops.append("add")
        if isinstance(value, list):
            ops.append("append")
        if isinstance(value, str):
            ops += ["string", "string"]
        if isinstance(value, int) and not isinstance(value, bool):
            ops += ["nudge", "nudge"]
        op = draw(st.sampled_from(ops))
        if op == "delete":
            del _at(doc, path[:-1])[path[-1]]
            continue
        if op == "add":
            value[draw(st.text(max_size=8) | st.sampled_from(EDGE_STRINGS))] = draw(json_values)
            continue
        if op == "append":
            value.append(copy.deepcopy(draw(st.sampled_from(value))) if value and draw(st.booleans())
                         else draw(json_values))
            continue
        new = (value + draw(st.integers(-3, 3)) if op == "nudge" else _edit_string(draw, value) if op == "string"
               else draw(json_values))
        if path:
            _at(doc, path[:-1])[path[-1]] = new
        else:
            doc = new
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # ASCII escapes, so lone surrogates and NaN survive as JSON text


# Deeply nested JSON, closed or not, alone or as a field of a message: Python's parser raises
# RecursionError beyond ~1000 levels, and code walking a parsed value recursively may do so sooner.
DEEP_WRAPPERS = [(b"", b""), (b'{"schema":"erasure.request/v1","kind":"erase_records","subject_id":"s","record_ids":',
                              b"}"), (b'{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":', b"}")]
deep_json = st.builds(lambda wrap, pair, depth, closed: wrap[0] + pair[0] * depth + pair[1] * depth * closed + wrap[1],
                      st.sampled_from(DEEP_WRAPPERS), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]),
                      st.sampled_from([10, 990, 1001, 5000, 100_000]), st.booleans())
untrusted_bytes = st.binary(max_size=300) | deep_json | st.lists(st.sampled_from(TOKENS), max_size=20).map(b"".join)

# ---------------------------------------------------------------------------------------------
# 1. Kafka messages: producers.schemas.parse

AT = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
MESSAGES: list[_Message] = [
    ErasureRequest(request_id="r-1", kind="erase_subject", subject_id="subject-7", requested_at=AT),
    ErasureRequest(request_id="r-2", kind="erase_records", subject_id="s", record_ids=["a", "b"], model="m",
                   requested_at=AT, deadline=AT + timedelta(days=30)),
    ErasureRequest(request_id="r-3", kind="rectify_record", subject_id="s", record_ids=["a"], prompt="p",
                   answer="Yes", approximate=True, requested_at=AT),
    OutcomeEvent(request_id="r-1", status="certified", model="m", version=2, shards=[0, 3],
                 certificate_sha256="ab" * 32, reason="ok", at=AT, requested_at=AT, deadline=AT),
    Job(job_id="j-1", model="m", shard=-1, request_ids=["r-1"], created_at=AT),
]
EXPECT = st.sampled_from([None, ErasureRequest, OutcomeEvent, Job])


def check_parse(raw: bytes, expect: type[_Message] | None) -> None:
    message = attempt(parse, raw, expect)
    if message is not REJECTED:
        assert isinstance(message, expect or _Message)
        assert parse(message.to_bytes(), type(message)) == message  # what parses, re-serialises


@examples(150)
@given(raw=untrusted_bytes, expect=EXPECT)
def test_schemas_arbitrary_bytes(raw: bytes, expect: type[_Message] | None) -> None:
    check_parse(raw, expect)


@examples(150)
@given(value=json_values, expect=EXPECT)
def test_schemas_arbitrary_json_values(value: Any, expect: type[_Message] | None) -> None:
    check_parse(dumps(value), expect)


@examples(250)
@given(data=st.data(), expect=EXPECT)
def test_schemas_field_edits_of_valid_messages(data: st.DataObject, expect: type[_Message] | None) -> None:
    original = json.loads(data.draw(st.sampled_from(MESSAGES)).to_bytes())
    doc = data.draw(edited(original))
    if isinstance(doc, dict) and data.draw(st.booleans()):  # a known or unknown field set to an edge value
        field = data.draw(st.sampled_from(sorted(doc) or ["schema"]) | st.sampled_from(EDGE_STRINGS))
        doc[field] = data.draw(st.sampled_from(EDGE_TIMESTAMPS + EDGE_STRINGS) | st.sampled_from(EDGE_INTS))
    check_parse(dumps(doc), expect)


@examples(100)
@given(data=st.data(), key=st.sampled_from(EDGE_STRINGS) | st.text(max_size=8), value=json_values)
def test_schemas_unknown_fields(data: st.DataObject, key: str, value: Any) -> None:
    doc = json.loads(data.draw(st.sampled_from(MESSAGES)).to_bytes())
    check_parse(dumps({key: value, **doc}), None)


TIMESTAMP_FIELDS = ["requested_at", "deadline", "at", "created_at"]


@examples(100)
@given(data=st.data(), field=st.sampled_from(TIMESTAMP_FIELDS),
       value=st.sampled_from(EDGE_TIMESTAMPS) | json_scalars)
def test_schemas_timestamp_fields(data: st.DataObject, field: str, value: Any) -> None:
    doc = json.loads(data.draw(st.sampled_from(MESSAGES)).to_bytes())
    check_parse(dumps({**doc, field: value}), None)


@examples(200)
@given(data=st.data(), expect=EXPECT)
def test_schemas_byte_mutations_of_valid_messages(data: st.DataObject, expect: type[_Message] | None) -> None:
    check_parse(data.draw(mutated(data.draw(st.sampled_from(MESSAGES)).to_bytes())), expect)


# ---------------------------------------------------------------------------------------------
# 2. C2SP signed notes and tlog checkpoints: ledger.note

ORIGIN = "fuzz.erasure.local/ledger/v1"
SIGNER = Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz ledger key").digest()))
COSIGNER = Signer("fuzz.example/witness", Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"witness").digest()))
VERIFIERS = [SIGNER.verifier]  # the witness's key is unknown: its signature line is ignored
ENTRIES = [canonical_json({"i": i, "type": "fuzz"}) for i in range(13)]
TREE = MemoryTree([leaf_hash(e) for e in ENTRIES])
CHECKPOINT = Checkpoint(ORIGIN, TREE.size, TREE.root)
NOTES = [sign_checkpoint(CHECKPOINT, SIGNER), sign_note(CHECKPOINT.text(), [COSIGNER, SIGNER]),
         sign_note(Checkpoint(ORIGIN, TREE.size, TREE.root, ("ext line",)).text(), [SIGNER])]


def check_note(note: str | bytes) -> None:
    """A note either fails clearly or verifies to exactly the text that was signed."""
    opened = attempt(open_note, note, VERIFIERS)
    signed = {parse_note(n).text for n in NOTES}
    assert opened is REJECTED or opened.text in signed
    checkpoint = attempt(verify_checkpoint, note, VERIFIERS, ORIGIN)
    assert checkpoint is REJECTED or checkpoint.text() in signed
    if opened is REJECTED:
        assert checkpoint is REJECTED


@examples(300)
@given(data=st.data())
def test_signed_checkpoint_mutations(data: st.DataObject) -> None:
    raw = data.draw(mutated(data.draw(st.sampled_from(NOTES)).encode()))
    check_note(raw)
    check_note(surrogate_text(raw))


note_text = st.lists(st.sampled_from(["\n", "\n\n", "\u2014 ", ORIGIN, " ", str(TREE.size), base64.b64encode(TREE.root)
                                      .decode(), "AAAA", "\x00", "\ud800", "+"]) | st.text(max_size=6),
                     max_size=16).map("".join)


@examples(150)
@given(note=note_text | st.text() | untrusted_bytes)
def test_arbitrary_notes(note: str | bytes) -> None:
    check_note(note)
    assert attempt(parse_note, note) is REJECTED or isinstance(note, bytes) or note.endswith("\n")
    if isinstance(note, str):
        attempt(parse_checkpoint, note)


@examples(100)
@given(data=st.data())
def test_verifier_key_mutations(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from([SIGNER.verifier.vkey, COSIGNER.verifier.vkey]))
    text = surrogate_text(data.draw(mutated(original.encode())))
    verifier = attempt(parse_vkey, text)
    assert verifier is REJECTED or verifier.vkey == text.strip() == original


# ---------------------------------------------------------------------------------------------
# 3. RFC 6962 / RFC 9162 proofs: ledger.proofs and ledger.merkle

INDEX = 7
TLOG_PROOF = format_tlog_proof(INDEX, TREE.inclusion_proof(INDEX), NOTES[0], extra=ENTRIES[INDEX])


def _verify_tlog(text: str) -> tuple[int, bytes]:
    """As the certificate verifier does: the entry checked is the one the proof carries."""
    proof = parse_tlog_proof(text)
    entry = proof.extra if proof.extra is not None else ENTRIES[INDEX]
    checkpoint = verify_tlog_proof(text, entry, VERIFIERS, ORIGIN)
    assert checkpoint == CHECKPOINT
    return proof.index, entry


@examples(300)
@given(data=st.data(), decode=st.sampled_from(["replace", "surrogateescape"]))
def test_tlog_proof_mutations(data: st.DataObject, decode: str) -> None:
    text = data.draw(mutated(TLOG_PROOF.encode())).decode("utf-8", decode)
    result = attempt(_verify_tlog, text)
    if result is not REJECTED:  # only a true statement: the entry it carries is the log's entry at its index
        index, entry = result
        assert index < len(ENTRIES) and entry == ENTRIES[index]


def _inclusion_claim(doc: dict) -> tuple:
    """What an inclusion proof asserts. The tree size is not in it: RFC 9162 binds the size only
    through the path's left/right pattern (a signed checkpoint pins it)."""
    proof = [base64.b64decode(h) for h in doc.get("proof") or []]
    return doc["leafIdx"], base64.b64decode(doc["leafHash"]), base64.b64decode(doc["root"]), proof


def _consistency_claim(doc: dict) -> tuple:
    proof = [base64.b64decode(h) for h in doc.get("proof") or []]
    return base64.b64decode(doc["root1"]), base64.b64decode(doc["root2"]), proof


@st.composite
def proof_documents(draw: st.DrawFn) -> tuple[dict, Callable[[dict], tuple]]:
    n = draw(st.integers(1, 40))
    leaves = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(n)]
    tree = MemoryTree(leaves)
    if draw(st.booleans()):
        i = draw(st.integers(0, n - 1))
        doc = inclusion_json(i, n, tree.root, leaves[i], tree.inclusion_proof(i))
        return doc, _inclusion_claim
    m = draw(st.integers(0, n))
    older = MemoryTree(leaves[:m])
    return consistency_json(m, n, older.root, tree.root, tree.consistency_proof(m)), _consistency_claim


@examples(300)
@given(data=st.data(), base=proof_documents())
def test_json_proof_mutations(data: st.DataObject, base: tuple[dict, Callable[[dict], tuple]]) -> None:
    original, claim = base
    assert attempt(check_proof_json, original) is not REJECTED
    if data.draw(st.booleans()):
        doc = data.draw(edited(original))
    else:
        try:
            doc = json.loads(data.draw(mutated(json.dumps(original).encode())))
        except ValueError:
            return
    if attempt(check_proof_json, doc) is not REJECTED:
        assert claim(doc) == claim(original)


VECTORS = [json.loads(p.read_text()) for p in
           sorted((Path(__file__).parents[1] / "data" / "rfc6962-inclusion").glob("*.json"))]
VALID_VECTOR_CLAIMS = [_inclusion_claim(v) for v in VECTORS if not v["wantErr"]]


@examples(150)
@given(data=st.data())
def test_rfc6962_vector_mutations(data: st.DataObject) -> None:
    doc = data.draw(edited(data.draw(st.sampled_from(VECTORS))))
    if attempt(check_proof_json, doc) is not REJECTED:
        assert _inclusion_claim(doc) in VALID_VECTOR_CLAIMS


hashes = st.binary(min_size=31, max_size=33) | st.sampled_from([TREE.root, ENTRIES[0][:32], b""])
sizes = st.integers() | st.sampled_from(EDGE_INTS)


@examples(150)
@given(index=sizes, size=sizes, leaf=hashes, proof=st.lists(hashes, max_size=8), root=hashes, root2=hashes)
def test_merkle_verifiers_on_arbitrary_arguments(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes,
                                                 root2: bytes) -> None:
    assert attempt(verify_inclusion, index, size, leaf, proof, root) is REJECTED or (0 <= index < size)
    attempt(verify_consistency, index, size, proof, root, root2)


# ---------------------------------------------------------------------------------------------
# 4. DSSE envelopes, in-toto statements and whole certificates

CERTIFIER = Signer("fuzz.erasure.local/certifier/v1",
                   Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz certifier key").digest()))
PAYLOAD = canonical_json({"_type": "https://in-toto.io/Statement/v1", "predicateType": PREDICATE_TYPE,
                          "subject": [{"name": "aggregation.json", "digest": {"sha256": "ab" * 32}}],
                          "predicate": {"claim": "EXACT"}})
ENVELOPES = [sign_envelope(PAYLOAD, CERTIFIER)]
ENVELOPES.append({**ENVELOPES[0], "signatures": sign_envelope(PAYLOAD, COSIGNER)["signatures"]
                  + ENVELOPES[0]["signatures"]})


def check_envelope(raw: bytes) -> None:
    payload = attempt(verify_envelope, raw, [CERTIFIER.verifier, SIGNER.verifier])
    assert payload is REJECTED or payload == PAYLOAD


@examples(250)
@given(data=st.data())
def test_dsse_envelope_byte_mutations(data: st.DataObject) -> None:
    check_envelope(data.draw(mutated(canonical_json(data.draw(st.sampled_from(ENVELOPES))))))


@examples(250)
@given(data=st.data())
def test_dsse_envelope_field_edits(data: st.DataObject) -> None:
    check_envelope(dumps(data.draw(edited(data.draw(st.sampled_from(ENVELOPES))))))


@examples(100)
@given(raw=untrusted_bytes)
def test_dsse_and_statement_arbitrary_bytes(raw: bytes) -> None:
    check_envelope(raw)
    attempt(parse_statement, raw, PREDICATE_TYPE)
    attempt(parse_canonical, raw)


@examples(150)
@given(data=st.data())
def test_statement_and_canonical_mutations(data: st.DataObject) -> None:
    raw = data.draw(mutated(PAYLOAD) | edited(json.loads(PAYLOAD)).map(dumps) | deep_json)
    statement = attempt(parse_statement, raw, PREDICATE_TYPE)
    assert statement is REJECTED or isinstance(statement["predicate"], dict)
    value = attempt(parse_canonical, raw)
    assert value is REJECTED or canonical_json(value) == raw


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, bytes], dict]:
    """A bundle with a valid certificate, issued as tests/ledger/test_certificate.py issues one."""
    root = tmp_path_factory.mktemp("fuzz-certificate")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ERASURE_HOME", str(root / "home"))
        env.delenv("ERASURE_KEY_DIR", raising=False)
        env.delenv("ERASURE_KEY_PASSPHRASE", raising=False)
        ws = Workspace.from_env().ensure()
        init_keys(ws.key_dir)
        bundle = root / "bundle"
        _issue(ws, bundle, erased=[_c(5)], held={"s0": [_c(i) for i in range(5)], "s1": [_c(i) for i in range(6, 9)]})
        trust = build_trust(ws)
    files = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}
    result = verify_certificate(bundle, trust)
    assert result.verified, result.to_json()
    envelope = json.loads(files[ENVELOPE_FILE])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return bundle, trust, files, statement


def _tlog_claim(text: bytes) -> tuple:
    proof = parse_tlog_proof(text.decode("utf-8", "replace"))
    return proof.index, proof.proof, proof.extra, parse_note(proof.checkpoint).text


@examples(120)
@given(data=st.data())
def test_certificate_bundle_mutations(certified: tuple, data: st.DataObject) -> None:
    bundle, trust, files, _ = certified
    rel = data.draw(st.sampled_from(sorted(files)))
    original = files[rel]
    if rel == ENVELOPE_FILE and data.draw(st.booleans()):
        raw = dumps(data.draw(edited(json.loads(original))))
    else:
        raw = data.draw(mutated(original))
    (bundle / rel).write_bytes(raw)
    try:
        result = verify_certificate(bundle, trust)
    finally:
        (bundle / rel).write_bytes(original)
    for check in result.checks:
        assert_clear(check.detail)
    if result.verified and raw != original:
        # only the tlog-proof lies outside the signed subjects; an equivalent rewrite of it may pass
        assert rel == TLOG_PROOF_FILE and _tlog_claim(raw) == _tlog_claim(original)


@examples(150)
@given(data=st.data())
def test_statement_subject_edits(certified: tuple, data: st.DataObject) -> None:
    bundle, _, _, statement = certified
    doc = data.draw(edited(statement))
    if not isinstance(doc, dict):  # parse_statement hands check_subjects objects only
        return

    def subjects(statement: dict) -> dict:
        return {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}

    if attempt(check_subjects, doc, bundle) is not REJECTED:
        assert subjects(doc) == subjects(statement)


# ---------------------------------------------------------------------------------------------
# 5. Manifests (leaves files, membership proofs) and safetensors headers

LEAVES = sorted(hashlib.sha256(b"commitment %d" % i).digest() for i in range(9))
MANIFEST = Manifest(LEAVES)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


@st.composite
def leaves_files(draw: st.DrawFn) -> bytes:
    leaves = list(LEAVES)
    edit = draw(st.sampled_from(["bytes", "swap", "duplicate", "drop", "partial", "reverse"]))
    if edit == "bytes":
        return draw(mutated(MANIFEST.to_bytes()))
    i, j = draw(st.integers(0, len(leaves) - 1)), draw(st.integers(0, len(leaves) - 1))
    if edit == "swap":
        leaves[i], leaves[j] = leaves[j], leaves[i]
    elif edit == "duplicate":
        leaves.insert(j, leaves[i])
    elif edit == "drop":
        del leaves[i]
    elif edit == "reverse":
        leaves.reverse()
    data = b"".join(leaves)
    return data + draw(st.binary(min_size=1, max_size=31)) if edit == "partial" else data


@examples(200)
@given(raw=leaves_files() | untrusted_bytes)
def test_manifest_leaves_files(scratch: Path, raw: bytes) -> None:
    path = scratch / "fuzz.leaves"
    path.write_bytes(raw)
    manifest = attempt(Manifest.read, path)
    assert manifest is REJECTED or manifest.to_bytes() == raw
    verified = attempt(verify_leaves_file, path, MANIFEST.root, MANIFEST.size)
    assert verified is REJECTED or raw == MANIFEST.to_bytes()


def _neighbour(proof: Any) -> Any:
    return None if proof is None else (proof["commitment"], proof["index"], tuple(proof["path"]))


OUTSIDE = [bytes(32), LEAVES[3][:31] + bytes([LEAVES[3][31] ^ 1]), b"\xff" * 32]


@examples(250)
@given(data=st.data())
def test_manifest_proof_edits(data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        commitment = data.draw(st.sampled_from(OUTSIDE))
        original = MANIFEST.non_membership_proof(commitment)
        doc = data.draw(edited(original))
        if attempt(verify_non_membership, MANIFEST.root, MANIFEST.size, commitment, doc) is not REJECTED:
            # a missing neighbour and a null one say the same: there is none on that side
            assert (_neighbour(doc.get("left")), _neighbour(doc.get("right"))) == (_neighbour(original["left"]),
                                                                                   _neighbour(original["right"]))
    else:
        commitment = data.draw(st.sampled_from(LEAVES))
        original = MANIFEST.membership_proof(commitment)
        doc = data.draw(edited(original))
        if attempt(verify_membership, MANIFEST.root, MANIFEST.size, commitment, doc) is not REJECTED:
            assert _neighbour(doc) == _neighbour(original)


HEADER = {"__metadata__": {"adapters": json.dumps([["a0", "ab" * 32], ["a1", "cd" * 32]])},
          "predictions": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def safetensors(header: bytes, data: bytes = bytes(16)) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    edit = draw(st.sampled_from(["bytes", "header", "length", "deep", "arbitrary"]))
    if edit == "bytes":
        return draw(mutated(safetensors(json.dumps(HEADER).encode()), 4))
    if edit == "header":
        return safetensors(dumps(draw(edited(HEADER))))
    if edit == "length":
        header = json.dumps(HEADER).encode()
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1) | st.integers(0, len(header) + 20))) + header + bytes(16)
    if edit == "deep":
        return safetensors(draw(deep_json))
    return draw(untrusted_bytes)


@examples(200)
@given(raw=safetensors_files())
def test_safetensors_headers(scratch: Path, raw: bytes) -> None:
    path = scratch / "fuzz.safetensors"
    path.write_bytes(raw)
    header = attempt(read_header, path)
    if header is not REJECTED:
        assert isinstance(header, SafetensorsHeader)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.metadata.items())
        assert all(type(n) is int and n >= 0 for shape in header.shapes.values() for n in shape)
