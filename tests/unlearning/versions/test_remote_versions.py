"""Model versions through the shared object store: two workspaces (separate homes, no shared
filesystem) that share only the store (a real SeaweedFS, or a directory) see each other's
versions, bit for bit; of two writers of the same vN one wins; a tampered blob is never used."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ledger.errors import BadInput, CorruptState, LeaseLost, ServiceError
from ledger.objects import LocalObjects, open_object_store
from ledger.workspace import Workspace
from unlearning.versions.layout import ADAPTER_FILE, MODEL_JSON
from unlearning.versions.remote import blobs
from unlearning.versions.store import Draft, ModelStore, ModelVersion


def _component(draft: Draft, cid: str, payload: bytes) -> None:
    directory = draft.path / "components" / cid
    directory.mkdir()
    (directory / ADAPTER_FILE).write_bytes(payload)
    (directory / "adapter_config.json").write_text('{"r": 4}\n')
    draft._finish(cid, [hashlib.sha256(cid.encode()).digest()], ADAPTER_FILE, {
        "kind": "adapter", "shard": 0, "slice": 0, "group": None, "parent": None, "samples": 1, "steps": 1,
        "environment": {}})


def _commit(draft: Draft) -> ModelVersion:
    return draft.commit({"method": "sisa", "config": {}, "config_sha256": "0" * 64, "base": {"name": "tiny"},
                         "environment": {}, "aggregation": {"rule": "mean_p_yes", "components": ["c1", "c2"]},
                         "partition": {}})


def _write(store: ModelStore, name: str, payload: bytes) -> ModelVersion:
    with store.draft(name) as draft:
        _component(draft, "c1", payload)
        _component(draft, "c2", payload[::-1])
        return _commit(draft)


def _files(version: ModelVersion) -> dict[str, bytes]:
    return {p.relative_to(version.path).as_posix(): p.read_bytes() for p in version.path.rglob("*") if p.is_file()}


@pytest.fixture(params=["s3", "local"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return request.getfixturevalue("object_store_url") if request.param == "s3" else f"file://{tmp_path / 'shared'}"


@pytest.fixture
def hosts(shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, Workspace]:
    monkeypatch.setenv("ERASURE_OBJECT_STORE", shared_url)
    monkeypatch.delenv("ERASURE_DATABASE_URL", raising=False)
    return Workspace(tmp_path / "host-a"), Workspace(tmp_path / "host-b")


def test_a_version_written_on_one_host_is_read_bit_for_bit_on_another(hosts) -> None:
    a, b = hosts
    written = _write(ModelStore(a), "m", b"weights " * 1000)
    assert ModelStore(b).versions("m") == [1] and ModelStore(b).names() == ["m"]
    assert not (b.artifacts / "models" / "m" / "v1").exists()
    fetched = ModelStore(b).get("m")
    assert fetched.path == b.artifacts / "models" / "m" / "v1" and fetched.version == 1
    assert _files(fetched) == _files(written)
    assert fetched.meta == written.meta
    fetched.component("c1").checked_path(ADAPTER_FILE)  # the digests component.json recorded hold
    assert [p.name for p in fetched.path.parent.iterdir()] == ["v1"]  # no staging left behind

    # B builds v2 on it (reusing c1); A sees it
    store_b = ModelStore(b)
    with store_b.draft("m") as draft:
        assert draft.version == 2
        draft.reuse_component(fetched.component("c1"))
        _component(draft, "c2", b"retrained")
        v2 = _commit(draft)
    assert ModelStore(a).versions("m") == [1, 2]
    assert _files(ModelStore(a).get("m", 2)) == _files(v2)
    assert ModelStore(a).get("m").version == 2


def test_the_second_writer_of_a_version_is_refused(hosts) -> None:
    a, b = hosts
    first, second = ModelStore(a).draft("m"), ModelStore(b).draft("m")
    assert first.version == second.version == 1
    for draft, payload in ((first, b"from A"), (second, b"from B")):
        _component(draft, "c1", payload)
        _component(draft, "c2", payload)
    with first:
        winner = _commit(first)
    with second, pytest.raises(ServiceError, match="model m v1 was written by someone else meanwhile"):
        _commit(second)
    assert not (b.artifacts / "models" / "m" / "v1").exists() and not second.path.exists()
    assert _files(ModelStore(b).get("m", 1)) == _files(winner)  # B reads A's v1, not its own


def test_a_tampered_blob_is_refused_and_leaves_nothing(shared_url: str, hosts) -> None:
    a, b = hosts
    written = _write(ModelStore(a), "m", b"genuine weights")
    digest = written.component("c2").meta.files[ADAPTER_FILE]
    objects = open_object_store(shared_url)
    if isinstance(objects, LocalObjects):
        (objects.root / blobs("m") / digest).write_bytes(b"poisoned weights")
    else:  # behind the driver's back: an unconditional PutObject
        objects._client.put_object(Bucket=objects.location.bucket, Key=objects.location.prefix + blobs("m") + digest,
                                   Body=b"poisoned weights")
    with pytest.raises(CorruptState, match=f"model m v1: components/c2/{ADAPTER_FILE}: blob {digest[:16]}.* is corrupt"):
        ModelStore(b).get("m")
    assert list((b.artifacts / "models" / "m").iterdir()) == []
    assert (written.path / MODEL_JSON).exists()  # A's own copy is untouched


def test_without_an_object_store_nothing_remote_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERASURE_OBJECT_STORE", raising=False)
    ws = Workspace(tmp_path / "home")
    store = ModelStore(ws)
    assert store.remote is None
    version = _write(store, "m", b"w")
    assert store.versions("m") == [1] and store.names() == ["m"] and version.path.is_dir()


def _blob_keys(url: str) -> set[str]:
    return set(open_object_store(url).list(blobs("m")))


def test_a_certified_bundle_travels_and_a_purge_leaves_no_copy_anywhere(shared_url: str, hosts) -> None:
    from unlearning.operations.certify import bundle_dir, certified_bundle

    a, b = hosts
    v1 = _write(ModelStore(a), "m", b"dirty weights")
    bundle = bundle_dir(a, "m", 1)
    (bundle / "attestation").mkdir(parents=True)
    (bundle / "attestation" / "certificate.dsse.json").write_text('{"payload": "v1"}')
    (bundle / "model.json").write_bytes((v1.path / MODEL_JSON).read_bytes())
    assert certified_bundle(b, "m", 1) is None  # not uploaded yet: nothing certified it for the others
    assert ModelStore(a).remote.upload_bundle("m", 1, bundle)
    assert not ModelStore(a).remote.upload_bundle("m", 1, bundle)  # the first certificate stands
    fetched = certified_bundle(b, "m", 1)
    assert fetched == bundle_dir(b, "m", 1)
    assert {p.relative_to(fetched).as_posix(): p.read_bytes() for p in fetched.rglob("*") if p.is_file()} == \
        {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}

    # v2 keeps c1 (same blob) and retrains c2; B holds copies of both versions
    store_a = ModelStore(a)
    with store_a.draft("m") as draft:
        draft.reuse_component(v1.component("c1"))
        _component(draft, "c2", b"clean weights")
        v2 = _commit(draft)
    assert ModelStore(b).get("m", 1).version == 1 and ModelStore(b).get("m", 2).version == 2
    kept = v2.component("c1").meta.files[ADAPTER_FILE]
    dirty = v1.component("c2").meta.files[ADAPTER_FILE]
    assert {kept, dirty} <= {k.rsplit("/", 1)[1] for k in _blob_keys(shared_url)}

    # a made-before-the-store version on B (no mark) is not the store's to delete
    unmarked = b.artifacts / "models" / "m" / "v7"
    unmarked.mkdir()

    dropped = ModelStore(a).remote.delete("m", [1])
    names = {k.rsplit("/", 1)[1] for k in _blob_keys(shared_url)}
    assert dropped >= 1 and dirty not in names and kept in names  # v2's shared blob stays
    assert ModelStore(a).remote.versions("m") == [2] and not ModelStore(a).remote.has_bundle("m", 1)
    assert ModelStore(b).versions("m") == [2, 7]  # B's copy of v1 (and its bundle) deleted on sight
    assert not (b.artifacts / "models" / "m" / "v1").exists() and not bundle_dir(b, "m", 1).exists()
    assert unmarked.exists()
    assert _files(ModelStore(b).get("m", 2)) == _files(v2)  # v2 still reads whole


def test_an_upload_that_outlived_its_lease_takes_its_index_back(shared_url: str, hosts,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is lost while the blobs upload (a stall, a cut from PostgreSQL): the index the
    stalled writer wrote is withdrawn, nothing becomes visible, and the writer fails LeaseLost."""
    from unlearning.versions import store as store_module

    a, b = hosts
    calls = []

    def lease_lost_after_the_index(model: str) -> None:
        calls.append(model)
        if len(calls) == 3:  # commit's start, before the index: ours; after it: taken over
            raise LeaseLost(f"the lease on {model} was taken over (epoch 2)")

    monkeypatch.setattr(store_module, "check_lease", lease_lost_after_the_index)
    with pytest.raises(LeaseLost, match="taken over"):
        _write(ModelStore(a), "m", b"stalled weights")
    assert len(calls) == 3
    assert ModelStore(b).versions("m") == [] and not (a.artifacts / "models" / "m" / "v1").exists()


