"""The object store (`ledger.objects`): write-once keys and verified blobs, on a directory and on a
real S3 server (SeaweedFS, the session's `s3_server`); one-line errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ledger.errors import BadInput, CorruptState, ServiceError
from ledger.objects import BLOBS, LocalObjects, ObjectMissing, S3Objects, open_object_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_object_store(f"file://{tmp_path / 'objects'}")
    return open_object_store(request.getfixturevalue("object_store_url"))


def _overwrite(store, key: str, data: bytes) -> None:
    """Replace an object behind the store's back (a disk fault, or someone with write access)."""
    if isinstance(store, LocalObjects):
        (store.root / key).write_bytes(data)
    else:  # an unconditional PutObject with the same credentials, not through the driver
        store._client.put_object(Bucket=store.location.bucket, Key=store.location.prefix + key, Body=data)


def test_put_if_absent_writes_a_key_once(store) -> None:
    assert store.put_if_absent("models/m/v1.json", b"first") is True
    assert store.put_if_absent("models/m/v1.json", b"second") is False
    assert store.get("models/m/v1.json") == b"first"  # the second write changed nothing
    assert store.exists("models/m/v1.json") and not store.exists("models/m/v2.json")
    store.put_if_absent("models/other/v1.json", b"x")
    assert store.list("models/m/") == ["models/m/v1.json"]
    assert store.list() == ["models/m/v1.json", "models/other/v1.json"]
    with pytest.raises(ObjectMissing, match="no object models/m/v2.json"):
        store.get("models/m/v2.json")
    for bad in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(BadInput, match="invalid object key"):
            store.put_if_absent(bad, b"x")


def test_concurrent_writers_of_one_key_one_wins(store) -> None:
    results: dict[int, bool] = {}

    def write(i: int) -> None:
        results[i] = store.put_if_absent("race", f"writer {i}".encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert store.get("race") == f"writer {winners[0]}".encode()


def test_replace_rewrites_whole_and_delete_leaves_nothing_behind(store) -> None:
    assert store.put_if_absent("log/tile/0/000.p/7", b"partial") is True
    store.replace("log/checkpoint", b"size 7")
    store.replace("log/checkpoint", b"size 9")  # the one key that is rewritten: a tiled log's checkpoint
    assert store.get("log/checkpoint") == b"size 9"
    assert store.list("log/tile/0/000.p/") == ["log/tile/0/000.p/7"]
    store.delete("log/tile/0/000.p/7")
    assert store.list("log/tile/") == [] and store.list() == ["log/checkpoint"]
    if isinstance(store, LocalObjects):  # no empty directories, no temporary files left
        assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == ["log", "log/checkpoint"]
    assert store.put_if_absent("log/tile/0/000.p/7", b"again") is True  # its directory is made again


def test_blobs_are_content_addressed_and_verified_on_read(store) -> None:
    data = b"adapter weights" * 100
    digest = store.put_blob(data)
    assert digest == hashlib.sha256(data).hexdigest() and store.exists(BLOBS + digest)
    assert store.put_blob(data) == digest  # idempotent
    assert store.get_blob(digest) == data
    _overwrite(store, BLOBS + digest, b"tampered" + data[8:])
    with pytest.raises(CorruptState, match=f"blob {digest[:16]}... in the object store .* is corrupt"):
        store.get_blob(digest)
    with pytest.raises(ObjectMissing, match="is missing from the object store"):
        store.get_blob("0" * 64)
    with pytest.raises(BadInput, match="invalid blob digest"):
        store.get_blob("../../x")


def test_wrong_credentials_are_one_line(object_store_url: str, tmp_path: Path) -> None:
    creds = tmp_path / "wrong-credentials"
    creds.write_text("[erasure]\naws_access_key_id = NOSUCHKEY\naws_secret_access_key = nope\n")
    base, query = object_store_url.split("?", 1)
    wrong = "&".join(p if not p.startswith("credentials=") else f"credentials={creds}" for p in query.split("&"))
    store = open_object_store(f"{base}?{wrong}")
    with pytest.raises(ServiceError, match="refused the credentials") as err:
        store.put_if_absent("k", b"x")
    assert "\n" not in str(err.value) and "nope" not in str(err.value)
    with pytest.raises(ServiceError, match="cannot read the object store's credentials file .*absent"):
        open_object_store(f"{base}?{wrong.replace(str(creds), str(tmp_path / 'absent'))}")
    creds.write_text("[other]\naws_access_key_id = A\naws_secret_access_key = B\n")
    with pytest.raises(ServiceError, match=r"has no profile \[erasure\]"):
        open_object_store(f"{base}?{wrong}")


def test_s3_urls_parse_and_bad_ones_are_refused(s3_server: str) -> None:
    store = open_object_store(s3_server.replace("s3://erasure?", "s3://erasure/a/b/?"))
    assert isinstance(store, S3Objects)
    assert (store.location.bucket, store.location.prefix) == ("erasure", "a/b/")
    assert store.location.endpoint and store.location.endpoint.startswith("http://127.0.0.1:")
    with pytest.raises(BadInput, match="unknown parameter 'secret'"):
        open_object_store("s3://b?secret=x")
    with pytest.raises(BadInput, match="unsupported object store URL"):
        open_object_store("gs://b")
    assert isinstance(open_object_store("relative/dir"), LocalObjects)


def test_a_missing_bucket_is_one_line(s3_server: str) -> None:
    store = open_object_store(s3_server.replace("s3://erasure?", "s3://no-such-bucket?"))
    with pytest.raises(ServiceError, match="has no bucket 'no-such-bucket'"):
        store.put_if_absent("k", b"x")


def test_importing_the_object_store_does_not_import_boto3() -> None:
    probe = "import sys, json, ledger.objects; print(json.dumps(sorted(m for m in ('boto3', 'botocore') if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(done.stdout) == []
