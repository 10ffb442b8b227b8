"""The ledger as a C2SP tiled log (https://c2sp.org/tlog-tiles): publish, serve, fetch, verify.

    layout   tile and entry-bundle paths, widths at a tree size, the bundle format
    publish  write the checkpoint, tiles and bundles to a directory or an object store
             (`erasure ledger publish`; `ledger.objects`, boto3 imported only for S3)
    serve    an HTTP server for them on 127.0.0.1 (`erasure ledger serve`)
    client   `TileLog`: fetch a log's checkpoint, tiles and bundles (urllib; nothing verified)
    verify   `open_tree`/`TileTree`: the tree of a verified checkpoint, every tile and entry
             authenticated against its signed root; inclusion, consistency, the auditor state

Client and verifier use only the standard library and `cryptography`: the auditor's base install.

    log = TileLog("http://127.0.0.1:8070/")
    tree = open_tree(log, trust.role("ledger").verifiers(), trust.role("ledger").origin)
    tree.entry(5)                # verified entry bytes
    tree.check_extends(older)    # no rollback, no fork since a verified checkpoint
    tree.consistency_proof(m)    # RFC 6962 proof from size m, e.g. for a witness
"""

from ledger.tiles.client import FetchStats, TileLog
from ledger.tiles.verify import StateCheck, TileTree, check_state, open_tree

__all__ = ["FetchStats", "StateCheck", "TileLog", "TileTree", "check_state", "open_tree"]
