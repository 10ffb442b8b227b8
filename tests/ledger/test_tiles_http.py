"""The tiled log over HTTP: `erasure ledger serve`'s responses, the client, `erasure ledger
publish` and `verify --log`, and a certificate checked against the served log."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.certificate import Verification, verify_certificate
from ledger.errors import BadInput, ServiceError
from ledger.keys import build_trust
from ledger.log import open_ledger
from ledger.tiles import TileLog, open_tree
from ledger.tiles.certified import check_served_log
from ledger.tiles.publish import publish
from ledger.tiles.serve import make_server, server_url
from ledger.workspace import Workspace
from tests.ledger.test_certificate import _c, _issue

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws(trusted_ws: Workspace) -> Workspace:
    return trusted_ws


def _append(ws: Workspace, count: int) -> None:
    with open_ledger(ws, sign=True) as ledger:
        ledger.append_many([("key_event", {"n": ledger.size + i}) for i in range(count)])
        ledger.checkpoint()


@pytest.fixture
def served(ws: Workspace) -> Iterator[tuple[Path, str]]:
    """The workspace's ledger (300 entries) published to home/tiles and served on a free port."""
    _append(ws, 300)
    directory = ws.home / "tiles"
    with open_ledger(ws) as ledger:
        publish(ledger.store, directory)
    server = make_server(directory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, server_url(server)
    server.shutdown()
    server.server_close()


def _get(url: str, path: str, method: str = "GET", **headers: str) -> http.client.HTTPResponse:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_the_server_serves_the_spec_resources_only(served: tuple[Path, str]) -> None:
    directory, url = served
    checkpoint = _get(url, "/checkpoint")
    assert checkpoint.status == 200 and checkpoint.body == (directory / "checkpoint").read_bytes()  # type: ignore[attr-defined]
    assert checkpoint.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert checkpoint.headers["Cache-Control"] == "public, max-age=2"
    tile = _get(url, "/tile/0/000")
    assert tile.status == 200 and len(tile.body) == 8192  # type: ignore[attr-defined]
    assert tile.headers["Content-Type"] == "application/octet-stream"
    assert tile.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert _get(url, "/tile/0/001.p/44", "HEAD").headers["Content-Length"] == str(44 * 32)
    raw = (directory / "tile/entries/000").read_bytes()
    zipped = _get(url, "/tile/entries/000", **{"Accept-Encoding": "gzip, identity"})
    assert zipped.headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped.body) == raw  # type: ignore[attr-defined]
    assert len(zipped.body) < len(raw) / 3  # type: ignore[attr-defined]
    assert _get(url, "/tile/entries/000").body == raw  # type: ignore[attr-defined]
    for path in ("/.publish.lock", "/tile/0/../../checkpoint", "/tile/0/002", "/tile/0/001.p/45", "/", "/tile/0/000/"):
        assert _get(url, path).status == 404, path


def test_the_client_over_http(served: tuple[Path, str], ws: Workspace) -> None:
    _, url = served
    trust = build_trust(ws).role("ledger")
    tree = open_tree(TileLog(url), trust.verifiers(), trust.origin)
    with open_ledger(ws, create=False) as ledger:
        assert tree.entry(299) == ledger.entry(299) and tree.entry(3) == ledger.entry(3)
    assert tree.log.stats.requests == 6  # checkpoint, tile/0/001.p/44, tile/1/000.p/1, tile/0/000, two bundles
    assert tree.log.stats.bytes < 8192 + 3000 + 2 * 2000  # bundles come gzipped
    with pytest.raises(ServiceError, match=r"^cannot fetch http://127.0.0.1:9/checkpoint: "):
        TileLog("http://127.0.0.1:9").checkpoint()
    with pytest.raises(BadInput, match="no tiled log at .*: it serves no checkpoint"):
        TileLog(url + "elsewhere/").checkpoint()
    with pytest.raises(BadInput, match="is not http"):
        TileLog("ftp://example.com/log")


