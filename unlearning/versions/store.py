"""Model versions on disk (layout: `unlearning.versions.layout`).

A version is built in a hidden staging directory and renamed into place when complete, so
a reader never sees half a version. Components are data: nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import BadInput, CorruptState, LeaseLost, ServiceError
from ledger.manifest import Manifest
from ledger.statement import file_sha256
from ledger.workspace import Workspace
from unlearning.training.config import TrainConfig
from unlearning.versions.layout import (ADAPTER_FILE, AGGREGATOR_FILE, BUNDLES_DIR, COMPONENT_JSON, MANIFEST_FILE,
                                       MODEL_JSON, STATE_JSON, STATE_TENSORS, SYNCED_MARK)
from unlearning.versions.lease import check_lease
from unlearning.versions.metadata import ComponentMeta, VersionMeta, read_meta, write_meta
from unlearning.versions.remote import RemoteVersions

if TYPE_CHECKING:
    from unlearning.methods.apa.aggregation import Aggregator
    from unlearning.methods.base import ComponentSpec
    from unlearning.training.checkpoint import TrainingState

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")


@dataclass(frozen=True)
class Component:
    path: Path

    @cached_property
    def meta(self) -> ComponentMeta:
        return read_meta(self.path / COMPONENT_JSON, ComponentMeta)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def parent(self) -> str | None:
        return self.meta.parent

    @property
    def manifest_root(self) -> bytes:
        return bytes.fromhex(self.meta.manifest.root)

    @property
    def manifest_size(self) -> int:
        return self.meta.manifest.size

    @property
    def weights_sha256(self) -> str:
        return self.meta.weights_sha256

    def manifest(self) -> Manifest:
        return Manifest.read(self.path / MANIFEST_FILE)

    def checked_path(self, *names: str) -> Path:
        """The component's directory, after checking the files `names` against the digests
        component.json recorded when it was written: a truncated or altered checkpoint is never
        loaded (nor resumed from). CorruptState names the first file that differs."""
        for name in names:
            path = self.path / name
            expected = self.meta.files.get(name)
            if expected is None:
                raise CorruptState(f"{self.path / COMPONENT_JSON} records no digest of {name}")
            try:
                actual = file_sha256(path)
            except FileNotFoundError:
                raise CorruptState(f"checkpoint file {path} is missing") from None
            if actual != expected:
                raise CorruptState(f"checkpoint file {path} is corrupt: sha256 {actual[:16]}... is not the "
                                   f"{expected[:16]}... its {COMPONENT_JSON} recorded")
        return self.path

    def adapter(self) -> dict:
        from unlearning.training.checkpoint import load_adapter

        return load_adapter(self.checked_path(ADAPTER_FILE))

    def training_state(self) -> "TrainingState":
        from unlearning.training.checkpoint import TrainingState

        return TrainingState.load(self.checked_path(ADAPTER_FILE, STATE_TENSORS, STATE_JSON))

    def summary(self) -> dict:
        m = self.meta
        return {"id": m.id, "shard": m.shard, "slice": m.slice, "parent": m.parent, "manifest_root": m.manifest.root,
                "manifest_size": m.manifest.size, "weights_sha256": m.weights_sha256}


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path

    @cached_property
    def meta(self) -> VersionMeta:
        return read_meta(self.path / MODEL_JSON, VersionMeta)

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta.config)

    @property
    def aggregate(self) -> list[str]:
        return self.meta.aggregation.components

    @property
    def components(self) -> list[Component]:
        return [Component(self.path / "components" / cid) for cid in self.meta.components]

    def component(self, component_id: str) -> Component:
        if component_id not in self.meta.components:
            raise BadInput(f"model {self.name} v{self.version} has no component {component_id!r}")
        return Component(self.path / "components" / component_id)


class ModelStore:
    """The versions in `artifacts/models`; with an object store (`Workspace.object_store_url()`),
    also those there (`unlearning.versions.remote`): a committed version is uploaded, and one not
    here is downloaded on `get`."""

    def __init__(self, workspace: Workspace):
        self.root = workspace.artifacts / "models"
        self.bundles = workspace.artifacts / BUNDLES_DIR
        url = workspace.object_store_url()
        self.remote = RemoteVersions(url) if url else None

    def _model_dir(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise BadInput(f"invalid model name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
        return self.root / name

    def names(self) -> list[str]:
        """The models with at least one version."""
        local = sorted(p.name for p in self.root.iterdir() if self._local_versions(p.name)) if self.root.is_dir() else []
        return sorted(set(local) | set(self.remote.names())) if self.remote else local

    def versions(self, name: str) -> list[int]:
        local = self._local_versions(name)
        return sorted(set(local) | set(self.remote.versions(name))) if self.remote else local

    def sweep(self) -> list[tuple[str, int]]:
        """Delete this host's copies of versions the object store no longer holds (purged on
        another host), of every model here, as listing each model would; (model, version) deleted.
        `erasure serve` runs it periodically: an idle process lists nothing."""
        if self.remote is None or not self.root.is_dir():
            return []
        return [(d.name, n) for d in sorted(self.root.iterdir()) if d.is_dir() and _NAME.fullmatch(d.name)
                for n in self._drop_purged(d.name, self._listed(d.name))]

    def _local_versions(self, name: str) -> list[int]:
        """The versions in artifacts/; with an object store, a copy of a version the store no
        longer holds (purged on another host: it saw erased records) is deleted on sight, with
        its bundle. Only copies that came from or went to the store carry the mark that lets them
        go: a version made before the store was configured stays (`erasure admin migrate`)."""
        found = self._listed(name)
        gone = self._drop_purged(name, found)
        return [n for n in found if n not in gone]

    def _drop_purged(self, name: str, found: list[int]) -> list[int]:
        """Delete the marked copies among `found` that the object store no longer holds; those versions."""
        if self.remote is None:
            return []
        marked = [n for n in found if (self._model_dir(name) / f"v{n}" / SYNCED_MARK).exists()]
        gone = sorted(set(marked) - set(self.remote.versions(name))) if marked else []
        for number in gone:  # another process of this host may be deleting it too
            shutil.rmtree(self.bundles / name / f"v{number}", ignore_errors=True)
            shutil.rmtree(self._model_dir(name) / f"v{number}", ignore_errors=True)
        return gone

    def _listed(self, name: str) -> list[int]:
        directory = self._model_dir(name)
        if not directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _VERSION_DIR.fullmatch(p.name)))

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """A version of a model (the newest by default)."""
        local = self._local_versions(name)
        versions = sorted(set(local) | set(self.remote.versions(name))) if self.remote else local
        if not versions:
            raise BadInput(f"no model named {name!r}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise BadInput(f"model {name!r} has no version {chosen} (versions: {', '.join(map(str, versions))})")
        if self.remote and chosen not in local:  # made on another host: fetched (verified) into artifacts/
            self._model_dir(name).mkdir(parents=True, exist_ok=True)
            self.remote.download(name, chosen, self._model_dir(name))
        return ModelVersion(name, chosen, self._model_dir(name) / f"v{chosen}")

    def draft(self, name: str) -> "Draft":
        """A staging directory for the next version of `name`."""
        versions = self.versions(name)
        return Draft(name, versions[-1] + 1 if versions else 1, self._model_dir(name), self.remote)


class Draft:
    """A version being built; `commit` renames it into place, leaving it discards it."""

    def __init__(self, name: str, version: int, model_dir: Path, remote: RemoteVersions | None = None):
        self.name, self.version, self.remote = name, version, remote
        self.target = model_dir / f"v{version}"
        self.path = model_dir / f".staging-v{version}-{os.getpid()}"
        shutil.rmtree(self.path, ignore_errors=True)
        (self.path / "components").mkdir(parents=True)
        self._components: list[str] = []

    def __enter__(self) -> "Draft":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)  # no-op after commit

    def component(self, component_id: str) -> Component:
        return Component(self.path / "components" / component_id)

    def write_component(self, spec: "ComponentSpec", state: "TrainingState", lora_config: Any,
                        environment: dict) -> Component:
        """Save a trained component: checkpoint, adapter config, manifest, then component.json."""
        state.save(self.path / "components" / spec.id)
        lora_config.save_pretrained(self.path / "components" / spec.id)
        return self._finish(spec.id, spec.commitments, ADAPTER_FILE, {
            "kind": spec.kind, "shard": spec.shard, "slice": spec.slice, "group": spec.group, "parent": spec.parent,
            "samples": spec.samples, "steps": state.step, "environment": environment,
        })

    def write_aggregator(self, component_id: str, aggregator: "Aggregator", environment: dict) -> Component:
        """Save APA's aggregator (no training, e.g. after dropping erased rows): its pool file,
        its rows as the manifest, and component.json naming the adapters of its prediction columns."""
        aggregator.save(self.path / "components" / component_id)
        return self._finish(component_id, aggregator.commitments, AGGREGATOR_FILE, {
            "kind": "aggregator", "shard": None, "slice": None, "group": None, "parent": None, "samples": 0,
            "steps": 0, "environment": environment, "adapters": [list(a) for a in aggregator.adapters],
        })

    def _finish(self, component_id: str, commitments: Iterable[bytes], main_file: str, fields: dict) -> Component:
        """The manifest and component.json (written last: a component is complete once it exists).
        `weights_sha256` is the digest of the component's main file (adapter or aggregator)."""
        directory = self.path / "components" / component_id
        manifest = Manifest.from_commitments(commitments)
        manifest.write(directory / MANIFEST_FILE)
        files = {p.name: file_sha256(p) for p in sorted(directory.iterdir())}
        write_meta(directory / COMPONENT_JSON, ComponentMeta.model_validate({
            "id": component_id, "manifest": {"root": manifest.root.hex(), "size": manifest.size},
            "weights_sha256": files[main_file], "files": files, **fields,
        }))
        self._components.append(component_id)
        return self.component(component_id)

    def reuse_component(self, component: Component) -> Component:
        """Take an unchanged component from an earlier version (hard links, same bytes)."""
        shutil.copytree(component.path, self.path / "components" / component.id, copy_function=_link_or_copy)
        self._components.append(component.id)
        return self.component(component.id)

    def commit(self, fields: dict) -> ModelVersion:
        """Write model.json (`fields`: every `VersionMeta` field but the version's identity and
        components) and move the version into place (not if the model's lease was lost)."""
        check_lease(self.name)
        write_meta(self.path / MODEL_JSON, VersionMeta.model_validate({
            **fields, "name": self.name, "version": self.version, "components": self._components,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }))
        # with an object store, its write-once index decides who wrote vN (before the local rename);
        # the lease is checked again right before the index and after it: an upload that outlived
        # our lease takes its index back, so a stalled writer never publishes over a takeover
        if self.remote is not None:
            if not self.remote.upload(self.name, self.version, self.path, before_index=lambda: check_lease(self.name)):
                raise ServiceError(f"model {self.name} v{self.version} was written by someone else meanwhile: "
                                   "retried from the newest version")
            try:
                check_lease(self.name)
            except LeaseLost:
                self.remote.withdraw(self.name, self.version)
                raise
            (self.path / SYNCED_MARK).touch()
        try:
            self.path.rename(self.target)
        except OSError as err:
            raise BadInput(f"model {self.name} v{self.version} was written by someone else meanwhile") from err
        return ModelVersion(self.name, self.version, self.target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
