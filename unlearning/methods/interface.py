"""The method interface: everything that differs between unlearning methods.

The operations, inference, verification and the CLI never ask which method a version has; they
call its `Method` (`unlearning.methods.get`). `MeanOfAdapters` is the common case (predictions
are the mean P(Yes) of independently trained components, an exclusion drops the affected ones);
a method overrides what it does differently. Nothing here imports torch: the auditor's base
install runs every method's verification checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import BadInput
from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord
from unlearning.methods.base import ComponentSpec, Plan
from unlearning.training.config import TrainConfig

if TYPE_CHECKING:
    from rich.progress import Progress

    from unlearning.training.engine import Engine
    from unlearning.versions.metadata import VersionMeta
    from unlearning.versions.store import Draft, ModelVersion

Check = tuple[str, Callable[[], str]]  # a named verification step: returns its detail, raises VerificationFailed
Scorer = Callable[[list[list[int]], "Progress | None"], list[float]]  # token ids -> P(Yes) per input


@dataclass(frozen=True)
class Exclusion:
    """What an exact exclusion keeps of a version, without training."""

    kept: list[str]  # component ids carried over unchanged
    aggregation: dict  # the new version's `aggregation`
    rewritten: tuple[str, Any] | None = None  # (id, content) of a component rewritten without the erased
    # records, written with `Draft.write_aggregator` (APA: its aggregator); None: nothing rewritten


class Method(Protocol):
    """One unlearning method, from planning to verification (registered in `unlearning.methods`)."""

    name: str
    supports_influence: bool  # the approximate path can update its served adapters one by one
    default_shards: int  # `erasure train` defaults
    default_slices: int

    def default_fields(self, slices: int) -> dict:
        """Defaults of the method's own TrainConfig fields, given the slices chosen."""

    def partition(self, config: TrainConfig, keyed: Partition, engine: "Engine") -> Partition:
        """The partition a new model is planned with (APA may fit public centroids)."""

    def version_partition(self, meta: "VersionMeta", keyed: Partition) -> Partition:
        """The partition a version was planned with, for re-planning it (unlearning, replay)."""

    def plan(self, config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
        """The components on these records (sorted by record id; any splits)."""

    def build_computed(self, engine: "Engine", draft: "Draft", plan: Plan, spec: ComponentSpec,
                       reuse: "ModelVersion | None", environment: dict, progress: "Progress | None") -> bool:
        """Write a component that is computed, not trained (kind other than adapter: APA's
        aggregator) into the draft, reusing `reuse`'s copy when still right; True if it changed."""

    def replay_computed(self, engine: "Engine", version: "ModelVersion", spec: ComponentSpec,
                        directory: Path) -> str:
        """Recompute such a component from scratch into `directory`; the digest of its main file."""

    def exclude(self, version: "ModelVersion", affected: set[str], erased: set[bytes]) -> Exclusion:
        """The exact exclusion of the `affected` components (which hold `erased` commitments)."""

    def restrict(self, clean: "ModelVersion", plan: Plan, shards: set[int]) -> Plan:
        """A re-plan on the retained records narrowed to a restore of `shards`."""

    def scorer(self, version: "ModelVersion", engine: "Engine") -> Scorer:
        """How the version's components predict together."""

    def checks(self, version: "ModelVersion") -> list[Check]:
        """Verification steps beyond the certificate's."""

    def describe(self, version: "ModelVersion") -> dict:
        """Method state for `erasure models show`."""


class MeanOfAdapters:
    """A method whose predictions are the mean P(Yes) of its aggregated components, each trained
    apart (retrain, SISA): an exclusion drops the affected ones."""

    name = ""
    supports_influence = True  # an influence update of one adapter leaves the others valid
    default_shards = 4
    default_slices = 4

    def default_fields(self, slices: int) -> dict:
        return {}

    def partition(self, config: TrainConfig, keyed: Partition, engine: "Engine") -> Partition:
        return keyed

    def version_partition(self, meta: "VersionMeta", keyed: Partition) -> Partition:
        return keyed

    def plan(self, config: TrainConfig, partition: Partition, records: Sequence[StoredRecord]) -> Plan:
        raise NotImplementedError

    def build_computed(self, engine: "Engine", draft: "Draft", plan: Plan, spec: ComponentSpec,
                       reuse: "ModelVersion | None", environment: dict, progress: "Progress | None") -> bool:
        raise BadInput(f"method {self.name} plans no component of kind {spec.kind!r}")

    def replay_computed(self, engine: "Engine", version: "ModelVersion", spec: ComponentSpec,
                        directory: Path) -> str:
        raise BadInput(f"method {self.name} plans no component of kind {spec.kind!r}")

    def exclude(self, version: "ModelVersion", affected: set[str], erased: set[bytes]) -> Exclusion:
        aggregation = version.meta.aggregation.model_dump(exclude_unset=True)
        return Exclusion([c.id for c in version.components if c.id not in affected],
                         {**aggregation, "components": [c for c in version.aggregate if c not in affected]})

    def restrict(self, clean: "ModelVersion", plan: Plan, shards: set[int]) -> Plan:
        """`plan` for a restore of `shards` alone, the other shards kept as `clean` has them."""
        return plan

    def scorer(self, version: "ModelVersion", engine: "Engine") -> Scorer:
        adapters = [(cid, version.component(cid).adapter()) for cid in version.aggregate]

        def p_yes(ids: list[list[int]], progress: "Progress | None") -> list[float]:
            per_component = [engine.p_yes(adapter, ids, progress=progress, label=f"scoring {cid}")
                             for cid, adapter in adapters]
            return [sum(scores) / len(scores) for scores in zip(*per_component, strict=True)]

        return p_yes

    def checks(self, version: "ModelVersion") -> list[Check]:
        """Verification steps of this method beyond the certificate's (a bundle; base install only)."""
        return []

    def describe(self, version: "ModelVersion") -> dict:
        """Method state worth showing beside the components (`erasure models show`)."""
        return {}

