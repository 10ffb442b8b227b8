"""`model.json` and `component.json` are typed: parsed once, strict on load, clear when broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import BadInput
from unlearning.versions.metadata import ComponentMeta, VersionMeta, read_meta, write_meta
from unlearning.versions.store import ModelStore

runner = CliRunner()
TINY = ["--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1", "--seed", "5"]


@pytest.fixture
def trained(workspace, records, write_jsonl) -> Path:
    assert runner.invoke(app, ["data", "ingest", str(write_jsonl(records(subjects=8, per_subject=2)))]).exit_code == 0
    result = runner.invoke(app, ["train", "m", "--method", "sisa", "--shards", "2", "--slices", "2", *TINY])
    assert result.exit_code == 0, result.output
    return workspace.artifacts / "models" / "m" / "v1"


def test_a_trained_version_reads_back_typed_and_rewrites_to_the_same_bytes(workspace, trained: Path,
                                                                           tmp_path: Path) -> None:
    version = ModelStore(workspace).get("m")
    meta = version.meta
    assert isinstance(meta, VersionMeta) and meta.method == "sisa" and meta.version == 1
    assert meta.aggregation.rule == "mean_p_yes" and meta.aggregation.components == version.aggregate
    assert meta.parent_version is None and meta.operation is None and meta.aggregation.s3t is None
    component = version.component("shard0-slice1")
    assert isinstance(component.meta, ComponentMeta) and component.meta.parent == "shard0-slice0"
    assert component.meta.kind == "adapter" and component.meta.manifest.size == component.manifest_size
    for path, kind in ((trained / "model.json", VersionMeta),
                       (trained / "components" / "shard0-slice1" / "component.json", ComponentMeta)):
        copy = tmp_path / path.name
        write_meta(copy, read_meta(path, kind))
        assert copy.read_bytes() == path.read_bytes()  # the file format is the type's, nothing lost or added
        # and it is the format earlier releases wrote: sorted keys, indent 2, explicit nulls kept
        assert path.read_text() == json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True) + "\n"
    assert json.loads((trained / "model.json").read_text())["parent_version"] is None


@pytest.mark.parametrize("damage, problem", [
    (lambda m: m.pop("aggregation"), "aggregation: Field required"),
    (lambda m: m.update(surprise=1), "surprise: Extra inputs are not permitted"),
    (lambda m: m.update(version="two"), "version: Input should be a valid integer"),
    (lambda m: m["aggregation"].update(rule="vote"), "aggregation.rule: Input should be"),
])
def test_a_broken_model_json_is_one_clear_error(workspace, trained: Path, damage, problem: str) -> None:
    path = trained / "model.json"
    meta = json.loads(path.read_text())
    damage(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(BadInput, match=f"model.json is not valid model.json: {problem}"):
        ModelStore(workspace).get("m").meta
    shown = runner.invoke(app, ["models", "show", "m"])
    assert shown.exit_code == 2 and "is not valid model.json" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1 and "Traceback" not in shown.output


def test_a_broken_component_json_is_one_clear_error(workspace, trained: Path) -> None:
    path = trained / "components" / "shard1-slice0" / "component.json"
    path.write_text(path.read_text()[:-20])  # truncated
    with pytest.raises(BadInput, match="component.json is not valid component.json: .*Invalid JSON"):
        ModelStore(workspace).get("m").component("shard1-slice0").meta
    (trained / "components" / "shard1-slice0" / "component.json").unlink()
    with pytest.raises(BadInput, match="component.json is missing"):
        ModelStore(workspace).get("m").component("shard1-slice0").meta