def test_an_object_store_without_the_shared_database_is_refused_before_any_write(hosts) -> None:
    """Versions in an object store written under a per-host flock: refused by every writer and by
    the start-up check (the hosts fixture sets an object store and no database)."""
    from unlearning.operations.check import check_workspace
    from unlearning.versions.lock import model_lock

    a, _ = hosts
    with pytest.raises(BadInput, match="object store is configured without the shared database"):
        with model_lock(a, "m"):
            pass
    with pytest.raises(BadInput, match="model leases in PostgreSQL"):
        check_workspace(a)


def test_a_bucket_that_keeps_old_versions_is_refused(object_store_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With bucket versioning a delete only adds a marker: purged checkpoints would survive."""
    from ledger.objects import S3Objects

    objects = open_object_store(object_store_url)
    assert isinstance(objects, S3Objects)
    bucket = f"versioned-{tmp_path.name[-8:].lower().replace('_', '-')}"
    objects._client.create_bucket(Bucket=bucket)
    objects._client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    url = object_store_url.replace(f"s3://{objects.location.bucket}/", f"s3://{bucket}/", 1)
    monkeypatch.setenv("ERASURE_OBJECT_STORE", url)
    monkeypatch.delenv("ERASURE_DATABASE_URL", raising=False)
    with pytest.raises(ServiceError, match=r"keeps old versions of every object \(bucket versioning Enabled\)"):
        ModelStore(Workspace(tmp_path / "host")).versions("m")


def test_a_version_purged_while_another_host_reads_it_is_not_corruption(hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = hosts
    _write(ModelStore(a), "m", b"weights")
    reader = ModelStore(b).remote
    index = reader.index("m", 1)  # B has read the index ...
    ModelStore(a).remote.delete("m", [1])  # ... when A's purge deletes the version and its blobs
    monkeypatch.setattr(reader, "index", lambda name, version: index)
    with pytest.raises(ServiceError, match="model m v1 was purged from .* while it was being read"):
        reader.download("m", 1, b.artifacts / "models" / "m")
    assert not (b.artifacts / "models" / "m" / "v1").exists()


def test_half_downloads_of_killed_processes_are_swept(tmp_path: Path) -> None:
    """A `kill -9` mid-download leaves `.fetch-vN-PID` (maybe of a version purged since): the next
    settle of the model drops those of dead processes, and keeps a live one's."""
    import subprocess
    import sys

    from unlearning.operations.settle import _remove_dead_drafts

    ws = Workspace(tmp_path / "home")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    models, bundles = ws.artifacts / "models" / "m", ws.artifacts / "bundles" / "m"
    left = [models / f".fetch-v3-{dead.stdout.strip()}", bundles / f".fetch-v3-{dead.stdout.strip()}"]
    live = models / f".fetch-v4-{os.getpid()}"
    for directory in (*left, live):
        (directory / "components").mkdir(parents=True)
    _remove_dead_drafts(ws, "m")
    assert not any(d.exists() for d in left) and live.exists()


def test_an_idle_host_deletes_its_copies_of_versions_purged_elsewhere(hosts) -> None:
    """B read v1 and v2, then does nothing: A's purge of v1 must still reach B's disk (v1 trained
    on erased records). `ModelStore.sweep` does it for every model; `erasure serve` runs it."""
    import threading
    import time

    from consumers.serve import Service

    a, b = hosts
    _write(ModelStore(a), "m", b"dirty weights")
    _write(ModelStore(a), "m", b"clean weights")
    _write(ModelStore(a), "other", b"other weights")
    for name, number in (("m", 1), ("m", 2), ("other", 1)):
        ModelStore(b).get(name, number)
    copy = b.artifacts / "models" / "m"
    ModelStore(a).remote.delete("m", [1])
    assert (copy / "v1").exists()  # nothing on B has looked yet
    assert ModelStore(b).sweep() == [("m", 1)]
    assert not (copy / "v1").exists() and (copy / "v2").exists()
    assert ModelStore(b).sweep() == []

    ModelStore(a).remote.delete("m", [2])
    service = Service(b, role="executor", sweep_s=0.05)
    sweeper = threading.Thread(target=service._sweep)
    sweeper.start()
    try:
        give_up = time.monotonic() + 30
        while (copy / "v2").exists() and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        service.stop()
        sweeper.join(10)
    assert not (copy / "v2").exists() and not sweeper.is_alive()
    assert (b.artifacts / "models" / "other" / "v1").exists()  # still in the store: kept
