"""An auditor's base install (cryptography, typer, pydantic, rich) verifies bundles of every method.

The bundles are trained on the tiny model and certified in a workspace without MLflow; each
`erasure verify` runs in a fresh interpreter in which the service install's packages cannot be
imported. Those interpreters never load torch, so they start in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from ledger.errors import VerificationFailed
from ledger.workspace import Workspace
from tests.conftest import make_records, with_fixed_partition_key
from unlearning.data.records import RecordStore
from unlearning.operations.build import train_model
from unlearning.operations.certify import certify
from unlearning.training.config import TrainConfig
from unlearning.versions.layout import AGGREGATOR_FILE
from unlearning.versions.safetensors_header import read_header

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
TINY = {"base": "tiny", "lr": 0.01, "batch_size": 4, "epochs": 1.0, "seed": 3}
METHODS = {
    "retrain": {},
    "sisa": {"shards": 2, "slices": 2},
    "apa": {"shards": 2, "neighbours": 4},
    "s3t": {"shards": 2, "slices": 2, "layers_per_group": 1, "budget": 2},
}
SERVICE_ONLY = ("torch", "transformers", "peft", "kafka", "mlflow", "numpy", "safetensors", "sklearn", "scipy",
                "tokenizers", "psycopg", "boto3", "botocore")

# `erasure` as on a base install: a meta-path finder refuses the service install's packages, and
# the interpreter first proves that it does (a module already loaded at start-up would slip past).
_BASE_INSTALL = f"""
import importlib, sys

