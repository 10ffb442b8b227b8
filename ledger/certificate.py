"""Unlearning certificates: issue them for a bundle, and verify them offline.

A certificate is an in-toto Statement v1 (subjects = every bundle file outside `attestation/`)
with our predicate, in a DSSE envelope signed by the certifier key. Beside it,
`attestation/certificate.tlog-proof` proves that the `certificate_issued` ledger entry (carried
as the proof's extra data) is in the log. A predicate that names a `modelSignature` makes the
bundle's `model.sig` (OpenSSF model signing, `ledger.model_signature`) one of the subjects; it
must verify with the key named, over exactly the other subjects.

Bundle layout (design §7):

    aggregation.json                 method, aggregation rule, active components
    components/ID/...                adapter files of every active component
    manifests/ID.leaves              sorted 32-byte commitments each component was trained on
    attestation/certificate.dsse.json
    attestation/certificate.tlog-proof

Verification fails closed and parses only what it has verified: the envelope's signature
first, then the statement, then everything the statement claims, each as one named check.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ledger.canonical import canonical_json, parse_canonical
from ledger.dsse import sign_envelope, verify_envelope
from ledger.entries import certificate_issued
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import Trust
from ledger.manifest import Manifest, verify_leaves_file, verify_non_membership
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.model_signature import SIGNATURE_FILE, covers, key_hint, parse_public_pem, verify_model_signature
from ledger.note import Checkpoint, Signer, parse_checkpoint, parse_note, verify_checkpoint
from ledger.proofs import format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from ledger.statement import build_statement, check_subjects, parse_statement

PREDICATE_TYPE = "https://erasure.dev/attestation/unlearning/v1"
COMMITMENT_SCHEME = "erasure/record/v1"
ENVELOPE_FILE = "attestation/certificate.dsse.json"
TLOG_PROOF_FILE = "attestation/certificate.tlog-proof"

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestRef(_Strict):
    root: Hex32
    size: int = Field(ge=0)
    file: str  # bundle-relative path of the leaves file


class ComponentClaim(_Strict):
    id: str
    shard: int | None
    slice: int | None
    # trained: new in this version; kept: taken over unchanged from the parent version;
    # retrained: rebuilt after an erasure (resumedFrom names the clean checkpoint, None = scratch);
    # deactivated: S3T groups restored to their data-independent init from some position on;
    # updated: moved by an approximate (influence-function) update, never under an EXACT claim
    action: Literal["trained", "kept", "retrained", "deactivated", "updated"]
    resumedFrom: str | None = None
    manifest: ManifestRef
    ledgerIndex: int | None = Field(None, ge=0)  # its component_trained entry, cited in `ledger`


class Erasure(_Strict):
    requestId: str
    commitments: list[Hex32]
    ledgerIndex: int = Field(ge=0)  # its request_received entry, cited in `ledger`
    # its request_commitments entries (parts 1, 2, … of a receipt naming `parts`), cited in `ledger`;
    # absent from certificates issued before receipts were split
    partIndices: list[Annotated[int, Field(ge=0)]] = []


class NonMembership(_Strict):
    component: str
    commitment: Hex32
    proof: dict[str, Any]


class CitedEntry(_Strict):
    index: int = Field(ge=0)
    entry: str  # the entry's canonical JSON, verbatim
    proof: list[str]  # base64 inclusion path against `checkpoint`


class LedgerEvidence(_Strict):
    origin: str
    checkpoint: str  # signed note covering every cited entry
    entries: list[CitedEntry]


class ModelSignatureRef(_Strict):
    """The bundle's OpenSSF model-signing signature (`ledger.model_signature`): file, digest, key."""

    file: Literal["model.sig"] = "model.sig"
    predicateType: Literal["https://model_signing/signature/v1.0"] = "https://model_signing/signature/v1.0"
    sha256: Hex32
    publicKey: str  # PEM of the ECDSA P-256 key it verifies with (`model_signing verify key --public_key`)


