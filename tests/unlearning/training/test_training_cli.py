"""`erasure train | models show | eval | predict | replay` on the tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app
from unlearning.data.records import RecordStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "2", "--seed", "5"]


def run(*args: str):
    return runner.invoke(app, list(args))


def test_train_show_eval_predict_replay(workspace, records, write_jsonl):
    assert run("data", "ingest", str(write_jsonl(records(subjects=24, per_subject=3)))).exit_code == 0

    trained = run("train", "rec", "--method", "sisa", "--shards", "2", "--slices", "2", *TINY, "--json")
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["version"] == 1 and summary["method"] == "sisa"
    assert [c["id"] for c in summary["components"]] == ["shard0-slice0", "shard0-slice1", "shard1-slice0",
                                                         "shard1-slice1"]
    assert summary["aggregate"] == ["shard0-slice1", "shard1-slice1"]

    shown = json.loads(run("models", "show", "rec", "--json").stdout)
    assert summary.pop("registered") is None  # no keys or registry in this workspace
    assert shown == summary
    with RecordStore.open(workspace) as store:
        train_count = len(store.records("train"))
    final = [c for c in shown["components"] if c["id"] in shown["aggregate"]]
    assert sum(c["manifest_size"] for c in final) == train_count
    assert all(len(c["manifest_root"]) == 64 and len(c["weights_sha256"]) == 64 for c in shown["components"])
    model_json = json.loads((workspace.artifacts / "models" / "rec" / "v1" / "model.json").read_text())
    env = model_json["environment"]
    assert env["torch"] and env["transformers"] and env["peft"] and env["deterministic"] is True
    assert env["precision"] == "fp32" and env["config_sha256"] == model_json["config_sha256"]
    component_dir = workspace.artifacts / "models" / "rec" / "v1" / "components" / "shard0-slice1"
    assert {p.name for p in component_dir.iterdir()} == {
        "adapter_model.safetensors", "adapter_config.json", "manifest.leaves", "component.json",
        "training_state.safetensors", "training_state.json"}
    assert json.loads((component_dir / "component.json").read_text())["parent"] == "shard0-slice0"

    evaluated = run("eval", "rec", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {"auc", "accuracy", "baseline_auc", "n"}
    with RecordStore.open(workspace) as store:
        assert metrics["n"] == len(store.records("test")) > 0
    assert 0 <= metrics["accuracy"] <= 1
    assert "history-positivity baseline AUC" in run("eval", "rec").stdout

    predicted = run("predict", "rec", "--prompt", 'Liked: "Star night (1990)"', "--json")
    assert predicted.exit_code == 0 and 0 < json.loads(predicted.stdout)["p_yes"] < 1

    replayed = run("replay", "rec", "--component", "shard1-slice1", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["equal"] is True

    # After a subject of that shard is erased, the component cannot be replayed any more.
    with RecordStore.open(workspace) as store:
        manifest = next(c for c in shown["components"] if c["id"] == "shard1-slice1")
        from unlearning.versions.store import ModelStore

        leaves = ModelStore(workspace).get("rec").component("shard1-slice1").manifest()
        victim = next(r.subject_id for r in store.records("train") if leaves.contains(r.commitment))
        erased = store.erase_subject(victim)
    assert manifest["manifest_size"] > 0 and erased
    differs = run("replay", "rec", "--component", "shard1-slice1")
    assert differs.exit_code == 1 and f"{len(erased)} of its records are no longer in the store" in differs.stderr


def test_train_errors(workspace, records, write_jsonl):
    empty = run("train", "m", *TINY)
    assert empty.exit_code == 2 and "no training records" in empty.stderr
    assert run("data", "ingest", str(write_jsonl(records(subjects=10, per_subject=2)))).exit_code == 0
    assert run("train", "m", "--method", "retrain", "--shards", "2", *TINY).exit_code == 2
    assert run("train", "m", "--method", "nope", *TINY).exit_code == 2
    assert run("train", "bad/name", *TINY).exit_code == 2
    assert run("train", "m", "--base", "/no/such/dir").exit_code == 2
    assert run("train", "m", *TINY).exit_code == 0
    again = run("train", "m", *TINY)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert run("models", "show", "nope").exit_code == 2
    assert run("replay", "m", "--component", "shard9-slice0").exit_code == 2
    shown = run("models", "show", "m")
    assert shown.exit_code == 0 and "shard0-slice0" in shown.stdout


def test_train_lora_layers_top_n_and_its_errors(workspace, records, write_jsonl):
    assert run("data", "ingest", str(write_jsonl(records(subjects=12, per_subject=2)))).exit_code == 0

    top = run("train", "top", "--lora-layers", "top-1", *TINY, "--json")
    assert top.exit_code == 0, top.output
    config = json.loads((workspace.artifacts / "models" / "top" / "v1" / "model.json").read_text())["config"]
    assert config["lora_layers"] == "top-1"
    with RecordStore.open(workspace) as store:  # the frozen prefix's states, cached per training record
        train = store.records("train")
        assert store.count_activations(r.commitment for r in train) == len(train)

    auto = run("train", "auto", *TINY, "--json")  # auto: every layer for the 2-layer tiny base
    assert auto.exit_code == 0, auto.output
    assert "lora_layers" not in json.loads((workspace.artifacts / "models" / "auto" / "v1" / "model.json")
                                           .read_text())["config"]

    for value, message in (("top-3", "the base model has only 2 layers"), ("bottom-2", "lora-layers must be")):
        bad = run("train", f"bad-{value}", "--lora-layers", value, *TINY)
        assert bad.exit_code == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.output
