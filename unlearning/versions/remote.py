"""Model versions in the shared object store (`Workspace.object_store_url()`), so executors on
other hosts, with no shared filesystem, read the versions each other made.

A committed version is uploaded file by file as content-addressed blobs of its model
(`models/NAME/blobs/sha256/<hex>`, verified on every read), then its index is written once:

    models/NAME/vN.json   {"schema": "erasure.model-version/v1", "name", "version",
                           "model": <model.json's content>, "model_json": <its sha256>,
                           "components": {ID: {FILE: sha256}}}
    bundles/NAME/vN.json  {"schema": "erasure.bundle/v1", "name", "version", "files": {PATH: sha256}}
                          (the certified bundle, once its certificate is logged)

Blobs are per model, so a purge (`delete`) that drops the blobs no remaining index of the model
names races only with writers of the same model, and those hold the model's lock or lease.

The index is written with put_if_absent (S3: If-None-Match: *), so of two writers of the same
vN exactly one succeeds. A version missing locally is downloaded into a staging directory
beside the local versions, each file checked against the index, and renamed into place: a
tampered or truncated blob is CorruptState and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
import functools
from pathlib import Path

from ledger.errors import BadInput, CorruptState, ServiceError
from ledger.objects import ObjectMissing, ObjectStore, open_object_store
from unlearning.versions.layout import MODEL_JSON, SYNCED_MARK

SCHEMA = "erasure.model-version/v1"
BUNDLE_SCHEMA = "erasure.bundle/v1"
_INDEX = re.compile(r"models/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/v([1-9][0-9]*)\.json")
_BUNDLE_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX = re.compile(r"[0-9a-f]{64}")


@functools.lru_cache(maxsize=16)
def _checked_store(url: str) -> ObjectStore:
    """The store at `url`, opened and checked once per process (every ModelStore of a workspace
    shares it): refused when its bucket keeps old object versions, since a purge's delete would
    only add a delete marker there and the checkpoints that saw erased records would survive.
    A refusal is not cached (raised anew each time)."""
    objects = open_object_store(url)
    status = objects.versioning()
    if status:
        raise ServiceError(f"the object store {objects.url.split('?')[0]} keeps old versions of every object "
                           f"(bucket versioning {status}): a purge could not delete a checkpoint; use a bucket "
                           "without versioning")
    return objects


def index_key(name: str, version: int) -> str:
    return f"models/{name}/v{version}.json"


def bundle_key(name: str, version: int) -> str:
    return f"bundles/{name}/v{version}.json"


def blobs(name: str) -> str:
    """The prefix of a model's blobs."""
    return f"models/{name}/blobs/sha256/"


