"""The shared deployment across hosts with no shared filesystem (issue: scale-out): one planner
and two executors, each `erasure serve` with an ERASURE_HOME of its own, sharing only the
services — PostgreSQL (ledger, records, keys, journal, model leases), the S3 server (model
versions, certified bundles), Kafka and MLflow (on PostgreSQL and S3) — and the key directory
every host is given.

- 8 requests over 4 shards: every request restored exactly once, nothing built or registered
  twice, `erasure verify` and `erasure ledger verify` pass from a fourth home.
- `kill -9` of the executor holding the model's lease mid-retrain: the other executor takes
  the shard over (Kafka rebalance), waits for the lease to expire, settles the journalled
  restore and finishes it: one restored version, a later lease epoch.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from consumers.topics import Topics
from ledger.workspace import Workspace
from services import local, postgres, seaweed
from tests.integration.pipeline_kit import (fresh_topics, 
    TIMEOUT_S,
    Events,
    ServeProcesses,
    entries,
    partition_of,
    request,
    send,
    settled_once,
    trained_model,
    victims,
)

pytestmark = pytest.mark.services
runner = CliRunner()
SHARDS = 5  # shard 0 keeps serving the exclusions; the requests hit shards 1-4
LEASE_TTL_S = 6


@pytest.fixture(scope="module")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """PostgreSQL, SeaweedFS, Kafka and MLflow (on the first two) of this module's own, as
    `erasure dev up --shared` starts them (their dev.json is in this workspace)."""
    ws = Workspace(tmp_path_factory.mktemp("shared-services"))
    local.up_shared(ws)
    yield ws
    local.down(ws, purge=True)


@pytest.fixture(scope="module")
def shared_services(services_home: Workspace) -> dict[str, str]:
    """The environment every host gets: the services, a database and a bucket prefix of its own."""
    started = local.load_state(services_home)
    tag = uuid.uuid4().hex[:8]
    postgres.create_database(started["postgres"].endpoint, f"pipe_{tag}_keys")
    return {
        "ERASURE_DATABASE_URL": postgres.create_database(started["postgres"].endpoint, f"pipe_{tag}"),
        "ERASURE_OBJECT_STORE": seaweed.url(services_home, started["s3"].port, prefix=f"pipe-{tag}"),
        "ERASURE_KAFKA": started["kafka"].endpoint,
        "MLFLOW_TRACKING_URI": started["mlflow"].endpoint,
        "ERASURE_LEASE_TTL_S": str(LEASE_TTL_S),
    }


def _spread_name() -> str:
    """A model name whose shards 1-4 fall two on each of the jobs topic's two partitions, so both
    executors own work."""
    while True:
        name = f"shared-{uuid.uuid4().hex[:6]}"
        if sorted(partition_of(f"{name}/{s}", 2) for s in range(1, SHARDS)) == [0, 0, 1, 1]:
            return name


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, shared_services: dict[str, str]) -> Iterator[tuple[Workspace, str]]:
    name = _spread_name()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in shared_services.items():
            mp.setenv(key, value)
        with trained_model(tmp_path_factory.mktemp("trainer"), shared_services["ERASURE_KAFKA"],
                           shared_services["MLFLOW_TRACKING_URI"], name, subjects=40, shards=SHARDS) as ws:
            yield ws, name


def host(tmp_path: Path, trainer: Workspace, role: str) -> Path:
    """An ERASURE_HOME of its own, given only the key directory (keys are distributed, state is not)."""
    home = tmp_path / role
    if not (home / "keys").exists():
        shutil.copytree(trainer.key_dir, home / "keys")
    return home


@pytest.fixture
def topics(model) -> Topics:
    return fresh_topics(os.environ["ERASURE_KAFKA"], "s")


@pytest.fixture
def events(topics: Topics) -> Iterator[Events]:
    with Events(os.environ["ERASURE_KAFKA"], topics) as reader:
        yield reader


@pytest.fixture
def hosts(model, topics: Topics, tmp_path: Path) -> Iterator[ServeProcesses]:
    """`erasure serve` processes, each on an ERASURE_HOME of its own (its name), with the keys copied in."""
    ws, _ = model
    running = ServeProcesses(topics, tmp_path, lambda name: host(tmp_path, ws, name), env={"ERASURE_KEY_DIR": None})
    yield running
    running.stop()


def settled(ws: Workspace, name: str, reqs: list, events: Events) -> None:
    settled_once(ws, name, reqs, events, timeout_s=2 * TIMEOUT_S)


def audited(tmp_path: Path, trainer: Workspace, name: str) -> None:
    """An auditor's home of its own (keys only) verifies the certified version and the ledger."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASURE_HOME", str(host(tmp_path, trainer, "auditor")))
        mp.delenv("ERASURE_KEY_DIR", raising=False)
        verified = runner.invoke(app, ["verify", f"models:/{name}@certified"])
        assert verified.exit_code == 0, verified.output
        ledger = runner.invoke(app, ["ledger", "verify"])
        assert ledger.exit_code == 0, ledger.output


def no_shared_state_on_disk(*homes: Path) -> None:
    """The hosts' homes hold no ledger or record store (those are in PostgreSQL), and every model
    version they hold is a copy of the object store's (marked)."""
    from unlearning.versions.layout import SYNCED_MARK

    for home in homes:
        assert not (home / "ledger.db").exists() and not (home / "records.db").exists(), home
        for version in (home / "artifacts" / "models").glob("*/v*"):
            assert (version / SYNCED_MARK).exists(), version


