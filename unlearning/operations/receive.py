"""Receive: log a request with the commitments it erases, then crypto-shred (or correct) the records.

The data is gone before any model work starts; the ledger keeps only the commitments (hiding,
salted) and the subject's keyed tag. Idempotent by request id: a request logged before is
found, not logged again, and its records are shredded again (a crash between the ledger and
the record-store transaction must not leave them readable). The entry also counts the cached
activation rows of those commitments, which go with the records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger import entries
from ledger.certificate import Erasure
from ledger.errors import BadInput
from ledger.log import Ledger, open_ledger
from ledger.workspace import Workspace
from unlearning.data.records import Record, RecordStore, StoredRecord
from unlearning.data.secrets import subject_tag
from unlearning.operations.deadlines import PolicyTable, policy_table
from unlearning.training.config import TrainConfig


@dataclass(frozen=True)
class Receipt:
    """A logged erasure request: what the certificate cites."""

    request_id: str
    commitments: tuple[str, ...]  # hex, the receipt's and its parts'
    ledger_index: int
    part_indices: tuple[int, ...] = ()  # its request_commitments entries, parts 1, 2, …

    def to_erasure(self) -> Erasure:
        return Erasure(requestId=self.request_id, commitments=list(self.commitments), ledgerIndex=self.ledger_index,
                       partIndices=list(self.part_indices))


def default_request_id(ws: Workspace, model: str | None, subject_id: str, record_ids: list[str] | None) -> str:
    """Deterministic, so the same `forget` command twice is one request (and names nobody)."""
    scope = json.dumps([model, subject_tag(ws, subject_id), sorted(record_ids or [])])
    return "forget-" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def lookup_receipt(ws: Workspace, request_id: str) -> Receipt | None:
    """The receipt of an already logged request."""
    with open_ledger(ws) as ledger:
        index = ledger.find(entries.received_key(request_id))
        return None if index is None else _receipt(ledger, request_id, index)


def receipts_of(ws: Workspace, request_ids: list[str]) -> list[Receipt]:
    """The receipts of requests that must have been received (BadInput naming any that was not)."""
    with open_ledger(ws) as ledger:
        indices = {r: ledger.find(entries.received_key(r)) for r in request_ids}
        missing = [r for r, index in indices.items() if index is None]
        if missing:
            raise BadInput(f"requests not received: {', '.join(missing)}")
        return [_receipt(ledger, r, indices[r]) for r in request_ids]  # type: ignore[arg-type]


def _receipt(ledger: Ledger, request_id: str, index: int) -> Receipt:
    """The receipt at `index` with the commitments of its parts (logged with it)."""
    entry = json.loads(ledger.entry(index))
    commitments, parts = list(entry["commitments"]), []
    for part in range(1, entry.get("parts", 0) + 1):
        found = ledger.find(entries.commitments_key(request_id, part))
        if found is None:
            raise BadInput(f"request {request_id}: part {part} of its commitments is not in the ledger")
        commitments += json.loads(ledger.entry(found))["commitments"]
        parts.append(found)
    return Receipt(request_id, tuple(commitments), index, tuple(parts))


@dataclass(frozen=True)
class Request:
    """One erasure request as `receive_many` takes it (no Kafka types: the planner converts)."""

    request_id: str
    subject_id: str
    record_ids: tuple[str, ...] | None = None
    model: str | None = None
    source: dict | None = None


def receive(ws: Workspace, request_id: str, subject_id: str, record_ids: list[str] | None = None,
            model: str | None = None, source: dict | None = None) -> Receipt:
    """Log the request with its commitments, then crypto-shred the records (idempotent)."""
    result = receive_many(ws, [Request(request_id, subject_id, tuple(record_ids) if record_ids else None,
                                       model, source)])[0]
    if isinstance(result, BadInput):
        raise result
    return result


def receive_many(ws: Workspace, requests: list[Request], table: PolicyTable | None = None) -> list[Receipt | BadInput]:
    """`receive` for a batch, in one ledger and one record-store transaction; per request its
    receipt, or BadInput (e.g. unknown subject) with nothing logged for it. Each request is logged
    with its legal deadline (`deadlines`: the policy's, or the sender's when earlier) from
    `table` (default: erasure.toml's, read now).

    A request logged before is not logged again, but its records are shredded again: a crash
    between the two transactions must not leave them readable.
    """
    results: dict[str, Receipt | BadInput] = {}
    table, now = table or policy_table(ws), datetime.now(UTC)
    with open_ledger(ws) as ledger, RecordStore.open(ws) as store:
        new: dict[str, tuple[Request, list[bytes]]] = {}
        for req in requests:
            if req.request_id in results or req.request_id in new:
                continue
            index = ledger.find(entries.received_key(req.request_id))
            if index is not None:
                results[req.request_id] = _receipt(ledger, req.request_id, index)
                continue
            try:
                new[req.request_id] = (req, store.commitments_of(req.subject_id, req.record_ids))
            except BadInput as err:
                results[req.request_id] = err
        logged = [[entries.request_received(
            req.request_id, "erase_records" if req.record_ids else "erase_subject", subject_tag(ws, req.subject_id),
            req.model, [c.hex() for c in commitments], req.source or {"via": "cli"},
            activations=store.count_activations(commitments),
            deadline=table.at_receipt(req.source or {}, now),
        ), *entries.request_parts(req.request_id, [c.hex() for c in commitments])] for req, commitments in new.values()]
        indices = iter(ledger.append_many([e for request in logged for e in request]))
        for (req, commitments), request in zip(new.values(), logged):
            receipt, *parts = [next(indices) for _ in request]
            results[req.request_id] = Receipt(req.request_id, tuple(c.hex() for c in commitments), receipt, tuple(parts))
        # the ledger holds the commitments now: the records themselves can go
        store.erase_commitments(bytes.fromhex(c) for r in results.values() if isinstance(r, Receipt)
                                for c in r.commitments)
    return [results[req.request_id] for req in requests]


def correction(ws: Workspace, record_id: str, prompt: str | None, answer: str | None,
               subject_id: str | None = None) -> tuple[StoredRecord, Record]:
    """(the record as stored, its corrected content); BadInput for unknown records, a record of
    another subject than `subject_id`, or nothing to change."""
    if prompt is None and answer is None:
        raise BadInput("nothing to rectify: give a new prompt, a new answer or both")
    with RecordStore.open(ws) as store:
        old = store.record(record_id)  # BadInput for unknown records
    if subject_id is not None and old.subject_id != subject_id:
        raise BadInput(f"record {record_id!r} does not belong to subject {subject_id!r}")
    return old, Record(record_id, old.subject_id, old.prompt if prompt is None else prompt,
                       old.answer if answer is None else answer)


def check_trainable(configs: Iterable[TrainConfig], record: Record) -> None:
    """BadInput if a corrected record could not be trained on with these configs (too many
    tokens for a max_length, an empty answer): the retrain after the exclusion would fail.
    Needs only each base's tokenizer, not an engine."""
    from unlearning.training.base_models import load_base
    from unlearning.training.engine import encode

    limits: dict[str, int] = {}
    for config in configs:
        limits[config.base] = min(config.max_length, limits.get(config.base, config.max_length))
    for base, max_length in limits.items():
        encode(load_base(base), max_length, [record])


def logged_rectification(ws: Workspace, request_id: str, old: StoredRecord, new: Record) -> Receipt | None:
    """The receipt of a rectification request already logged (None: new); BadInput when a new
    request changes nothing, or a logged one was for earlier content of the record."""
    receipt = lookup_receipt(ws, request_id)
    same = (new.prompt, new.answer) == (old.prompt, old.answer)
    if receipt is None and same:
        raise BadInput(f"record {old.record_id!r} already has this prompt and answer: nothing to rectify")
    if receipt is not None and old.commitment.hex() not in receipt.commitments and not same:
        raise BadInput(f"request {request_id} was logged for earlier content of record {old.record_id!r}: "
                       "use a new request id")
    return receipt


def rectify_request_id(ws: Workspace, model: str, new: Record) -> str:
    """Deterministic per (model, record, new content), keyed so it reveals no content."""
    scope = json.dumps([model, subject_tag(ws, new.subject_id), new.record_id,
                        subject_tag(ws, new.canonical_bytes().decode("utf-8"))])
    return "rectify-" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def receive_rectification(ws: Workspace, request_id: str, old: StoredRecord, new: Record, model: str | None,
                          receipt: Receipt | None, source: dict | None = None,
                          table: PolicyTable | None = None) -> Receipt:
    """Log the request with the old commitment and its deadline (from `table`, default
    erasure.toml's), then replace the record's content (idempotent: a request logged before is
    completed if its record still has the old commitment)."""
    with open_ledger(ws) as ledger, RecordStore.open(ws) as store:
        if receipt is None:
            fields = [f for f in ("prompt", "answer") if getattr(new, f) != getattr(old, f)]
            source = source or {"via": "cli", "legal_basis": "GDPR Art. 16"}
            index = ledger.append_many([entries.request_received(
                request_id, "rectify_record", subject_tag(ws, old.subject_id), model, [old.commitment.hex()],
                source, fields, store.count_activations([old.commitment]),
                (table or policy_table(ws)).at_receipt(source, datetime.now(UTC)))])[0]
            receipt = Receipt(request_id, (old.commitment.hex(),), index)
        if old.commitment.hex() in receipt.commitments:  # the ledger holds the old commitment: replace it
            store.rectify_record(old.record_id, new.prompt, new.answer)
    return receipt

