"""The tiled log published to an object store (a real S3 server, SeaweedFS) instead of a
directory: what `erasure ledger publish --to s3://...` writes, serving it with `erasure ledger
serve --from`, verifying from it, refusing tampered objects, and publishers taking turns on the
ledger store's lock (a lock file beside SQLite; an advisory lock in PostgreSQL, across hosts)."""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import VerificationFailed
from ledger.log import Ledger, open_ledger
from ledger.note import Signer
from ledger.objects import ObjectMissing, open_object_store
from ledger.postgres_store import PostgresStore
from ledger.tiles import TileLog, open_tree
from ledger.tiles.publish import publish
from ledger.tiles.serve import make_server, server_url
from ledger.workspace import Workspace
from tests.ledger.test_tiles_http import _append, _serve

ORIGIN = "test.erasure.local/ledger/v1"


def _grow(ledger: Ledger, size: int) -> None:
    ledger.append_many([("key_event", {"n": i}) for i in range(ledger.size, size)])
    ledger.checkpoint()


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path, signer: Signer) -> Iterator[Ledger]:
    if request.param == "sqlite":
        store = Ledger.open(tmp_path / "ledger.db", ORIGIN, signer).store
    else:
        store = PostgresStore.open(request.getfixturevalue("database_url"), ORIGIN)
    with Ledger(store, signer) as ledger:
        yield ledger


@pytest.fixture
def served(object_store_url: str) -> Iterator[str]:
    """`erasure ledger serve --from` the object store, once something is published there."""
    servers = []

    def start() -> str:
        server = make_server(object_store_url)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server_url(server)

    yield start  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_publish_to_s3_grow_serve_and_verify(log: Ledger, signer: Signer, object_store_url: str, served) -> None:
    objects = open_object_store(object_store_url)
    _grow(log, 300)
    first = publish(log.store, object_store_url)
    assert (first.target, first.size, first.previous_size) == (object_store_url, 300, None)
    assert objects.get("checkpoint").decode() == log.latest_checkpoint()
    assert {"tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/000", "tile/entries/001.p/44"} \
        <= set(objects.list("tile/"))
    _grow(log, 600)
    second = publish(log.store, object_store_url)
    assert (second.size, second.previous_size, second.tiles) == (600, 300, 3)  # 0/001, 0/002.p/88, 1/000.p/2
    assert objects.get("checkpoint").decode() == log.latest_checkpoint()  # replaced
    keys = set(objects.list("tile/"))
    assert {"tile/0/001", "tile/entries/001", "tile/0/002.p/88"} <= keys
    assert not {k for k in keys if k.startswith(("tile/0/001.p/", "tile/entries/001.p/"))}  # partials dropped

    url = served()
    tree = open_tree(TileLog(url), [signer.verifier], ORIGIN)
    assert tree.size == 600 and json.loads(tree.entry(599))["n"] == 599
    assert tree.root_at(300) == _root(log, 300)


def _root(log: Ledger, size: int) -> bytes:
    from ledger.merkle import tree_root
    from ledger.store import hash_reader

    with log.store.reading() as view:
        return tree_root(hash_reader(view), size)


def test_a_tampered_object_is_refused_by_readers_and_never_overwritten(log: Ledger, signer: Signer,
                                                                       object_store_url: str, served) -> None:
    objects = open_object_store(object_store_url)
    _grow(log, 600)
    publish(log.store, object_store_url)
    tampered = objects.get("tile/entries/001").replace(b'"n":300', b'"n":301', 1)
    objects._client.put_object(Bucket=objects.location.bucket, Key=objects.location.prefix + "tile/entries/001",
                               Body=tampered)  # someone with write access to the bucket
    tree = open_tree(TileLog(served()), [signer.verifier], ORIGIN)
    with pytest.raises(VerificationFailed, match="entry bundle tile/entries/001 from .*: entry 300 does not hash to its leaf"):
        tree.entry(300)
    objects.delete("checkpoint")  # publish everything again: the changed bundle is refused, not "repaired"
    with pytest.raises(VerificationFailed, match="refusing to rewrite .*tile/entries/001: it holds other bytes"):
        publish(log.store, object_store_url)
    with pytest.raises(ObjectMissing):
        objects.get("checkpoint")  # and no checkpoint names the tampered tiles


def test_checkpoints_publish_to_the_object_store_when_configured(trusted_ws: Workspace, runner: CliRunner,
                                                                 object_store_url: str) -> None:
    workspace = trusted_ws
    workspace.config_file.write_text(f'[ledger]\ntiles_dir = "{object_store_url}"\n')
    objects = open_object_store(object_store_url)
    with open_ledger(workspace, sign=True) as ledger:
        ledger.append("key_event", {"n": 1})
        note = ledger.checkpoint()
        assert objects.get("checkpoint").decode() == note
        assert objects.exists("tile/entries/000.p/1")
    result = runner.invoke(app, ["ledger", "publish", "--json"])  # the configured target by default
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["target"] == object_store_url


def test_publish_serve_and_verify_from_s3_with_the_cli(trusted_ws: Workspace, runner: CliRunner, tmp_path: Path,
                                                       object_store_url: str) -> None:
    _append(trusted_ws, 3)
    out = runner.invoke(app, ["ledger", "publish", "--to", object_store_url])
    assert out.exit_code == 0, out.output
    assert out.stdout == f"published checkpoint size 3 to {object_store_url} (1 tiles, 1 entry bundles written)\n"
    process, url = _serve(object_store_url)
    try:
        verify = ["ledger", "verify", "--trust", str(tmp_path / "trust.json"), "--log", url, "--entry", "1"]
        result = runner.invoke(app, verify)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == f"ok: checkpoint size 3 (erasure.local/ledger/v1) served at {url}"
    finally:
        process.terminate()
        process.wait(timeout=10)
    empty = object_store_url.replace("/t-", "/nothing-")
    missing = runner.invoke(app, ["ledger", "serve", "--from", empty])
    assert missing.exit_code == 2 and f"{empty} holds no published checkpoint" in missing.stderr


def test_publishers_take_turns_on_the_ledger_stores_lock(log: Ledger) -> None:
    store = log.store
    other = Ledger(PostgresStore.open(store.url, ORIGIN)) if isinstance(store, PostgresStore) \
        else Ledger.open(store.path, ORIGIN)
    try:
        with log.store.publishing():
            assert not _free(other.store)  # another publisher (another process, another host) waits
        assert _free(other.store)
    finally:
        other.close()


def _free(store) -> bool:  # type: ignore[no-untyped-def]
    """Whether `store`'s publishing lock can be taken now (without waiting)."""
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url, autocommit=True) as db:
            taken = db.execute("SELECT pg_try_advisory_lock(%s)", (store._publish_lock,)).fetchone()[0]
            return bool(taken)  # released when this connection closes
    with open(f"{store.path}.publish.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True
