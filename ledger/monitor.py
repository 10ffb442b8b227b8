"""A monitor of a tiled log (C2SP tlog-tiles): follow it, verify every new checkpoint, and keep
the evidence when the log forks.

Each poll fetches the log's checkpoint and verifies its signature and origin. Against the
checkpoint verified before (kept per origin in a state directory, trust on first use):

- the same size and root: nothing new;
- larger: the edge tiles are authenticated against the new signed root, a consistency proof
  from the previous size is computed from the (authenticated) tiles and verified (RFC 9162
  §2.1.4.2), and the new checkpoint replaces the previous one; with `entries`, every new
  entry is fetched and checked against its leaf hash;
- smaller: reported (a stale cache or a rollback); the larger one is kept, and the log has to
  prove consistency with it once it grows past it;
- the same size with another root, or a consistency proof that does not verify: a fork. Two
  checkpoints signed by the log that no consistency proof can join are the evidence: both are
  written to the state directory and `ForkDetected` carries them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ledger.audit import save_state, state_file
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import Trust
from ledger.merkle import verify_consistency
from ledger.note import Checkpoint, b64encode, verified_cosignatures, verify_checkpoint
from ledger.tiles.client import TileLog
from ledger.tiles.verify import TileTree


@dataclass(frozen=True)
class Fork:
    origin: str
    url: str
    reason: str
    before: str  # the signed checkpoint verified before
    served: str  # the signed checkpoint the log serves now

    def text(self) -> str:
        """Both signed checkpoints, verbatim, each under a header line: what a third party needs."""
        return (f"fork of {self.origin}: {self.reason}\n"
                f"--- signed checkpoint verified before ---\n{self.before}"
                f"--- signed checkpoint served at {self.url} ---\n{self.served}")


class ForkDetected(VerificationFailed):
    def __init__(self, fork: Fork, evidence: Path | None) -> None:
        kept = f" (evidence in {evidence})" if evidence is not None else ""
        super().__init__(f"the log {fork.origin} forked: {fork.reason}{kept}")
        self.fork = fork
        self.evidence = evidence


@dataclass(frozen=True)
class Observation:
    kind: str  # first | same | grew | older
    origin: str
    size: int
    root: bytes
    previous_size: int | None
    entries: int  # new entries fetched and verified
    cosigned_by: tuple[str, ...]  # trusted witnesses whose valid cosignatures the checkpoint carries

    def to_json(self) -> dict:
        return {"kind": self.kind, "origin": self.origin, "size": self.size, "root": b64encode(self.root),
                "previous_size": self.previous_size, "entries_verified": self.entries,
                "cosigned_by": list(self.cosigned_by)}

    def line(self) -> str:
        cosigned = f", cosigned by {', '.join(self.cosigned_by)}" if self.cosigned_by else ""
        if self.kind == "first":
            return f"{self.origin}: first checkpoint, size {self.size} (trusted on first use){cosigned}"
        if self.kind == "same":
            return f"{self.origin}: size {self.size}, no new checkpoint"
        if self.kind == "older":
            return (f"{self.origin}: the log serves size {self.size}, older than the size {self.previous_size} "
                    "verified before (a stale view or a rollback); keeping the larger")
        entries = f", {self.entries} new entries verified" if self.entries else ""
        return f"{self.origin}: size {self.size} (was {self.previous_size}): consistent{entries}{cosigned}"


class Monitor:
    def __init__(self, url: str, trust: Trust, state_dir: Path, entries: bool = False) -> None:
        self.log_url = url
        self.trust = trust
        self.state_dir = state_dir
        self.entries = entries
        role = trust.role("ledger")
        self.origin = role.origin
        self.verifiers = role.verifiers()
        self.state = state_file(state_dir, self.origin)

    def _previous(self) -> tuple[Checkpoint, str] | None:
        try:
            note = self.state.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"cannot read monitor state {self.state}: {err}") from None
        try:
            return verify_checkpoint(note, self.verifiers, self.origin), note
        except VerificationFailed as err:
            raise VerificationFailed(f"saved checkpoint {self.state}: {err}") from None

    def poll(self) -> Observation:
        """One look at the log; ForkDetected (with the evidence written) on a fork."""
        log = TileLog(self.log_url)
        raw = log.checkpoint()
        try:
            checkpoint = verify_checkpoint(raw, self.verifiers, self.origin)
        except VerificationFailed as err:
            raise VerificationFailed(f"the checkpoint at {log.url}: {err}") from None
        note = raw.decode("utf-8")
        cosigned = self._cosigners(note)
        previous = self._previous()
        if previous is None:
            TileTree(log, checkpoint, note)  # the edge tiles hash to the signed root
            save_state(self.state, note)
            return Observation("first", self.origin, checkpoint.size, checkpoint.root, None, 0, cosigned)
        before, before_note = previous
        if checkpoint.size == before.size:
            if checkpoint.root != before.root:
                self._fork(log, f"two signed checkpoints of size {checkpoint.size} with different roots",
                           before_note, note)
            return Observation("same", self.origin, checkpoint.size, checkpoint.root, before.size, 0, cosigned)
        if checkpoint.size < before.size:
            return Observation("older", self.origin, checkpoint.size, checkpoint.root, before.size, 0, cosigned)
        tree = TileTree(log, checkpoint, note)
        proof = tree.consistency_proof(before.size)
        try:
            verify_consistency(before.size, checkpoint.size, proof, before.root, checkpoint.root)
        except VerificationFailed as err:
            self._fork(log, f"the checkpoint of size {checkpoint.size} is not consistent with the one of size "
                            f"{before.size} verified before: {err}", before_note, note)
        for index in range(before.size, checkpoint.size) if self.entries else ():
            tree.entry(index)  # fetched from its bundle, checked against the authenticated leaf hash
        save_state(self.state, note)
        new = checkpoint.size - before.size if self.entries else 0
        return Observation("grew", self.origin, checkpoint.size, checkpoint.root, before.size, new, cosigned)

    def _cosigners(self, note: str) -> tuple[str, ...]:
        if self.trust.witnesses is None:
            return ()
        try:
            found = verified_cosignatures(note, self.trust.witnesses.verifiers())
        except VerificationFailed as err:
            raise VerificationFailed(f"the checkpoint at {self.log_url}: {err}") from None
        return tuple(c.signature.name for c in found)

    def _fork(self, log: TileLog, reason: str, before: str, served: str) -> None:
        fork = Fork(self.origin, log.url, reason, before, served)
        path = self.state.with_name(f"{self.state.stem}.fork-{time.time_ns()}.txt")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(fork.text(), encoding="utf-8")
        except OSError:
            path = None  # the evidence still goes to the caller
        raise ForkDetected(fork, path)