class Predicate(_Strict):
    claim: Literal["EXACT", "APPROXIMATE"]
    method: str
    model: str
    modelVersion: int = Field(ge=1)
    parentVersion: int | None = None
    commitmentScheme: Literal["erasure/record/v1"] = COMMITMENT_SCHEME
    erasures: list[Erasure] = []
    components: list[ComponentClaim] = Field(min_length=1)
    removed: list[str] = []  # components of the parent version left out of this one
    nonMembership: list[NonMembership] = []
    build: dict[str, Any]
    approximation: dict[str, Any] | None = None  # solver, residual, what it does not guarantee
    ledger: LedgerEvidence
    modelSignature: ModelSignatureRef | None = None  # absent from certificates issued before model.sig

    @model_validator(mode="after")
    def _claim_matches(self) -> "Predicate":
        """An EXACT claim has no approximation and no updated component; APPROXIMATE says what it is."""
        if self.claim == "EXACT" and (self.approximation is not None or any(c.action == "updated" for c in self.components)):
            raise ValueError("an EXACT claim cannot carry an approximation or an updated component")
        if self.claim == "APPROXIMATE" and not self.approximation:
            raise ValueError("an APPROXIMATE claim must state its approximation")
        return self


# ---------------------------------------------------------------------------------------------
# issuing


def cite(ledger: Any, indices: Sequence[int], checkpoint: str) -> LedgerEvidence:
    """Ledger evidence for `indices` against a signed checkpoint (of a `ledger.log.Ledger`)."""
    size = parse_checkpoint(parse_note(checkpoint).text).size
    entries = [CitedEntry(index=i, entry=ledger.entry(i).decode("utf-8"),
                          proof=[base64.b64encode(h).decode() for h in ledger.inclusion_proof(i, size)])
               for i in sorted(set(indices))]
    return LedgerEvidence(origin=ledger.origin, checkpoint=checkpoint, entries=entries)


def non_membership_proofs(manifests: dict[str, Manifest], erased: Sequence[bytes]) -> list[NonMembership]:
    """A proof for every erased commitment in every component manifest; BadInput if one is present."""
    proofs = []
    for cid, manifest in sorted(manifests.items()):
        for c in sorted(set(erased)):
            if manifest.contains(c):
                raise BadInput(f"component {cid} still holds erased commitment {c.hex()[:16]}…")
            proofs.append(NonMembership(component=cid, commitment=c.hex(), proof=manifest.non_membership_proof(c)))
    return proofs


def sign_certificate(bundle: Path, predicate: Predicate, signer: Signer) -> bytes:
    """Write `attestation/certificate.dsse.json` for the bundle as it is now; returns its bytes."""
    payload = build_statement(bundle, PREDICATE_TYPE, predicate.model_dump(mode="json"))
    envelope = canonical_json(sign_envelope(payload, signer))
    path = bundle / ENVELOPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(envelope)
    return envelope


def log_certificate(bundle: Path, predicate: Predicate, envelope: bytes, ledger: Any) -> int:
    """Append `certificate_issued` (idempotent per envelope) and write the bundle's tlog-proof.

    `ledger` is a `ledger.log.Ledger` that can sign checkpoints. Returns the entry's index.
    """
    sha = hashlib.sha256(envelope).hexdigest()
    index = ledger.append_many([certificate_issued(predicate.model, predicate.modelVersion, predicate.claim,
                                                           sha, PREDICATE_TYPE)])[0]
    note = ledger.checkpoint()
    size = parse_checkpoint(parse_note(note).text).size
    text = format_tlog_proof(index, ledger.inclusion_proof(index, size), note, extra=ledger.entry(index))
    path = bundle / TLOG_PROOF_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return index


# ---------------------------------------------------------------------------------------------
# verifying


@dataclass
class Check:
    check: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


@dataclass
class Verification:
    checks: list[Check] = field(default_factory=list)
    predicate: Predicate | None = None
    envelope_sha256: str | None = None

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def claim(self) -> str | None:
        return self.predicate.claim if self.predicate else None

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        """Run one check; a failure is recorded (not raised) and stops the checks that depend on it."""
        try:
            detail = fn()
        except (VerificationFailed, BadInput) as err:
            self.checks.append(Check(name, False, str(err)))
            return False
        self.checks.append(Check(name, True, detail))
        return True

    def to_json(self) -> dict[str, Any]:
        return {"verified": self.verified, "claim": self.claim, "envelope_sha256": self.envelope_sha256,
                "checks": [c.to_json() for c in self.checks]}


def _read(bundle: Path, rel: str) -> bytes:
    try:
        return (bundle / rel).read_bytes()
    except OSError as err:
        raise VerificationFailed(f"cannot read {rel}: {err.strerror}") from None