def _serve(source: Path | str) -> tuple[subprocess.Popen[str], str]:
    """`erasure ledger serve --from DIR-or-URL --port 0` as a process; returns it and the URL it prints."""
    process = subprocess.Popen([sys.executable, "-c", "from cli.app import main; main()", "ledger", "serve", "--from",
                                str(source), "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(f"serving {source} at http://127.0.0.1:"), line
    return process, line.split()[-1]


def test_publish_serve_and_verify_from_the_cli(ws: Workspace, runner: CliRunner, tmp_path: Path) -> None:
    _append(ws, 3)
    out = runner.invoke(app, ["ledger", "publish", "--to", str(tmp_path / "public")])
    assert out.exit_code == 0 and out.stdout == (f"published checkpoint size 3 to {tmp_path / 'public'} "
                                                 "(1 tiles, 1 entry bundles written)\n")
    process, url = _serve(tmp_path / "public")
    try:
        verify = ["ledger", "verify", "--trust", str(tmp_path / "trust.json"), "--log", url, "--state",
                  str(tmp_path / "auditor")]
        first = runner.invoke(app, [*verify, "--entry", "1"])
        assert first.exit_code == 0, first.output
        lines = first.stdout.splitlines()
        assert lines[0] == f"ok: checkpoint size 3 (erasure.local/ledger/v1) served at {url}"
        assert lines[1].startswith('1\t{"at":') and lines[2].startswith("fetched 3 resources, ")
        _append(ws, 400)
        assert runner.invoke(app, ["ledger", "publish", "--to", str(tmp_path / "public"), "--json"]).exit_code == 0
        again = runner.invoke(app, [*verify, "--json"])
        assert again.exit_code == 0, again.output
        report = json.loads(again.stdout)
        assert (report["checkpoint_size"], report["previous_size"]) == (403, 3)
        tile = tmp_path / "public" / "tile/0/000"
        tile.write_bytes(bytes(8192))
        bad = runner.invoke(app, [*verify, "--entry", "5"])
        assert bad.exit_code == 1 and bad.stderr == ("erasure: error: tile tile/0/000 from " + url + " does not hash to "
                                                     "its entry in tile/1/000.p/1: tampered, or not of this tree\n")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert runner.invoke(app, ["ledger", "verify", "--entry", "1"]).exit_code == 2


def test_a_certificate_against_the_served_log(ws: Workspace, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _issue(ws, bundle, erased=[_c(5)], held={"s0": [_c(i) for i in range(5)], "s1": [_c(i) for i in range(6, 9)]})
    _append(ws, 2)  # the log moved on after the certificate
    with open_ledger(ws, create=False) as ledger:
        publish(ledger.store, tmp_path / "public")
    trust = build_trust(ws)

    def check(directory: Path, state: Path | None = None) -> Verification:
        v = verify_certificate(bundle, trust)
        assert v.verified, v.to_json()
        check_served_log(v, bundle, trust, str(directory), state)
        return v

    v = check(tmp_path / "public", tmp_path / "state")
    assert v.verified, v.to_json()
    details = {c.check: c.detail for c in v.checks}
    assert details["ledger consistency"] == (f"certified checkpoints (sizes 3, 4) are prefixes of the log served at "
                                             f"{tmp_path / 'public'}/ (size 6)")
    assert details["log entries"].startswith("3 cited entries and the certificate_issued entry (index 3) served verbatim")
    assert details["auditor state"] == f"first use: checkpoint of size 6 kept in {tmp_path / 'state'}"
    # a tampered entry bundle
    shutil.copytree(tmp_path / "public", tmp_path / "tampered")
    entries = tmp_path / "tampered" / "tile/entries/000.p/6"
    entries.write_bytes(entries.read_bytes().replace(b"req-1", b"req-2"))
    v = check(tmp_path / "tampered")
    assert not v.verified and v.checks[-1].check == "log entries"
    assert "entry bundle tile/entries/000.p/6 from" in v.checks[-1].detail


def test_a_certificate_newer_than_the_served_log(ws: Workspace, tmp_path: Path) -> None:
    _append(ws, 1)
    with open_ledger(ws, create=False) as ledger:
        publish(ledger.store, tmp_path / "stale")  # and never again
    bundle = tmp_path / "bundle"
    _issue(ws, bundle, erased=[_c(5)], held={"s0": [_c(i) for i in range(5)]})
    trust = build_trust(ws)
    v = verify_certificate(bundle, trust)
    assert not check_served_log(v, bundle, trust, str(tmp_path / "stale"))
    assert (v.checks[-1].check, v.checks[-1].detail) == (
        "ledger consistency", "the log serves a checkpoint of size 1, older than the certificate's checkpoint "
        "(size 3): not published yet, or rolled back")
