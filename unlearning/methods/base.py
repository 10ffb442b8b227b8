"""Plans: which components exist, what each one trains on, and for how long.

A plan is pure data computed from the configuration, the partition and the records, so the
same function drives training, replay and unlearning (re-plan on the retained records; every
component whose inputs did not change is reused, the first changed one resumes from its
parent's checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from unlearning.data.records import StoredRecord


@dataclass(frozen=True)
class ComponentSpec:
    id: str
    shard: int | None  # None: not a shard's (APA's aggregator pools validation subjects)
    slice: int | None
    parent: str | None  # the component whose final training state this one starts from
    records: tuple[StoredRecord, ...]  # everything trained on, including through the parent
    samples: int  # examples this component's own training processes (its data order: HMAC(seed, id/pass || record id))
    group: int | None = None  # S3T: the only LoRA layer group this stage trains (top-down); None: all LoRA layers
    kind: str = "adapter"  # "adapter" (trained LoRA state) or "aggregator" (APA's validation pool, computed)

    @property
    def commitments(self) -> list[bytes]:
        return [r.commitment for r in self.records]


@dataclass(frozen=True)
class Plan:
    components: list[ComponentSpec]  # parents before children
    aggregate: list[str]  # the components whose predictions are combined by `rule`
    rule: str = "mean_p_yes"  # or "apa": per-sample merge of the aggregate's adapters
    details: dict = field(default_factory=dict)  # method data for model.json's aggregation (APA settings, S3T orders)
    partition: dict = field(default_factory=lambda: {"rule": "subject-hash"})  # how records were sharded

    def component(self, component_id: str) -> ComponentSpec:
        for spec in self.components:
            if spec.id == component_id:
                return spec
        raise KeyError(component_id)

    def lineage(self, component_id: str) -> list[ComponentSpec]:
        """The component and its ancestors, oldest first."""
        chain = [self.component(component_id)]
        while chain[0].parent is not None:
            chain.insert(0, self.component(chain[0].parent))
        return chain


def component_id(shard: int, slice_: int) -> str:
    return f"shard{shard}-slice{slice_}"


def samples_for(epochs: Fraction, records: int) -> int:
    """`epochs` passes over `records` examples, rounded half up."""
    return int(epochs * records + Fraction(1, 2))