def _entry(cited: CitedEntry, checkpoint: Checkpoint) -> dict[str, Any]:
    data = cited.entry.encode("utf-8")
    try:
        proof = [base64.b64decode(h, validate=True) for h in cited.proof]
    except ValueError:
        raise VerificationFailed(f"ledger entry {cited.index}: proof is not base64") from None
    try:
        verify_inclusion(cited.index, checkpoint.size, leaf_hash(data), proof, checkpoint.root)
    except VerificationFailed as err:
        raise VerificationFailed(f"ledger entry {cited.index} is not in the certified checkpoint: {err}") from None
    try:
        return parse_canonical(data)
    except BadInput as err:
        raise VerificationFailed(f"ledger entry {cited.index}: {err}") from None


def _model_signature(statement: dict[str, Any], bundle: Path, p: Predicate) -> str:
    """model.sig is the file the certificate names, verifies with the key it names, and covers
    exactly the certificate's other subjects (whose digests the subjects check recomputed)."""
    ref = p.modelSignature
    assert ref is not None
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    if subjects.get(SIGNATURE_FILE) != ref.sha256:
        raise VerificationFailed(f"{SIGNATURE_FILE} is not the subject the certificate names (sha256 {ref.sha256[:16]}…)")
    key = parse_public_pem(ref.publicKey)
    covered = verify_model_signature(_read(bundle, SIGNATURE_FILE), key)
    expected = {name: sha for name, sha in subjects.items() if covers(name)}
    for name in sorted(covered.keys() | expected.keys()):
        if covered.get(name) != expected.get(name):
            raise VerificationFailed(f"{SIGNATURE_FILE} and the certificate disagree on bundle file {name}")
    return (f"OpenSSF model signature by ECDSA P-256 key {key_hint(key)[:16]}… covers the "
            f"{len(covered)} bundle files besides itself")