class RemoteVersions:
    """The versions of every model in one object store (opened on first use)."""

    def __init__(self, url: str):
        self.url = url

    @property
    def objects(self) -> ObjectStore:
        return _checked_store(self.url)

    def names(self) -> list[str]:
        return sorted({m.group(1) for key in self.objects.list("models/") if (m := _INDEX.fullmatch(key))})

    def versions(self, name: str) -> list[int]:
        return sorted(int(m.group(2)) for key in self.objects.list(f"models/{name}/v")  # indexes, not blobs
                      if (m := _INDEX.fullmatch(key)) and m.group(1) == name)

    def upload(self, name: str, version: int, path: Path, before_index: Callable[[], None] | None = None) -> bool:
        """Upload the complete version directory `path` as `name` v`version`: its blobs, then its
        index (write-once; `before_index` runs right before it, e.g. a lease check). False when
        another writer's vN is there already (nothing of ours is referenced; the blobs written are
        content-addressed and harmless)."""
        model_json = (path / MODEL_JSON).read_bytes()
        components: dict[str, dict[str, str]] = {}
        for directory in sorted((path / "components").iterdir()):
            files = {}
            for file in sorted(directory.iterdir()):
                if not file.is_file():
                    raise BadInput(f"cannot upload {file}: a component holds files only")
                files[file.name] = self.objects.put_blob(file.read_bytes(), blobs(name))
            components[directory.name] = files
        index = {"schema": SCHEMA, "name": name, "version": version, "model": json.loads(model_json),
                 "model_json": self.objects.put_blob(model_json, blobs(name)), "components": components}
        if before_index is not None:
            before_index()
        return self.objects.put_if_absent(index_key(name, version),
                                          (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())

    def index(self, name: str, version: int) -> dict:
        """The version's index, checked for shape (CorruptState if it is not one)."""
        key = index_key(name, version)
        try:
            raw = self.objects.get(key)
        except ObjectMissing:
            raise BadInput(f"model {name!r} has no version {version} in the object store {self.objects.url}") \
                from None
        where = f"the version index {key} in {self.objects.url}"
        try:
            index = json.loads(raw)
        except ValueError:
            raise CorruptState(f"{where} is not JSON") from None
        ok = (isinstance(index, dict) and index.get("schema") == SCHEMA and index.get("name") == name
              and index.get("version") == version and _HEX.fullmatch(str(index.get("model_json")))
              and isinstance(index.get("components"), dict)
              and all(_FILE.fullmatch(cid) and isinstance(files, dict)
                      and all(_FILE.fullmatch(f) and _HEX.fullmatch(str(d)) for f, d in files.items())
                      for cid, files in index["components"].items()))
        if not ok:
            raise CorruptState(f"{where} is not a {SCHEMA} index of {name} v{version}")
        return index

    def download(self, name: str, version: int, model_dir: Path) -> Path:
        """Fetch `name` v`version` into `model_dir`/vN (staged, verified, renamed); its path."""
        index = self.index(name, version)
        target = model_dir / f"v{version}"
        staging = model_dir / f".fetch-v{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (staging / "components").mkdir(parents=True)
            model_json = self._blob(index["model_json"], name, version, MODEL_JSON)
            listed = json.loads(model_json).get("components")
            if sorted(listed or []) != sorted(index["components"]):
                raise CorruptState(f"model {name} v{version} in {self.objects.url}: the index's components are not "
                                   f"the ones its {MODEL_JSON} lists")
            for cid, files in index["components"].items():
                directory = staging / "components" / cid
                directory.mkdir()
                for file, digest in files.items():
                    (directory / file).write_bytes(self._blob(digest, name, version, f"components/{cid}/{file}"))
            (staging / MODEL_JSON).write_bytes(model_json)
            (staging / SYNCED_MARK).touch()
            try:
                staging.rename(target)
            except OSError:
                if not (target / MODEL_JSON).exists():  # not another reader's download of the same version
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def withdraw(self, name: str, version: int) -> None:
        """Take back the index this writer just wrote (its lease was lost meanwhile); the blobs stay
        until a purge's sweep (content-addressed, harmless)."""
        self.objects.delete(index_key(name, version))

    # --- certified bundles ----------------------------------------------------------------------

    def upload_bundle(self, name: str, version: int, path: Path) -> bool:
        """Upload the certified bundle directory `path` (every file, by relative path); False when
        one is there already (written once: the first certificate stands)."""
        files = {}
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = file.relative_to(path).as_posix()
            if not _BUNDLE_PATH.fullmatch(relative):
                raise BadInput(f"cannot upload {file}: not a bundle file name")
            files[relative] = self.objects.put_blob(file.read_bytes(), blobs(name))
        index = {"schema": BUNDLE_SCHEMA, "name": name, "version": version, "files": files}
        return self.objects.put_if_absent(bundle_key(name, version),
                                          (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())

    def has_bundle(self, name: str, version: int) -> bool:
        return self.objects.exists(bundle_key(name, version))

    def download_bundle(self, name: str, version: int, dest: Path) -> Path:
        """Fetch the certified bundle into `dest` (staged, verified, renamed; a partial local
        bundle there is replaced); `dest`."""
        key = bundle_key(name, version)
        where = f"the bundle index {key} in {self.objects.url}"
        try:
            index = json.loads(self.objects.get(key))
        except ObjectMissing:
            raise BadInput(f"model {name!r} v{version} has no certified bundle in {self.objects.url}") from None
        except ValueError:
            raise CorruptState(f"{where} is not JSON") from None
        files = index.get("files") if isinstance(index, dict) else None
        if (index.get("schema") != BUNDLE_SCHEMA or index.get("name") != name or index.get("version") != version
                or not isinstance(files, dict)
                or not all(_BUNDLE_PATH.fullmatch(p) and ".." not in p.split("/") and _HEX.fullmatch(str(d))
                           for p, d in files.items())):
            raise CorruptState(f"{where} is not a {BUNDLE_SCHEMA} index of {name} v{version}")
        staging = dest.with_name(f".fetch-{dest.name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for relative, digest in files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self._blob(digest, name, version, f"bundle/{relative}"))
            shutil.rmtree(dest, ignore_errors=True)  # what a cut-short local certify left
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    # --- erasure --------------------------------------------------------------------------------

    def delete(self, name: str, numbers: list[int]) -> int:
        """Purge versions `numbers` of `name` from the object store: their indexes (version and
        bundle) first, so nothing names them any more, then every blob of the model that no
        remaining index names (a cut-short purge leaves unnamed blobs, dropped by the next).
        Returns the number of blobs deleted."""
        for number in numbers:
            self.objects.delete(bundle_key(name, number))
            self.objects.delete(index_key(name, number))
        named: set[str] = set()
        for number in self.versions(name):
            index = self.index(name, number)
            named.add(index["model_json"])
            named.update(d for files in index["components"].values() for d in files.values())
        for key in self.objects.list(f"bundles/{name}/"):
            named.update(json.loads(self.objects.get(key)).get("files", {}).values())
        dropped = [key for key in self.objects.list(blobs(name)) if key.rsplit("/", 1)[1] not in named]
        for key in dropped:
            self.objects.delete(key)
        return len(dropped)

    def _blob(self, digest: str, name: str, version: int, file: str) -> bytes:
        try:
            return self.objects.get_blob(digest, blobs(name))
        except ObjectMissing:
            if not (self.objects.exists(index_key(name, version)) or self.objects.exists(bundle_key(name, version))):
                # purged by another host while this one read it: not corruption, and gone for good
                raise ServiceError(f"model {name} v{version} was purged from {self.objects.url.split('?')[0]} "
                                   "while it was being read") from None
            raise CorruptState(f"model {name} v{version} in {self.objects.url}: {file} (blob {digest[:16]}...) is "
                               "missing") from None
        except CorruptState as err:
            raise CorruptState(f"model {name} v{version}: {file}: {err}") from None
