"""APA: exact shard-adapter retraining, the aggregator as a component, per-sample merges."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from itertools import product

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import CorruptState, VerificationFailed
from ledger.statement import file_sha256
from unlearning import methods
from unlearning.data.movielens import Item, prompt
from unlearning.data.records import Record, RecordStore
from unlearning.inference import Predictor
from unlearning.methods.apa.aggregation import Aggregator, merged_p_yes
from unlearning.methods.apa.centroids import ItemCentroidPartition, target_item, version_partition
from unlearning.operations.build import build_version
from unlearning.training.base_models import load_base
from unlearning.training.config import TrainConfig
from unlearning.training.engine import Engine
from unlearning.versions.bundle import bundle_version
from unlearning.versions.layout import ADAPTER_FILE, AGGREGATOR_FILE, COMPONENT_JSON
from unlearning.versions.store import ModelStore

CONFIG = TrainConfig(method="apa", base="tiny", shards=2, epochs=1, lr=1e-2, batch_size=4, lora_dropout=0.1, seed=2,
                     tau=10.0, neighbours=3)


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def aggregators_equal(a: Aggregator, b: Aggregator) -> bool:
    return (a.commitments, a.adapters) == (b.commitments, b.adapters) and all(
        torch.equal(getattr(a, f), getattr(b, f)) for f in ("labels", "embeddings", "predictions"))


def aggregator_of(version) -> Aggregator:
    return Aggregator.load(version.component("aggregator").path)


@pytest.fixture
def store(workspace, records):
    with RecordStore.open(workspace) as store:
        store.ingest(records(subjects=14, per_subject=3))
        yield store


def build(workspace, store, name, records, reuse=None):
    plan = methods.plan(CONFIG, store.partition, records)
    return build_version(workspace, store, name, plan, Engine(load_base("tiny"), CONFIG), reuse=reuse)


def test_retrained_shard_adapter_equals_training_from_scratch(workspace, store):
    everything = store.records()
    v1 = build(workspace, store, "apa", everything)
    assert v1.meta.aggregation.model_dump(exclude_unset=True) == {"rule": "apa", "components": ["shard0-slice0", "shard1-slice0"],
                                      "aggregator": "aggregator", "merge": "nd", "tau": 10.0, "neighbours": 3}
    pool = sorted(r.commitment for r in everything if r.split == "valid")
    assert pool and v1.component("aggregator").manifest().size == len(pool)
    assert aggregator_of(v1).commitments == tuple(pool)

    z = next(r for r in everything if r.split == "train" and store.partition.shard(r.subject_id, 2) == 1)
    retained = [r for r in everything if r != z]
    v2 = build(workspace, store, "apa", retained, reuse=v1)
    scratch = build(workspace, store, "scratch", retained)

    affected, untouched = v2.component("shard1-slice0"), v2.component("shard0-slice0")
    assert tensors_equal(affected.adapter(), scratch.component("shard1-slice0").adapter())
    assert affected.weights_sha256 != v1.component("shard1-slice0").weights_sha256
    assert not affected.manifest().contains(z.commitment)
    assert untouched.path.joinpath("adapter_model.safetensors").stat().st_ino == \
        v1.component("shard0-slice0").path.joinpath("adapter_model.safetensors").stat().st_ino
    # Only the retrained adapter's predictions were recomputed; the result is the from-scratch aggregator.
    before, after = aggregator_of(v1), aggregator_of(v2)
    assert aggregators_equal(after, aggregator_of(scratch))
    assert torch.equal(after.predictions[:, 0], before.predictions[:, 0])
    assert not torch.equal(after.predictions[:, 1], before.predictions[:, 1])
    assert after.adapters == (("shard0-slice0", untouched.weights_sha256), ("shard1-slice0", affected.weights_sha256))


def test_erasing_a_validation_subject_removes_its_samples_from_the_aggregator(workspace, store):
    v1 = build(workspace, store, "apa", store.records())
    subject = next(r.subject_id for r in store.records("valid"))
    erased = store.erase_subject(subject)
    dropped = aggregator_of(v1).without_records(erased)
    assert not set(erased) & set(dropped.commitments)
    assert len(dropped.commitments) == len(aggregator_of(v1).commitments) - len(erased)

    v2 = build(workspace, store, "apa", store.records(), reuse=v1)
    scratch = build(workspace, store, "scratch", store.records())
    assert aggregators_equal(aggregator_of(v2), dropped) and aggregators_equal(dropped, aggregator_of(scratch))
    assert not any(v2.component("aggregator").manifest().contains(c) for c in erased)
    assert all(v2.component(c).weights_sha256 == v1.component(c).weights_sha256 for c in v2.aggregate)


def test_merged_adapter_matches_each_adapter_and_the_two_merges_differ(workspace, store):
    version = build(workspace, store, "apa", store.records())
    engine = Engine(load_base("tiny"), CONFIG)
    adapters = [version.component(c).adapter() for c in version.aggregate]
    prompts = [engine.base.encode_prompt(r.prompt) for r in store.records("test")[:4]]
    for k, merge in product(range(2), ("d", "nd")):
        one_hot = torch.nn.functional.one_hot(torch.full((len(prompts),), k), 2).float()
        assert merged_p_yes(engine, adapters, one_hot, prompts, merge) == pytest.approx(
            engine.p_yes(adapters[k], prompts), abs=1e-5)
    mixed = torch.full((len(prompts), 2), 0.5)
    assert merged_p_yes(engine, adapters, mixed, prompts, "d") != pytest.approx(
        merged_p_yes(engine, adapters, mixed, prompts, "nd"), abs=1e-6)

    weights = aggregator_of(version).adapter_weights(torch.randn(3, 64), tau=10.0, neighbours=3)
    assert weights.shape == (3, 2) and torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert torch.equal(aggregator_of(version).adapter_weights(torch.randn(3, 64), 0.0, 3), torch.full((3, 2), 0.5))


def test_predictions_must_come_from_the_versions_adapters(workspace, store):
    version = build(workspace, store, "apa", store.records())
    p_yes = Predictor(version).p_yes([r.prompt for r in store.records("test")[:2]])
    assert len(p_yes) == 2 and all(0 < p < 1 for p in p_yes)
    stale = aggregator_of(version).without_adapters(["shard1-slice0"])
    pool = version.component("aggregator").path
    stale.save(pool)
    with pytest.raises(CorruptState, match=f"{AGGREGATOR_FILE} is corrupt"):  # not the file component.json names
        Predictor(version)
    meta = json.loads((pool / COMPONENT_JSON).read_text())  # a stale pool recorded as its own
    meta["files"][AGGREGATOR_FILE] = meta["weights_sha256"] = file_sha256(pool / AGGREGATOR_FILE)
    (pool / COMPONENT_JSON).write_text(json.dumps(meta))
    with pytest.raises(VerificationFailed, match="not those of the version's adapters"):
        Predictor(ModelStore(workspace).get("apa", version.version))


def aggregator_binding(path) -> str:  # type: ignore[no-untyped-def]
    """APA's verification step, as `verify` runs it: through the method interface, on a bundle."""
    checks = dict(methods.get("apa").checks(bundle_version(path)))
    return checks["aggregator binding"]()


