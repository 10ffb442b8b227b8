"""APA's verification step: the aggregator is bound to the adapters it serves beside.

Runs in the auditor's base install (no torch, numpy or safetensors): the aggregator's header is
read by `unlearning.versions.safetensors_header`.
"""

from __future__ import annotations

import json

from ledger.errors import VerificationFailed
from ledger.statement import file_sha256
from unlearning.versions.layout import ADAPTER_FILE, AGGREGATOR_FILE
from unlearning.versions.safetensors_header import read_header
from unlearning.versions.store import ModelVersion


def aggregator_binding(version: ModelVersion) -> str:
    """The aggregator's prediction columns are exactly the served adapters, in order, each
    bound to the digest of the adapter file beside it (a column computed by another adapter
    would weight the mixture by someone else's validation errors)."""
    aggregators = [c for c in version.components if c.meta.kind == "aggregator"]
    if len(aggregators) != 1:
        raise VerificationFailed(f"an APA version needs exactly one aggregator component, found {len(aggregators)}")
    aggregator = aggregators[0]
    served = [c for c in (version.component(cid) for cid in version.aggregate) if c.meta.kind == "adapter"]
    expected = [[c.id, file_sha256(c.path / ADAPTER_FILE)] for c in served]
    # The file's sha256 was checked against the signed statement before this check runs, so its
    # header is the certifier's; it is still parsed strictly, so a bad certifier gets a reason, not a traceback.
    header = read_header(aggregator.path / AGGREGATOR_FILE)
    try:
        columns = json.loads(header.metadata["adapters"])
    except (KeyError, ValueError, RecursionError):  # RecursionError: nested too deeply for json
        columns = None
    if not (isinstance(columns, list) and all(isinstance(c, list) and c for c in columns)):
        raise VerificationFailed(f"{AGGREGATOR_FILE} does not name the adapter of each prediction column")
    shape = header.shapes.get("predictions", ())
    if len(shape) != 2:
        raise VerificationFailed(f"{AGGREGATOR_FILE} has no [rows, adapters] predictions tensor")
    width = shape[1]
    if columns != expected or aggregator.meta.adapters != expected or width != len(expected):
        raise VerificationFailed(f"the aggregator's {width} prediction columns {[c[0] for c in columns]} are not "
                                 f"bound to the served adapters {[c[0] for c in expected]} and their weights")
    return f"{len(expected)} prediction columns bound to the served adapters' weights"
