"""Model leases on a real PostgreSQL server (the shared deployment's model lock), the restore
journal's rows there, and the epoch check before a publish. Holders run in separate processes
where it matters (mutual exclusion, kill -9, a stalled holder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.errors import BadInput, CorruptState, LeaseLost
from ledger.workspace import Workspace
from unlearning.operations.check import check_workspace
from unlearning.operations.restore import Journal
from unlearning.versions import lease as leases
from tests.unlearning.versions.test_lock_and_journal import _holder, _wait_for
from unlearning.versions.lock import HeldFlock, model_lock

ROOT = Path(__file__).resolve().parents[3]

# a holder in its own process: argv = mode, ERASURE_HOME, output file
CHILD = r"""
import json, sys, time
from pathlib import Path
from types import SimpleNamespace
from ledger.errors import LeaseLost
from ledger.workspace import Workspace
from unlearning.operations.publish import publish
from unlearning.operations.restore import Journal
from unlearning.versions.lease import check_lease
from unlearning.versions.lock import model_lock
from unlearning.versions.store import ModelStore

mode, home, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ws = Workspace(home)

def say(line):
    with open(out, "a") as f:
        f.write(line + "\n")
        f.flush()

if mode == "contend":
    for i in range(6):
        with model_lock(ws, "m"):
            say(f"{sys.argv[4]} start")
            time.sleep(0.03)
            say(f"{sys.argv[4]} end")
elif mode == "hold":
    with model_lock(ws, "m") as lease:
        say(f"held {lease.epoch}")
        time.sleep(120)
elif mode == "stall":
    with model_lock(ws, "m") as lease:
        say(f"held {lease.epoch}")
        while not (home / "go").exists():
            time.sleep(0.05)
        refused = {}
        attempts = {
            "check": lease.check,
            "check_lease": lambda: check_lease("m"),
            "commit": lambda: ModelStore(ws).draft("m").commit({}),
            "publish": lambda: publish(ws, None, SimpleNamespace(name="m"), []),
            "journal": lambda: Journal(ws, "m").write(1, [0], ["r1"], []),
        }
        for what, attempt in attempts.items():
            try:
                attempt()
                refused[what] = None
            except LeaseLost as err:
                refused[what] = str(err)
        say("refused " + json.dumps(refused))
"""


@pytest.fixture
def shared(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("ERASURE_DATABASE_URL", database_url)
    monkeypatch.delenv("ERASURE_LEASE_TTL_S", raising=False)
    return Workspace(tmp_path / "home")


def _child(ws: Workspace, mode: str, out: Path, *args: str, ttl_s: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ttl_s is not None:
        env["ERASURE_LEASE_TTL_S"] = str(ttl_s)
    ws.home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(ws.home), str(out), *args], cwd=ROOT, env=env)


def _wait_line(out: Path, prefix: str, child: subprocess.Popen, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = out.read_text().splitlines() if out.exists() else []
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[0]
        assert child.poll() is None, f"the child exited ({child.returncode}) before {prefix!r}"
        assert time.monotonic() < deadline, f"no {prefix!r} from the child"
        time.sleep(0.02)


def _row(url: str) -> tuple:
    with leases.connect(url) as conn:
        return conn.execute("SELECT holder, epoch FROM model_leases WHERE model = 'm'").fetchone()


def test_embedded_lock_yields_a_check_that_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERASURE_DATABASE_URL", raising=False)
    ws = Workspace(tmp_path)
    with model_lock(ws, "m") as held:
        assert isinstance(held, HeldFlock)
        held.check()
        leases.check_lease("m")  # nothing to check without a lease
    assert (tmp_path / "pipeline" / "m.lock").exists()  # the flock files, as before


def test_two_processes_never_hold_the_lease_together(shared: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "markers"
    children = [_child(shared, "contend", out, name) for name in ("a", "b")]
    for child in children:
        assert child.wait(120) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 24 and {line.split()[0] for line in lines} == {"a", "b"}
    for start, end in zip(lines[::2], lines[1::2]):
        assert start.endswith(" start") and end == start.replace(" start", " end"), lines
    assert _row(shared.database_url()) == (None, 12)  # released; one epoch per holding


def test_epochs_increase_and_a_released_lease_is_free(shared: Workspace) -> None:
    with model_lock(shared, "m") as first:
        first.check()
        assert leases.current_lease("m") is first
        assert _row(shared.database_url()) == (first.holder, first.epoch)
    assert leases.current_lease("m") is None
    with model_lock(shared, "m", urgent=True) as second:
        assert second.epoch == first.epoch + 1 and second.holder != first.holder
    with pytest.raises(LeaseLost, match="released"):
        first.check()


def test_a_waiting_exclusion_goes_before_a_later_retrain(shared: Workspace) -> None:
    log: list[str] = []
    first = _holder(shared, False, log, "retrain-1", 1.0)
    _wait_for(log, "retrain-1 in")
    exclusion = _holder(shared, True, log, "exclusion", 0.2)
    time.sleep(0.4)  # the exclusion now waits for retrain-1, registered
    second = _holder(shared, False, log, "retrain-2", 0.05)
    for t in (first, exclusion, second):
        t.join(30)
    assert log == ["retrain-1 in", "retrain-1 out", "exclusion in", "exclusion out", "retrain-2 in", "retrain-2 out"]
    with leases.connect(shared.database_url()) as conn:  # the exclusion dropped its registration
        assert conn.execute("SELECT count(*) FROM model_lease_waiters").fetchone() == (0,)


def test_a_dead_urgent_waiters_registration_expires(shared: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_LEASE_TTL_S", "1")
    with leases.connect(shared.database_url()) as conn:  # as a killed exclusion leaves it
        conn.execute("INSERT INTO model_lease_waiters VALUES ('m', 'dead', now() + interval '1 second')")
    start = time.monotonic()
    with model_lock(shared, "m"):
        waited = time.monotonic() - start
    assert 0.5 < waited < 10


def test_a_killed_holder_is_taken_over_after_the_ttl(shared: Workspace, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 mid-retrain: the lease outlives its holder only until it expires (2 s here)."""
    monkeypatch.setenv("ERASURE_LEASE_TTL_S", "2")
    out = tmp_path / "out"
    child = _child(shared, "hold", out, ttl_s=2)
    try:
        epoch = int(_wait_line(out, "held", child).split()[1])
        time.sleep(0.8)  # renewed at least once
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        with model_lock(shared, "m") as lease:
            waited = time.monotonic() - killed
            assert lease.epoch == epoch + 1
            lease.check()
    finally:
        child.kill()
        child.wait()
    assert 0.3 < waited < 2 + 5  # it waited for the dead holder's expiry, no longer than the ttl (+ polls)


