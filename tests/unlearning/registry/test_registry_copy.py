"""Registry.copy_from: a registry moved to another store keeps its version numbers (the ledger's
model_registered entries bind them), tags, aliases and bundle bytes; purged numbers stay gaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import BadInput
from unlearning.registry.mlflow import CERT_SHA, STATUS, Registry, fetch


def embedded(root: Path) -> Registry:
    root.mkdir(parents=True)
    return Registry(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")


def add(registry: Registry, name: str, content: bytes, sha: str, tmp: Path) -> int:
    """A version whose bundle is one file, registered the way Registry.register lays it out."""
    bundle = tmp / f"bundle-{sha}"
    bundle.mkdir()
    (bundle / "certificate.dsse.json").write_bytes(content)
    run = registry.client.create_run(registry._experiment(f"erasure/{name}"))
    registry._upload(run, bundle)
    try:
        registry.client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already registered
        pass
    mv = registry.client.create_model_version(name, f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id,
                                              tags={STATUS: "certified", CERT_SHA: sha, "erasure.version": "1"})
    return int(mv.version)


def test_copy_keeps_numbers_tags_aliases_and_bytes_and_resumes(tmp_path: Path) -> None:
    source, target = embedded(tmp_path / "src"), embedded(tmp_path / "dst")
    for i in (1, 2, 3):
        assert add(source, "m", f"bundle {i}".encode(), f"{i:064x}", tmp_path) == i
    source.client.delete_model_version("m", "2")  # purged: its number must stay a gap
    source.client.set_registered_model_alias("m", "certified", "3")

    assert target.copy_from(source, "m") == [1, 3]
    copied = target.versions("m")
    assert [r.version for r in copied] == [1, 3]
    assert [r.certificate_sha256 for r in copied] == [f"{1:064x}", f"{3:064x}"]
    assert copied[1].aliases == ("certified",) and copied[1].status == "certified"
    for registered in copied:
        with fetch(target, registered) as tmp:
            data = (Path(tmp) / "bundle" / "certificate.dsse.json").read_bytes()
        assert data == f"bundle {registered.version}".encode()

    assert target.copy_from(source, "m") == []  # resumed: nothing twice
    assert [r.version for r in target.versions("m")] == [1, 3]
    assert add(target, "m", b"next", f"{4:064x}", tmp_path) == 4  # numbering goes on after the gap


def test_copy_refuses_a_different_version_under_the_same_number(tmp_path: Path) -> None:
    source, target = embedded(tmp_path / "src"), embedded(tmp_path / "dst")
    add(source, "m", b"one", f"{1:064x}", tmp_path)
    add(target, "m", b"other", f"{9:064x}", tmp_path)
    with pytest.raises(BadInput, match="already holds m v1 with another certificate"):
        target.copy_from(source, "m")