def test_verify_binds_the_aggregator_columns_to_the_served_adapters(workspace, store, tmp_path):
    version = build(workspace, store, "apa", store.records())
    assert aggregator_binding(version.path).startswith("2 prediction columns bound")

    swapped = tmp_path / "swapped"  # the same columns, attributed to the other adapter
    shutil.copytree(version.path, swapped)
    aggregator = aggregator_of(version)
    replace(aggregator, adapters=aggregator.adapters[::-1]).save(swapped / "components" / "aggregator")
    with pytest.raises(VerificationFailed, match="not bound to the served adapters"):
        aggregator_binding(swapped)

    retrained = tmp_path / "retrained"  # an adapter whose weights changed after its column was computed
    shutil.copytree(version.path, retrained)
    (retrained / "components" / "shard0-slice0" / ADAPTER_FILE).write_bytes(b"other weights")
    with pytest.raises(VerificationFailed, match="not bound to the served adapters"):
        aggregator_binding(retrained)


# A public item catalogue, and users whose records target its items.
CATALOGUE = [Item(str(i), f"{a} {b}", str(1990 + i), ()) for i, (a, b) in
             enumerate(product(["Star", "Night", "River", "Ghost", "Iron"], ["war", "love", "city", "dream"]))]


def catalogue_records(subjects: int, per_subject: int) -> list[Record]:
    rng = random.Random(1)
    out = []
    for s, k in product(range(subjects), range(per_subject)):
        liked, disliked, target = rng.sample(CATALOGUE, 2), rng.sample(CATALOGUE, 1), rng.choice(CATALOGUE)
        answer = "Yes" if any(t.title.split()[0] == target.title.split()[0] for t in liked) else "No"
        out.append(Record(f"rec-{s}-{k}", f"user{s}", prompt(liked, disliked, target), answer))
    return out


def test_public_centroid_partition_and_cli(workspace, write_jsonl, tmp_path):
    catalogue = tmp_path / "catalogue.txt"
    catalogue.write_text("\n".join(item.label for item in CATALOGUE) + "\n")
    runner = CliRunner()
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(catalogue_records(10, 3)))]).exit_code == 0
    tiny = ["--base", "tiny", "--epochs", "0.5", "--batch-size", "4", "--shards", "3"]
    assert runner.invoke(app, ["train", "m", "--method", "apa", "--slices", "2", *tiny]).exit_code == 2
    assert runner.invoke(app, ["train", "m", "--method", "apa", "--catalogue", str(catalogue), *tiny]).exit_code == 2
    trained = runner.invoke(app, ["train", "m", "--method", "apa", "--partition", "public-centroid", "--catalogue",
                                  str(catalogue), "--merge", "d", "--tau", "100", "--neighbours", "5", *tiny, "--json"])
    assert trained.exit_code == 0, trained.output

    from unlearning.versions.store import ModelStore

    version = ModelStore(workspace).get("m")
    item_shards = version.meta.partition["item_shards"]
    assert version.meta.partition["rule"] == "public-centroid" and len(item_shards) == len(CATALOGUE)
    assert len(set(item_shards.values())) == 3  # every cluster holds public items
    with RecordStore.open(workspace) as store:
        train = store.records("train")
        partition = version_partition(version.meta, store.partition)
    assert isinstance(partition, ItemCentroidPartition)
    for component in version.components:
        if component.meta.kind == "adapter":  # a record sits in the shard of its target item's centroid
            members = [r for r in train if component.manifest().contains(r.commitment)]
            assert all(item_shards[target_item(r.prompt)] == component.meta.shard for r in members)
    assert sum(version.component(c).manifest_size for c in version.aggregate) == len(train)
    assert version.config.merge == "d" and version.config.tau == 100.0

    evaluated = runner.invoke(app, ["eval", "m", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] > 0
    replayed = runner.invoke(app, ["replay", "m", "--component", "aggregator", "--json"])
    assert replayed.exit_code == 0 and json.loads(replayed.stdout)["equal"] is True
