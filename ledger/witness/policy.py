"""A trust file's witness policy (k of n cosignatures) applied to what a verification relies on.

A checkpoint counts as witnessed when it carries cosignatures by k of the trusted witnesses, or
when it is proven a prefix of a newer checkpoint that does (an anchor: the local ledger's newest
checkpoint, or the one a log serves as tiles). The second case is what a checkpoint signed while
the witnesses were away relies on once they have cosigned a later one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.certificate import TLOG_PROOF_FILE, Predicate
from ledger.errors import VerificationFailed
from ledger.keys import Trust, WitnessPolicy
from ledger.merkle import verify_consistency
from ledger.note import Checkpoint, Cosignature, verify_checkpoint
from ledger.proofs import parse_tlog_proof
from ledger.tiles.client import TileLog
from ledger.tiles.verify import open_tree


@dataclass(frozen=True)
class Anchor:
    what: str  # e.g. "the ledger's newest checkpoint"
    checkpoint: Checkpoint  # verified, and cosigned as the trust requires
    cosigned: list[Cosignature]
    extends: Callable[[Checkpoint], None]  # raises VerificationFailed unless the checkpoint is a prefix


def _policy(trust: Trust) -> WitnessPolicy:
    if trust.witnesses is None:
        raise VerificationFailed("the trust file requires no witnesses")
    return trust.witnesses


def _names(cosigned: list[Cosignature]) -> str:
    return ", ".join(c.signature.name for c in cosigned)


def ledger_anchor(log: Any, trust: Trust) -> Anchor:
    """The newest checkpoint stored in `log` (a `ledger.log.Ledger`), which must be witnessed."""
    note = log.latest_checkpoint()
    if note is None:
        raise VerificationFailed("the ledger has no signed checkpoint")
    what = "the ledger's newest checkpoint"
    anchor = _signed(trust, note, what)
    cosigned = _policy(trust).check(note, what)

    def extends(older: Checkpoint) -> None:
        if older.size > anchor.size:
            raise VerificationFailed(f"checkpoint of size {older.size} is beyond {what} (size {anchor.size})")
        proof = log.consistency_proof(older.size, anchor.size)
        try:
            verify_consistency(older.size, anchor.size, proof, older.root, anchor.root)
        except VerificationFailed as err:
            raise VerificationFailed(f"checkpoint of size {older.size} is not a prefix of {what}: {err}") from None

    return Anchor(f"{what} (size {anchor.size})", anchor, cosigned, extends)


def served_anchor(url: str, trust: Trust) -> Anchor:
    """The checkpoint a log serves as tiles at `url`, which must be witnessed."""
    role = trust.role("ledger")
    tree = open_tree(TileLog(url), role.verifiers(), role.origin)
    what = f"the checkpoint served at {tree.log.url}"
    cosigned = _policy(trust).check(tree.note, what)
    return Anchor(f"{what} (size {tree.size})", tree.checkpoint, cosigned, tree.check_extends)


def check_witnessed(trust: Trust, notes: Mapping[str, str], anchor: Callable[[], Anchor] | None = None) -> str:
    """Every note in `notes` (what it is -> a checkpoint already verified by the ledger key) is
    witnessed: cosigned as the trust requires, or a prefix of the anchor's checkpoint."""
    policy = _policy(trust)
    lacking: dict[str, tuple[Checkpoint, VerificationFailed]] = {}
    names: set[str] = set()
    for what, note in notes.items():
        checkpoint = _signed(trust, note, what)
        try:
            names.update(c.signature.name for c in policy.check(note, what))
        except VerificationFailed as err:
            lacking[what] = (checkpoint, err)
    rule = f"{policy.threshold} of {len(policy.vkeys)}"
    if not lacking:
        return f"{' and '.join(notes)} cosigned by {rule} trusted witnesses ({', '.join(sorted(names))})"
    first = next(iter(lacking.values()))[1]
    if anchor is None:
        raise VerificationFailed(f"{first}, and there is no newer witnessed checkpoint to anchor it to (give "
                                 "--log URL, or verify where the ledger is)")
    try:
        found = anchor()
    except VerificationFailed as err:
        raise VerificationFailed(f"{first}, and no anchor: {err}") from None
    for checkpoint, _ in lacking.values():
        found.extends(checkpoint)
    return (f"{' and '.join(lacking)} not cosigned as required but prefixes of {found.what}, cosigned by "
            f"{rule} trusted witnesses ({_names(found.cosigned)})")


def _signed(trust: Trust, note: str, what: str) -> Checkpoint:
    role = trust.role("ledger")
    try:
        return verify_checkpoint(note, role.verifiers(), role.origin)
    except VerificationFailed as err:
        raise VerificationFailed(f"{what}: {err}") from None


def certificate_checkpoints(bundle: Path, predicate: Predicate) -> dict[str, str]:
    """The checkpoints a certificate relies on: its evidence's and its tlog-proof's."""
    try:
        proof = parse_tlog_proof((bundle / TLOG_PROOF_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise VerificationFailed(f"cannot read {TLOG_PROOF_FILE}: {err}") from None
    return {"the certified checkpoint": predicate.ledger.checkpoint, "the tlog-proof's checkpoint": proof.checkpoint}
