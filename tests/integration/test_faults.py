"""Fault injection against real services (issue: reliability): `erasure serve` processes killed
with SIGKILL at each stage boundary (`ledger.failpoints`), the broker and the MLflow server
stopped and restarted under load. After each: nothing lost (every request restored), nothing
duplicated (one ledger entry per stage, one event per stage in Kafka, one registered version
per local version), and `erasure verify` and `erasure ledger verify` pass.

The module runs its own broker and MLflow server (through `services.local`, as `erasure dev
up` does), so stopping them never disturbs other tests.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from consumers.topics import Topics
from ledger.failpoints import POINTS
from ledger.workspace import Workspace
from services import local
from tests.integration.pipeline_kit import (fresh_topics, 
    Events,
    ServeProcesses,
    entries,
    request,
    send,
    settled_once,
    trained_model,
    victims,
)
from unlearning.registry.mlflow import Registry

pytestmark = pytest.mark.services
runner = CliRunner()


@pytest.fixture(scope="module")
def own_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A broker and an MLflow server of this module's own (their dev.json lives in the returned workspace)."""
    ws = Workspace(tmp_path_factory.mktemp("fault-services"))
    local.up(ws)
    yield ws
    local.down(ws)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, own_services: Workspace) -> Iterator[tuple[Workspace, str]]:
    started = local.load_state(own_services)
    name = f"faults-{uuid.uuid4().hex[:8]}"
    with trained_model(tmp_path_factory.mktemp("faults"), started["kafka"].endpoint, started["mlflow"].endpoint,
                       name, subjects=40) as ws:
        yield ws, name


@pytest.fixture
def topics(model) -> Topics:
    return fresh_topics(os.environ["ERASURE_KAFKA"], "f")


@pytest.fixture
def events(topics: Topics) -> Iterator[Events]:
    with Events(os.environ["ERASURE_KAFKA"], topics) as reader:
        yield reader


@pytest.fixture
def served(model, topics: Topics, tmp_path: Path) -> Iterator[ServeProcesses]:
    """`erasure serve` processes on the trained model's home, each named after its role."""
    ws, _ = model
    processes = ServeProcesses(topics, tmp_path, lambda _: ws.home)
    yield processes
    processes.stop()


def two_requests(ws: Workspace, name: str) -> list:
    """One subject each of shards 1 and 2 (both keep shard 0 serving the exclusion)."""
    return [request(victims(ws, name, shard)[0], name) for shard in (1, 2)]


def assert_settled(ws: Workspace, name: str, reqs: list, events: Events) -> None:
    """Nothing lost, nothing duplicated, the certified alias on the newest restore, and the
    auditor's checks pass."""
    settled_once(ws, name, reqs, events)
    restored = max(e.version for req in reqs for e in events.of(req.request_id, "restored"))
    assert Registry(os.environ["MLFLOW_TRACKING_URI"]).resolve(name, "certified", None).version == restored
    verified = runner.invoke(app, ["verify", f"models:/{name}@certified"])
    assert verified.exit_code == 0, verified.output
    ledger = runner.invoke(app, ["ledger", "verify"])
    assert ledger.exit_code == 0, ledger.output


# (failpoint, the role whose process carries it): publishing happens in both roles (the
# exclusion in the planner's process, the restored version in the executor's); the exclusion purges
# the versions that held the records
KILLS = [("planner.before_commit", "planner"), ("excluder.before_commit", "planner"),
         ("publish.before_alias", "planner"), ("publish.before_alias", "executor"),
         ("executor.before_commit", "executor"), ("purge.before_local", "planner")]


def test_every_failpoint_is_exercised() -> None:
    assert {point for point, _ in KILLS} == POINTS


@pytest.mark.parametrize(("point", "role"), KILLS)
def test_kill_9_at_a_stage_boundary_loses_and_duplicates_nothing(point: str, role: str, model, served: ServeProcesses,
                                                                 topics: Topics, events: Events) -> None:
    ws, name = model
    for each in ("planner", "executor"):
        served.start(each, each, failpoint=point if each == role else None)
    reqs = two_requests(ws, name)
    send(ws, topics, *reqs)
    assert served.killed() == role
    served.start(role, role)  # the same instance name, no failpoint
    assert_settled(ws, name, reqs, events)


def test_broker_restart_mid_retrain(model, own_services: Workspace, served: ServeProcesses, topics: Topics,
                                    events: Events) -> None:
    ws, name = model
    served.start("planner", "planner")
    served.start("executor", "executor")
    reqs = two_requests(ws, name)
    send(ws, topics, *reqs)
    events.until(lambda _: bool(entries(ws, "request_excluded", request_id=reqs[0].request_id)))
    local.load_state(own_services)["kafka"].stop()  # mid-retrain or at its commit: retried, not lost
    time.sleep(3)
    local.up(own_services, ("kafka",))  # on its recorded port: the clients reconnect
    events.reopen()  # the test's own reader, not the services' consumers (pipeline_kit.Events.reopen)
    assert_settled(ws, name, reqs, events)
    for role, process in served.processes.items():
        assert process.poll() is None, served.log(role)[-2000:]  # they waited for the broker


def test_mlflow_restart_mid_publish(model, own_services: Workspace, served: ServeProcesses, topics: Topics,
                                    events: Events) -> None:
    ws, name = model
    served.start("planner", "planner")
    served.start("executor", "executor")
    local.load_state(own_services)["mlflow"].stop()
    reqs = two_requests(ws, name)
    send(ws, topics, *reqs)
    events.until(lambda _: all(events.has(r.request_id, "planned")(_) for r in reqs))
    time.sleep(4)  # the exclusion's publish fails and is retried with backoff...
    assert not any(events.of(r.request_id, "excluded") for r in reqs)
    local.up(own_services, ("mlflow",))  # ... until the registry is back, on its recorded port
    assert_settled(ws, name, reqs, events)
    for role, process in served.processes.items():
        assert process.poll() is None, served.log(role)[-2000:]
