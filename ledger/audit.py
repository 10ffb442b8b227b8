"""The auditor's full check of a log: recompute everything from the stored entries.

Checks, in order, each failing closed with the first bad index or the failed check:
every stored checkpoint is signed by a trusted key for the trusted origin; entries are
contiguous canonical JSON with `type`, `v`, `at`; every stored tree hash equals its
recomputation from the entries; every checkpoint's root equals the recomputed root at its size;
the newest checkpoint is consistent with the one this auditor verified last time (kept in a
state directory, like the Go checksum-database client), which is then replaced by the newest.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from ledger.canonical import parse_canonical
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import WitnessPolicy
from ledger.merkle import CompactRange, leaf_hash, prove_consistency, stored_count, verify_consistency
from ledger.note import Checkpoint, Verifier, verify_checkpoint
from ledger.store import LogReader, LogStore, hash_reader

_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


@dataclass(frozen=True)
class AuditReport:
    origin: str
    entries: int
    checkpoint_size: int
    checkpoints: int
    previous_size: int | None  # size this auditor verified before; None on first use or without state
    cosigned_by: tuple[str, ...] = ()  # the witnesses whose cosignatures a witness policy required

    @property
    def unsigned_entries(self) -> int:
        return self.entries - self.checkpoint_size

    def to_json(self) -> dict:
        doc = {**asdict(self), "unsigned_entries": self.unsigned_entries}
        if not self.cosigned_by:  # no witness policy
            del doc["cosigned_by"]
        return doc


def state_file(state_dir: Path, origin: str) -> Path:
    return state_dir / f"{quote(origin, safe='')}.checkpoint"


def audit_log(
    store: LogStore, verifiers: Sequence[Verifier], origin: str, state_dir: Path | None = None,
    witnesses: WitnessPolicy | None = None,
) -> AuditReport:
    """With `witnesses`, the newest checkpoint must carry the cosignatures they require."""
    if store.origin != origin:
        raise VerificationFailed(f"log origin {store.origin!r} is not the trusted origin {origin!r}")
    with store.reading() as view:
        checkpoints = _verified_checkpoints(view, verifiers, origin)
        entries = _recompute(view, [cp for cp, _ in checkpoints])
        newest, newest_note = checkpoints[-1]
        cosigned = () if witnesses is None else tuple(
            c.signature.name for c in witnesses.check(newest_note, f"the newest checkpoint (size {newest.size})"))
        previous = None
        if state_dir is not None:
            previous = _check_saved(view, state_file(state_dir, origin), verifiers, newest)
    if state_dir is not None and (previous is None or previous.size < newest.size):
        save_state(state_file(state_dir, origin), newest_note)
    return AuditReport(
        origin=origin,
        entries=entries,
        checkpoint_size=newest.size,
        checkpoints=len(checkpoints),
        previous_size=None if previous is None else previous.size,
        cosigned_by=cosigned,
    )


def _verified_checkpoints(
    view: LogReader, verifiers: Sequence[Verifier], origin: str
) -> list[tuple[Checkpoint, str]]:
    rows = view.checkpoints()
    if not rows:
        raise VerificationFailed("the log has no signed checkpoint (run `erasure ledger checkpoint`)")
    result = []
    for size, note in rows:
        try:
            checkpoint = verify_checkpoint(note, verifiers, origin)
        except VerificationFailed as err:
            raise VerificationFailed(f"checkpoint of size {size}: {err}") from None
        if checkpoint.size != size:
            raise VerificationFailed(f"checkpoint stored for size {size} is signed for size {checkpoint.size}")
        result.append((checkpoint, note))
    return result


def _check_entry(index: int, data: bytes) -> None:
    try:
        entry = parse_canonical(data)
    except BadInput as err:
        raise VerificationFailed(f"entry {index}: {err}") from None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("type"), str)
        or entry.get("v") != 1
        or not isinstance(entry.get("at"), str)
        or not _RFC3339_UTC.fullmatch(entry["at"])
    ):
        raise VerificationFailed(f"entry {index}: not a ledger entry (needs type, v = 1, at in RFC 3339 UTC)")


def _recompute(view: LogReader, checkpoints: Sequence[Checkpoint]) -> int:
    """Recompute leaves, stored tree hashes and checkpoint roots; returns the number of entries."""
    pending = deque(checkpoints)
    compact = CompactRange()

    def check_roots() -> None:
        while pending and pending[0].size == compact.size:
            if pending.popleft().root != compact.root():
                raise VerificationFailed(
                    f"checkpoint of size {compact.size}: its root does not match the entries 0..{compact.size - 1}"
                )

    check_roots()
    stored = view.iter_hashes()
    for index, data in view.iter_entries():
        if index != compact.size:
            raise VerificationFailed(f"entry {compact.size} is missing")
        _check_entry(index, data)
        position = stored_count(index)
        for offset, computed in enumerate(compact.append(leaf_hash(data))):
            row = next(stored, None)
            if row is None or row[0] != position + offset:
                raise VerificationFailed(f"entry {index}: stored tree hash {position + offset} is missing")
            if row[1] != computed:
                if offset == 0:
                    raise VerificationFailed(f"entry {index}: its bytes do not match the stored leaf hash")
                first = index + 1 - (1 << offset)
                raise VerificationFailed(f"stored tree hash over entries {first}..{index} does not match them")
        check_roots()
    if next(stored, None) is not None:
        raise VerificationFailed(f"entry {compact.size} is missing: tree hashes remain for later entries")
    if pending:
        raise VerificationFailed(
            f"checkpoint of size {pending[0].size} covers more than the {compact.size} entries in the log"
        )
    return compact.size


def _check_saved(view: LogReader, path: Path, verifiers: Sequence[Verifier], newest: Checkpoint) -> Checkpoint | None:
    """Consistency of the newest checkpoint with the one verified last time (None on first use)."""
    try:
        note = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BadInput(f"cannot read auditor state {path}: {err.strerror}") from None
    try:
        saved = verify_checkpoint(note, verifiers, newest.origin)
    except VerificationFailed as err:
        raise VerificationFailed(f"saved checkpoint {path}: {err}") from None
    if saved.size > newest.size:
        raise VerificationFailed(
            f"log rolled back: its newest checkpoint has size {newest.size}, "
            f"but a checkpoint of size {saved.size} was verified before"
        )
    proof = prove_consistency(hash_reader(view), saved.size, newest.size)
    try:
        verify_consistency(saved.size, newest.size, proof, saved.root, newest.root)
    except VerificationFailed as err:
        raise VerificationFailed(
            f"newest checkpoint (size {newest.size}) is not consistent with the checkpoint of size "
            f"{saved.size} verified before: {err}"
        ) from None
    return saved


def save_state(path: Path, note: str) -> None:
    """Replace the saved checkpoint atomically: a crash leaves the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(note)
    os.replace(tmp, path)
