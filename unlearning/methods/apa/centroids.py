"""APA's `public-centroid` partition: shards are k-means clusters of the public item catalogue.

APA (Hu et al. 2024) clusters the training samples themselves, which makes every shard a
function of every record (design §1: not exact). Here k-means runs only on base-model
embeddings of public text, the item catalogue; a record goes to the shard of the centroid
nearest its target item. Nothing is capacity-balanced, so a record's shard depends on the
catalogue, the base model and its own target item, never on other records.

The item -> shard map is stored in the model version (`model.json` "partition"), so
re-planning after an erasure assigns every retained record exactly as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import BadInput
from unlearning.data.partition import Partition
from unlearning.data.records import StoredRecord

if TYPE_CHECKING:
    from unlearning.training.engine import Engine
    from unlearning.versions.metadata import VersionMeta

MOVIELENS_CATALOGUE = "movielens-100k"
# The target line of `movielens.prompt` (titles there have '"' replaced by "'").
_TARGET = re.compile(r'^Target movie: "(.*)"$', re.MULTILINE)


def target_item(prompt: str) -> str:
    match = _TARGET.search(prompt)
    if match is None:
        raise BadInput("public-centroid partition: a prompt without a 'Target movie: \"...\"' line")
    return match.group(1)


def catalogue_labels(source: str) -> list[str]:
    """Item labels as they appear in prompts: the packaged MovieLens-100K catalogue, or a
    UTF-8 file with one label a line."""
    if source == MOVIELENS_CATALOGUE:
        from unlearning.data import movielens

        labels = [item.label.replace('"', "'") for item in movielens.load().items.values()]
    else:
        try:
            labels = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"cannot read catalogue {source}: {err}") from err
    labels = sorted({label for label in labels if label})
    if not labels:
        raise BadInput(f"catalogue {source} holds no item labels")
    return labels


class ItemCentroidPartition:
    """Splits and slices from the keyed partition; shards from the public item map."""

    def __init__(self, keyed: Partition, item_shards: dict[str, int]):
        self.keyed = keyed
        self.item_shards = item_shards

    def split(self, subject_id: str) -> str:
        return self.keyed.split(subject_id)

    def slice(self, record_id: str, slices: int) -> int:
        return self.keyed.slice(record_id, slices)

    def shard_of(self, record: StoredRecord) -> int:
        item = target_item(record.prompt)
        if item not in self.item_shards:
            raise BadInput(f"record {record.record_id!r} targets {item!r}, which is not in the public catalogue")
        return self.item_shards[item]

    def to_json(self) -> dict:
        return {"rule": "public-centroid", "item_shards": self.item_shards}


def fit(engine: "Engine", keyed: Partition, source: str, shards: int) -> ItemCentroidPartition:
    """k-means (seeded by the config) over the unit-normalised base-model embeddings of the
    catalogue labels; each item goes to its nearest centroid."""
    import torch
    from sklearn.cluster import KMeans

    from unlearning.training.embeddings import embed

    labels = catalogue_labels(source)
    if len(labels) < shards:
        raise BadInput(f"catalogue {source} has {len(labels)} items, fewer than {shards} shards")
    tokenizer = engine.base.tokenizer
    vectors = embed(engine, [tokenizer.encode(label, add_special_tokens=False) for label in labels], batch_size=32)
    points = torch.nn.functional.normalize(vectors, dim=1).double().numpy()
    kmeans = KMeans(n_clusters=shards, n_init=10, random_state=engine.config.seed).fit(points)
    nearest = kmeans.predict(points)
    return ItemCentroidPartition(keyed, {label: int(k) for label, k in zip(labels, nearest, strict=True)})


def version_partition(meta: "VersionMeta", keyed: Partition) -> Partition | ItemCentroidPartition:
    """The partition a model version was planned with, for re-planning it (unlearning, replay)."""
    stored = meta.partition
    if stored.get("rule") == "public-centroid":
        return ItemCentroidPartition(keyed, stored["item_shards"])
    return keyed