def verify_certificate(bundle: Path, trust: Trust, log: Any | None = None) -> Verification:
    """Every check of design §1 that needs no model: signature, subjects, statement, manifests,
    non-membership, ledger inclusion (and consistency with `log`, a `ledger.log.Ledger`, when given).

    Checks that need the registry (binding, aliases) or replay are added by the caller.
    """
    v = Verification()
    envelope = b""
    payload = b""

    def signature() -> str:
        nonlocal envelope, payload
        envelope = _read(bundle, ENVELOPE_FILE)
        payload = verify_envelope(envelope, trust.role("certifier").verifiers())
        v.envelope_sha256 = hashlib.sha256(envelope).hexdigest()
        return f"DSSE signature by a trusted certifier key; envelope sha256 {v.envelope_sha256[:16]}…"

    if not v.run("signature", signature):
        return v

    statement: dict[str, Any] = {}

    def schema() -> str:
        nonlocal statement
        statement = parse_statement(payload, PREDICATE_TYPE)
        try:
            v.predicate = Predicate.model_validate(statement["predicate"])
        except ValidationError as err:
            first = err.errors()[0]
            raise VerificationFailed(f"predicate {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        p = v.predicate
        return f"{p.claim} {p.method} certificate for {p.model} v{p.modelVersion}"

    if not v.run("statement", schema):
        return v
    p = v.predicate
    assert p is not None

    if not v.run("subjects", lambda: (check_subjects(statement, bundle),
                                      f"{len(statement['subject'])} bundle files match their digests")[1]):
        return v

    if p.modelSignature is not None and not v.run("model signature", lambda: _model_signature(statement, bundle, p)):
        return v

    manifests: dict[str, Manifest] = {}

    def recompute_manifests() -> str:
        ids = [c.id for c in p.components]
        if len(ids) != len(set(ids)):
            raise VerificationFailed("a component is listed twice")
        for c in p.components:
            manifests[c.id] = verify_leaves_file(bundle / c.manifest.file, bytes.fromhex(c.manifest.root),
                                                 c.manifest.size)
        total = sum(m.size for m in manifests.values())
        return f"{len(manifests)} manifests recomputed from their leaves ({total} commitments)"

    if not v.run("manifests", recompute_manifests):
        return v

    def absent() -> str:
        erased = {c for e in p.erasures for c in e.commitments}
        proofs = {(n.component, n.commitment): n.proof for n in p.nonMembership}
        for cid, manifest in manifests.items():
            claim = next(c for c in p.components if c.id == cid)
            for c in sorted(erased):
                raw = bytes.fromhex(c)
                if manifest.contains(raw):  # the full recomputation, independent of any proof
                    raise VerificationFailed(f"component {cid} was trained on erased commitment {c[:16]}…")
                if (cid, c) not in proofs:
                    raise VerificationFailed(f"no non-membership proof of {c[:16]}… for component {cid}")
                verify_non_membership(bytes.fromhex(claim.manifest.root), claim.manifest.size, raw, proofs[(cid, c)])
        return f"{len(erased)} erased commitments absent from all {len(manifests)} components (proofs verified)"

    if not v.run("non-membership", absent):
        return v

    checkpoint: Checkpoint | None = None

    def ledger_inclusion() -> str:
        nonlocal checkpoint
        ledger_role = trust.role("ledger")
        if p.ledger.origin != ledger_role.origin:
            raise VerificationFailed(f"ledger origin {p.ledger.origin!r} is not the trusted {ledger_role.origin!r}")
        checkpoint = verify_checkpoint(p.ledger.checkpoint, ledger_role.verifiers(), ledger_role.origin)
        entries = {e.index: _entry(e, checkpoint) for e in p.ledger.entries}
        for e in p.erasures:
            entry = entries.get(e.ledgerIndex)
            if entry is None or entry.get("type") != "request_received" or entry.get("request_id") != e.requestId:
                raise VerificationFailed(f"request {e.requestId}: ledger entry {e.ledgerIndex} is not its receipt")
            logged = set(entry.get("commitments", []))
            if len(e.partIndices) != entry.get("parts", 0):
                raise VerificationFailed(f"request {e.requestId}: {len(e.partIndices)} parts cited, the receipt "
                                         f"names {entry.get('parts', 0)}")
            for number, index in enumerate(e.partIndices, 1):
                part = entries.get(index)
                if (part is None or part.get("type") != "request_commitments" or part.get("request_id") != e.requestId
                        or part.get("part") != number):
                    raise VerificationFailed(f"request {e.requestId}: ledger entry {index} is not part {number} "
                                             "of its commitments")
                logged.update(part.get("commitments", []))
            if not set(e.commitments) <= logged:
                raise VerificationFailed(f"request {e.requestId}: commitments differ from the logged request")
        for c in p.components:
            if c.ledgerIndex is None:
                raise VerificationFailed(f"component {c.id} cites no component_trained entry")
            entry = entries.get(c.ledgerIndex)
            if (entry is None or entry.get("type") != "component_trained" or entry.get("model") != p.model
                    or entry.get("component") != c.id or entry.get("manifest_root") != c.manifest.root
                    or entry.get("manifest_size") != c.manifest.size):
                raise VerificationFailed(f"component {c.id}: ledger entry {c.ledgerIndex} does not log this manifest")
        return f"{len(entries)} cited entries included in checkpoint of size {checkpoint.size}"

    if not v.run("ledger inclusion", ledger_inclusion):
        return v

    def logged_certificate() -> str:
        text = _read(bundle, TLOG_PROOF_FILE).decode("utf-8", errors="replace")
        proof = parse_tlog_proof(text)
        if proof.extra is None:
            raise VerificationFailed("tlog-proof carries no certificate_issued entry")
        ledger_role = trust.role("ledger")
        logged = verify_tlog_proof(text, proof.extra, ledger_role.verifiers(), ledger_role.origin)
        try:
            entry = parse_canonical(proof.extra)
        except BadInput as err:
            raise VerificationFailed(f"certificate_issued entry: {err}") from None
        if (entry.get("type") != "certificate_issued" or entry.get("envelope_sha256") != v.envelope_sha256
                or entry.get("model") != p.model or entry.get("version") != p.modelVersion):
            raise VerificationFailed("the logged certificate_issued entry is for another certificate")
        return f"certificate logged at index {proof.index} (checkpoint size {logged.size})"

    if not v.run("certificate logged", logged_certificate):
        return v

    if log is not None:
        def consistency() -> str:
            assert checkpoint is not None
            if log.origin != checkpoint.origin:
                raise VerificationFailed(f"the local ledger's origin {log.origin!r} is not {checkpoint.origin!r}")
            if log.size < checkpoint.size:
                raise VerificationFailed(f"the ledger has {log.size} entries, fewer than the certified "
                                         f"checkpoint's {checkpoint.size}: rolled back")
            proof = log.consistency_proof(checkpoint.size, log.size)
            verify_consistency(checkpoint.size, log.size, proof, checkpoint.root, log.root(log.size))
            return f"certified checkpoint (size {checkpoint.size}) is a prefix of the ledger (size {log.size})"

        v.run("ledger consistency", consistency)
    return v