def test_one_planner_two_executors_on_separate_homes_restore_every_request_once(model, hosts: ServeProcesses, topics: Topics,
                                                                                events: Events, tmp_path: Path) -> None:
    ws, name = model
    hosts.start("planner", "planner")
    hosts.start("executor-1", "executor")
    hosts.start("executor-2", "executor")
    reqs = [request(subject, name) for shard in range(1, SHARDS) for subject in victims(ws, name, shard, count=2)]
    assert len(reqs) == 8
    send(ws, topics, *reqs)
    settled(ws, name, reqs, events)

    held = {n: sorted(p.name for p in (hosts.home(n) / "artifacts" / "models" / name).glob("v*"))
            for n in ("executor-1", "executor-2")}
    assert all(held.values()), held  # both executors built or read versions of their own shards
    no_shared_state_on_disk(*(hosts.home(n) for n in ("planner", "executor-1", "executor-2")))
    audited(tmp_path, ws, name)


def _lease(name: str) -> tuple[str | None, int]:
    import psycopg

    with psycopg.connect(os.environ["ERASURE_DATABASE_URL"]) as db:
        row = db.execute("SELECT holder, epoch FROM model_leases WHERE model = %s", (name,)).fetchone()
    return (row[0], row[1]) if row else (None, 0)


def _journalled(name: str) -> bool:
    import psycopg

    with psycopg.connect(os.environ["ERASURE_DATABASE_URL"]) as db:
        return db.execute("SELECT 1 FROM restore_journal WHERE model = %s", (name,)).fetchone() is not None


def test_kill_9_of_the_lease_holder_mid_retrain_the_other_executor_takes_over(model, hosts: ServeProcesses, topics: Topics,
                                                                              events: Events) -> None:
    ws, name = model
    hosts.start("planner", "planner")
    executors = {n: hosts.start(n, "executor") for n in ("executor-1", "executor-2")}
    pids = {str(p.pid): n for n, p in executors.items()}
    [req] = [request(victims(ws, name, shard)[0], name) for shard in (1,)]
    send(ws, topics, req)

    deadline = time.monotonic() + 2 * TIMEOUT_S
    victim = None
    while victim is None:  # an executor holds the lease with the restore journalled: mid-retrain
        assert time.monotonic() < deadline, "no executor started the retrain"
        holder, epoch = _lease(name)
        owner = pids.get(holder.split(":")[1]) if holder else None
        if owner and _journalled(name):
            victim, killed_epoch = owner, epoch
        time.sleep(0.05)
    executors[victim].kill()
    assert executors[victim].wait(30) == -signal.SIGKILL

    settled(ws, name, [req], events)
    holder, epoch = _lease(name)
    assert epoch > killed_epoch  # the survivor took the lease over
    [restored] = events.of(req.request_id, "restored")
    built = [e for e in entries(ws, "version_built", model=name) if e["version"] == restored.version]
    assert len(built) == 1
    assert not _journalled(name)
    survivor = next(n for n in executors if n != victim)
    assert "restored" in hosts.log(survivor) or (hosts.home(survivor) / "artifacts" / "models" / name).exists()


def test_cli_forget_against_the_shared_deployment(model, tmp_path: Path) -> None:
    """`erasure forget` from a host of its own: the versions that saw the subject leave the object
    store (and the registry); an auditor's home verifies the result."""
    import json

    from unlearning.data.records import RecordStore
    from unlearning.versions.remote import RemoteVersions

    ws, name = model
    [subject] = victims(ws, name, 2)
    with RecordStore.open(ws) as store:
        erased = {c.hex() for c in store.commitments_of(subject)}
    remote = RemoteVersions(os.environ["ERASURE_OBJECT_STORE"])
    before = remote.versions(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASURE_HOME", str(host(tmp_path, ws, "cli")))
        mp.delenv("ERASURE_KEY_DIR", raising=False)
        forgot = runner.invoke(app, ["forget", name, "--subject", subject, "--json"])
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    assert out["commitments"] == len(erased) and out["restored_version"] > out["excluded_version"]
    assert out["purged_versions"] and set(out["purged_versions"]) <= set(before)
    after = remote.versions(name)
    assert not set(out["purged_versions"]) & set(after) and out["restored_version"] in after
    for number in after:  # no version left in the store holds the subject's records
        for files in remote.index(name, number)["components"].values():
            leaves = remote.objects.get_blob(files["manifest.leaves"], f"models/{name}/blobs/sha256/")
            assert not {leaves[i:i + 32].hex() for i in range(0, len(leaves), 32)} & erased
    audited(tmp_path, ws, name)



def test_postgres_and_s3_restarts_mid_pipeline_lose_and_duplicate_nothing(model, services_home: Workspace,
                                                                          hosts: ServeProcesses, topics: Topics,
                                                                          events: Events, tmp_path: Path) -> None:
    """PostgreSQL stopped while a retrain runs, then the S3 server: the stages that need them wait
    (transient errors, retried) and every request still ends restored exactly once."""
    ws, name = model
    hosts.start("planner", "planner")
    hosts.start("executor-1", "executor")
    reqs = [request(victims(ws, name, shard)[0], name) for shard in (3, 4)]
    send(ws, topics, *reqs)
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while not _journalled(name):  # a retrain has started
        assert time.monotonic() < deadline, "no retrain started"
        time.sleep(0.05)
    for service in ("postgres", "s3"):
        local.load_state(services_home)[service].stop()
        time.sleep(3)
        local.up(services_home, (service,))  # on its recorded port: the clients reconnect
    settled(ws, name, reqs, events)
    audited(tmp_path, ws, name)