def test_a_stalled_holder_whose_lease_was_taken_over_cannot_publish(shared: Workspace, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder stopped (SIGSTOP, as a long GC or swap storm would) past its ttl: another takes
    the lease over; resumed, the old holder's check, version commit, publish and journal write
    all fail with LeaseLost, and the new holder's lease and journal are untouched."""
    monkeypatch.setenv("ERASURE_LEASE_TTL_S", "2")
    out = tmp_path / "out"
    child = _child(shared, "stall", out, ttl_s=2)
    try:
        epoch = int(_wait_line(out, "held", child).split()[1])
        child.send_signal(signal.SIGSTOP)
        with model_lock(shared, "m") as lease:
            assert lease.epoch == epoch + 1
            Journal(shared, "m").write(epoch, [1], ["mine"], [])
            (shared.home / "go").touch()
            child.send_signal(signal.SIGCONT)
            refused = json.loads(_wait_line(out, "refused", child).removeprefix("refused "))
            assert child.wait(30) == 0
            lease.check()  # still ours
            assert Journal(shared, "m").read()["requests"] == ["mine"]
            Journal(shared, "m").clear()
    finally:
        child.kill()
        child.wait()
    assert set(refused) == {"check", "check_lease", "commit", "publish", "journal"}
    assert all(reason and "taken over" in reason for reason in refused.values()), refused
    assert not list((shared.home / "models" / "m").glob("v*")) if (shared.home / "models" / "m").exists() else True


def test_lease_lost_is_retried_by_the_consumer_loop() -> None:
    """The unit is retried (not dead-lettered): the retry waits for the new holder and finds the work done."""
    from consumers.loop import is_corrupt_state, is_transient

    err = LeaseLost("lease on model m lost")
    assert is_transient(err) and not is_corrupt_state(err)


def test_lease_ttl_setting(shared: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    assert leases.lease_ttl_s(shared) == leases.DEFAULT_TTL_S
    shared.home.mkdir(parents=True, exist_ok=True)
    shared.config_file.write_text("[database]\nlease_ttl_s = 7.5\n")
    assert leases.lease_ttl_s(shared) == 7.5
    monkeypatch.setenv("ERASURE_LEASE_TTL_S", "3")
    assert leases.lease_ttl_s(shared) == 3
    monkeypatch.setenv("ERASURE_LEASE_TTL_S", "-1")
    with pytest.raises(BadInput, match="positive"):
        leases.lease_ttl_s(shared)


@pytest.fixture(params=["embedded", "shared"])
def either(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    if request.param == "shared":
        monkeypatch.setenv("ERASURE_DATABASE_URL", request.getfixturevalue("database_url"))
    else:
        monkeypatch.delenv("ERASURE_DATABASE_URL", raising=False)
    return Workspace(tmp_path / "home")


def _corrupt(ws: Workspace, journal: Journal, text: str) -> None:
    if journal.path is not None:
        journal.path.write_text(text)
    else:
        with leases.connect(ws.database_url()) as conn:
            conn.execute("INSERT INTO restore_journal VALUES ('m', %s) ON CONFLICT (model) DO UPDATE "
                         "SET intent = EXCLUDED.intent", (text,))


def test_journal_parity(either: Workspace) -> None:
    journal = Journal(either, "m")
    assert journal.read() is None and Journal.every(either) == []
    intent = journal.write(3, [1, 2], ["r1", "r2"], ["j1"])
    assert Journal(either, "m").read() == intent == {"base": 3, "shards": [1, 2], "requests": ["r1", "r2"], "jobs": ["j1"]}
    assert [j.name for j in Journal.every(either)] == ["m"]
    with model_lock(either, "m"):  # under the lease: fenced writes
        journal.write(4, [0], ["r3"], [])
        assert journal.read()["base"] == 4
        journal.clear()
    assert journal.read() is None
    journal.clear()  # clearing nothing is fine
    _corrupt(either, journal, '{"base": 2, "shard": 1, "requests": ["r1"], "jobs": []}')  # an earlier release's
    assert journal.read() == {"base": 2, "shards": [1], "requests": ["r1"], "jobs": []}
    _corrupt(either, journal, '{"base": 2, "requ')
    with pytest.raises(CorruptState, match="restore journal .* is unreadable"):
        journal.read()
    findings = [f for f in check_workspace(either) if f.store == "journal"]
    assert len(findings) == 1 and "unreadable" in findings[0].problem