class ServiceOnly:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {SERVICE_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, ServiceOnly())
for name in {SERVICE_ONLY!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    sys.exit(f"the blocker is not active: {{name}} was imported")
from cli.app import main
main()
"""


@dataclass(frozen=True)
class Audit:
    home: Path  # ERASURE_HOME: the ledger the bundles cite
    trust: Path
    bundles: dict[str, Path]  # method -> certified bundle directory

    def verify(self, bundle: Path, *options: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`erasure verify BUNDLE --trust TRUST --json` on a base install, in this workspace (or in
        `home`, an auditor's elsewhere)."""
        env = {k: v for k, v in os.environ.items() if k not in ("ERASURE_KEY_DIR", "MLFLOW_TRACKING_URI")}
        return subprocess.run([sys.executable, "-c", _BASE_INSTALL, "verify", str(bundle), "--trust", str(self.trust),
                               "--json", *options], capture_output=True, text=True, cwd=REPO, timeout=120,
                              env={**env, "ERASURE_HOME": str(home or self.home)})


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Audit:
    """One workspace holding a certified version 1 of each method, and its trust file."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("auditor")
        mp.setenv("ERASURE_HOME", str(root / "home"))
        mp.delenv("ERASURE_KEY_DIR", raising=False)
        ws = with_fixed_partition_key(Workspace.from_env())
        with RecordStore.open(ws) as store:
            store.ingest(make_records(subjects=16, per_subject=3))
        assert runner.invoke(app, ["keys", "init"]).exit_code == 0
        assert runner.invoke(app, ["keys", "trust", "--out", str(root / "trust.json")]).exit_code == 0
        bundles = {method: certify(ws, train_model(ws, method, TrainConfig(method=method, **TINY, **options)), [])
                   for method, options in METHODS.items()}
    return Audit(ws.home, root / "trust.json", bundles)


@pytest.mark.parametrize("method", list(METHODS))
def test_the_base_install_verifies_every_method(audit: Audit, method: str) -> None:
    result = audit.verify(audit.bundles[method])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["claim"] == "EXACT"
    assert all(c["ok"] for c in report["checks"])
    checks = [c["check"] for c in report["checks"]]
    assert {"signature", "subjects", "manifests", "non-membership", "ledger consistency"} <= set(checks)
    assert ("aggregator binding" in checks) == (method == "apa")


def test_a_changed_aggregator_fails_with_a_one_line_reason(audit: Audit, tmp_path: Path) -> None:
    bundle = shutil.copytree(audit.bundles["apa"], tmp_path / "bundle")
    changed = bundle / "components" / "aggregator" / AGGREGATOR_FILE
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0x01
    changed.write_bytes(bytes(data))

    result = audit.verify(bundle)
    assert result.returncode == 1
    assert not json.loads(result.stdout)["verified"]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"erasure: error: subjects: bundle file components/aggregator/{AGGREGATOR_FILE} "
                                    "has sha256")


def test_replay_asks_for_the_full_install(audit: Audit) -> None:
    result = audit.verify(audit.bundles["apa"], "--replay", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("erasure: error: this needs torch, which is not installed")


def test_the_header_reader_agrees_with_safetensors(audit: Audit) -> None:
    from safetensors import safe_open

    path = audit.bundles["apa"] / "components" / "aggregator" / AGGREGATOR_FILE
    header = read_header(path)
    with safe_open(path, framework="pt") as f:
        assert header.metadata == f.metadata()
        assert header.shapes == {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def _file(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


@pytest.mark.parametrize("content", [
    b"\x02\x00\x00",  # shorter than the length field
    _file(b"{}")[:-1],  # the header is longer than what follows
    (1 << 63).to_bytes(8, "little") + b"{}",
    _file(b"{not json"),
    _file(b"\xff{}"),
    _file(b"[]"),
    _file(b'{"__metadata__": {"adapters": 3}}'),
    _file(b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0\0\0"),  # past the end
    _file(b'{"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}'),
    _file(b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [true, 4]}}', b"\0" * 4),
    _file(b'{"x": [1]}'),
])
def test_the_header_reader_rejects_malformed_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / AGGREGATOR_FILE
    path.write_bytes(content)
    with pytest.raises(VerificationFailed, match=f"^{AGGREGATOR_FILE} is not a safetensors file: "):
        read_header(path)


# --- an auditor on another machine: the bundle, the trust file and the log's URL ----------------

@pytest.fixture(scope="module")
def served(audit: Audit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The workspace's ledger published as tiles and served by `erasure ledger serve`."""
    tiles = tmp_path_factory.mktemp("public") / "tiles"
    assert _erasure(audit.home, "ledger", "publish", "--to", str(tiles)).returncode == 0
    with _serving(tiles) as url:
        yield tiles, url


def _erasure(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from cli.app import main; main()", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env={**os.environ, "ERASURE_HOME": str(home)})


@contextmanager
def _serving(tiles: Path) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", "from cli.app import main; main()", "ledger", "serve", "--dir",
                                str(tiles), "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[-1]  # "serving DIR at http://127.0.0.1:PORT/"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("method", list(METHODS))
def test_an_auditor_elsewhere_verifies_against_the_served_log(audit: Audit, served: tuple[Path, str], method: str,
                                                             tmp_path: Path) -> None:
    elsewhere = tmp_path / "auditor"  # no ledger.db, nothing of ours but the bundle and the trust file
    result = audit.verify(audit.bundles[method], "--log", served[1], "--state", str(elsewhere / "state"), home=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["claim"] == "EXACT"
    checks = {c["check"]: c["detail"] for c in report["checks"]}
    assert {"signature", "subjects", "manifests", "non-membership", "ledger inclusion", "certificate logged",
            "ledger consistency", "log entries", "auditor state"} <= set(checks)
    assert checks["ledger consistency"].endswith(f"are prefixes of the log served at {served[1]} (size "
                                                 f"{_size(served[0])})")
    assert checks["auditor state"].startswith("first use: checkpoint of size")
    assert not (elsewhere / "ledger.db").exists()
    again = audit.verify(audit.bundles[method], "--log", served[1], "--state", str(elsewhere / "state"), home=elsewhere)
    assert json.loads(again.stdout)["checks"][-1]["detail"].startswith("consistent with the checkpoint of size")


def _size(tiles: Path) -> int:
    return int((tiles / "checkpoint").read_text().splitlines()[1])


def test_without_the_log_an_auditor_elsewhere_is_told_to_give_it(audit: Audit, tmp_path: Path) -> None:
    result = audit.verify(audit.bundles["sisa"], home=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"erasure: error: ledger consistency: no ledger at {tmp_path / 'ledger.db'} to check "
                             "consistency against (give --log URL to check against the log served as tiles)\n")


@pytest.mark.parametrize(("resource", "reason"), [
    ("tile/0/000", "the log's tiles tile/0/000.p/{w} do not hash to its signed root"),
    ("tile/entries/000", "log entries: entry bundle tile/entries/000.p/{w} from {url}: entry 0 does not hash to its "
                         "leaf in tile/0/000.p/{w}: tampered, or not of this tree"),
])
def test_a_tampered_tile_or_entry_bundle_is_refused(audit: Audit, served: tuple[Path, str], tmp_path: Path,
                                                   resource: str, reason: str) -> None:
    tiles = shutil.copytree(served[0], tmp_path / "tiles")
    width = _size(tiles)
    assert width < 256  # one partial tile of each kind
    path = tiles / f"{resource}.p/{width}"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with _serving(tiles) as url:
        result = audit.verify(audit.bundles["retrain"], "--log", url, home=tmp_path / "auditor")
    assert result.returncode == 1 and not json.loads(result.stdout)["verified"]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert reason.format(w=width, url=url) in result.stderr
