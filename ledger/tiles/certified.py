"""A verified certificate checked against the log served as tiles: no copy of the database.

`erasure verify TARGET --log URL` runs these after the offline checks of
`ledger.certificate.verify_certificate` passed (so the certificate's checkpoints and its
tlog-proof are already verified, and its cited entries are in its own checkpoint):

- ledger consistency: both checkpoints the certificate carries (the one its evidence cites,
  the one its tlog-proof was made against) are prefixes of the log served now;
- log entries: the log serves each cited entry and the certificate_issued entry verbatim
  (fetched from their bundles, checked against the authenticated tiles);
- auditor state (with a state directory): the served log extends the checkpoint this auditor
  verified last time, which it then replaces.
"""

from __future__ import annotations

from pathlib import Path

from ledger.certificate import TLOG_PROOF_FILE, Verification
from ledger.errors import VerificationFailed
from ledger.keys import Trust
from ledger.note import verify_checkpoint
from ledger.proofs import parse_tlog_proof
from ledger.tiles.client import TileLog
from ledger.tiles.verify import TileTree, check_state, open_tree


def check_served_log(v: Verification, bundle: Path, trust: Trust, url: str, state_dir: Path | None = None) -> bool:
    """Add the checks above to `v` (whose offline checks passed); False when one failed."""
    assert v.predicate is not None
    p = v.predicate
    role = trust.role("ledger")
    verifiers = role.verifiers()
    tree: TileTree | None = None

    def tlog_proof():  # type: ignore[no-untyped-def]
        try:
            return parse_tlog_proof((bundle / TLOG_PROOF_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise VerificationFailed(f"cannot read {TLOG_PROOF_FILE}: {err}") from None

    def consistency() -> str:
        nonlocal tree
        tree = open_tree(TileLog(url), verifiers, role.origin)
        sizes = []
        for note in (p.ledger.checkpoint, tlog_proof().checkpoint):
            checkpoint = verify_checkpoint(note, verifiers, role.origin)
            tree.check_extends(checkpoint, "the certificate's checkpoint", "not published yet, or rolled back")
            sizes.append(checkpoint.size)
        return (f"certified checkpoints (sizes {sizes[0]}, {sizes[1]}) are prefixes of the log served at "
                f"{tree.log.url} (size {tree.size})")

    def entries() -> str:
        assert tree is not None
        for cited in p.ledger.entries:
            tree.check_entry(cited.index, cited.entry.encode("utf-8"))
        proof = tlog_proof()
        if proof.extra is None:
            raise VerificationFailed("tlog-proof carries no certificate_issued entry")
        tree.check_entry(proof.index, proof.extra)
        stats = tree.log.stats
        return (f"{len(p.ledger.entries)} cited entries and the certificate_issued entry (index {proof.index}) "
                f"served verbatim ({stats.requests} resources, {stats.bytes} bytes fetched)")

    def state() -> str:
        assert tree is not None and state_dir is not None
        result = check_state(tree, verifiers, state_dir)
        if result.previous_size is None:
            return f"first use: checkpoint of size {tree.size} kept in {state_dir}"
        return f"consistent with the checkpoint of size {result.previous_size} verified before"

    if not v.run("ledger consistency", consistency) or not v.run("log entries", entries):
        return False
    return state_dir is None or v.run("auditor state", state)

