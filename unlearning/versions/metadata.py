"""`model.json` and `component.json` as types: parsed once, strict on load.

A version's metadata is read by the operations, inference, verification (on an auditor's
machine, from a bundle) and the CLI; one typed model gives them all the same fields and
refuses a file with a missing, unknown or mistyped field with one clear error instead of a
KeyError somewhere downstream. Optional fields absent from a file read as None.
Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.errors import BadInput

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestSummary(_Strict):
    root: str  # hex RFC 6962 root over the sorted commitments
    size: int


class ComponentMeta(_Strict):
    """`component.json`: one unit of trained (or computed) state."""

    id: str
    kind: Literal["adapter", "aggregator"]
    shard: int | None = None  # None: APA's aggregator pools validation subjects of every shard
    slice: int | None = None
    group: int | None = None  # S3T: the only LoRA layer group the stage trained
    parent: str | None = None  # the component whose final training state this one started from
    samples: int
    steps: int
    environment: dict[str, Any]
    manifest: ManifestSummary
    weights_sha256: str  # the main file's digest: adapter weights, or the aggregator's pool
    files: dict[str, str]  # file name -> sha256, every file of the component at write time
    adapters: list[list[str]] | None = None  # aggregator: [component id, adapter sha256] per prediction column


class Aggregation(_Strict):
    """How the served components predict together (the method's state for it)."""

    rule: Literal["mean_p_yes", "apa"]
    components: list[str]  # the served components
    aggregator: str | None = None  # APA: the aggregator component, its merge and neighbour settings
    merge: str | None = None
    tau: float | None = None
    neighbours: int | None = None
    s3t: dict[str, Any] | None = None  # S3T: the order state (`unlearning.methods.s3t.orders.OrderState`)


class Operation(_Strict):
    """What made a version from its parent without training it from its plan."""

    kind: Literal["exclusion", "influence_update"]
    requests: list[str]
    removed: list[str]  # components left out
    updated: list[str] | None = None  # influence_update: the components moved
    solutions: dict[str, Any] | None = None  # influence_update: the solver's report per component


class VersionMeta(_Strict):
    """`model.json`: a model version."""

    name: str
    version: int
    method: str
    config: dict[str, Any]  # `TrainConfig.to_dict()`
    config_sha256: str
    base: dict[str, str]  # the base model's descriptor: name, weights and tokenizer digests
    environment: dict[str, Any]  # software and hardware a replay must match
    aggregation: Aggregation
    partition: dict[str, Any]  # how records were sharded: subject-hash, or public-centroid with its item shards
    components: list[str]
    created_at: str
    parent_version: int | None = None
    operation: Operation | None = None

    def fields(self) -> dict[str, Any]:
        """The fields a derived version inherits: all but its identity, its components and what
        made it (`parent_version`, `operation`: the derived version sets its own)."""
        return self.model_dump(mode="json", exclude_unset=True,
                               exclude={"name", "version", "components", "created_at", "parent_version", "operation"})


Meta = TypeVar("Meta", VersionMeta, ComponentMeta)


def read_meta(path: Path, kind: type[Meta]) -> Meta:
    """Parse a metadata file; BadInput with the file and the first problem if it is not valid."""
    try:
        return kind.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BadInput(f"{path} is missing") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BadInput(f"{path} is not valid {path.name}: {where}: {first['msg']}") from None


def write_meta(path: Path, meta: BaseModel) -> None:
    """Write with sorted keys and only the fields that were set (an explicit None stays null, an
    optional field nobody set stays absent), so the files keep the format earlier releases wrote."""
    data = meta.model_dump(mode="json", exclude_unset=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
