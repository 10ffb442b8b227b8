"""The event pipeline against the real broker and MLflow server: planner and executors.

One SISA model (3 shards x 2 slices, tiny base) is trained for the module; each test erases
fresh subjects of it, through its own topics and consumer groups (a prefix per test), so the
tests share the training but not their messages.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from typer.testing import CliRunner

from cli.app import app
from consumers.serve import Service
from consumers.topics import Topics
from ledger.workspace import Workspace
from producers.producer import subject_key
from producers.schemas import ErasureRequest
from tests.integration.pipeline_kit import (fresh_topics, TIMEOUT_S, Events, entries, erased_from, indexed, partition_of, request,
                                            send, trained_model, victims)
from unlearning.data.records import RecordStore
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.certify import bundle_dir, certified_predicate
from unlearning.operations.deadlines import iso
from unlearning.registry.mlflow import Registry
from unlearning.versions.store import ModelStore

pytestmark = pytest.mark.services
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mlflow_uri: str) -> Iterator[tuple[Workspace, str]]:
    """A workspace with a certified SISA model; its name puts shards 0 and 1 on different
    partitions of a 2-partition jobs topic (for the test with two executors)."""
    name = next(n for n in (f"pipe-{uuid.uuid4().hex[:8]}" for _ in range(64))
                if partition_of(f"{n}/0", 2) != partition_of(f"{n}/1", 2))
    with trained_model(tmp_path_factory.mktemp("pipeline"), kafka_bootstrap, mlflow_uri, name) as ws:
        yield ws, name


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    return fresh_topics(kafka_bootstrap)


@pytest.fixture
def events(kafka_bootstrap: str, topics: Topics) -> Iterator[Events]:
    with Events(kafka_bootstrap, topics) as reader:
        yield reader


@pytest.fixture
def serving(model, topics: Topics, kafka_bootstrap: str) -> Iterator[Callable[..., Service]]:
    """Start in-process services (planner, executors); all stopped gracefully at the end."""
    started: list[Service] = []

    def start(role: str = "all", instance: str | None = None, **options: object) -> Service:
        ws, _ = model
        service = Service(ws, role, topics, window_s=0.5, instance=instance or f"test-{uuid.uuid4().hex[:6]}",
                          bootstrap=kafka_bootstrap, **options).start()  # type: ignore[arg-type]
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
    for service in started:
        assert service.wait(TIMEOUT_S) and not service.errors, service.errors


def test_request_is_excluded_then_restored(model, serving, topics: Topics, events: Events, mlflow_uri: str) -> None:
    ws, name = model
    subject = victims(ws, name, 1)[0]
    with RecordStore.open(ws) as store:
        commitments = {c.hex() for c in store.commitments_of(subject)}
    serving("all")
    req = request(subject, name, deadline=datetime.now(UTC) + timedelta(days=7))  # earlier than GDPR's month: kept
    send(ws, topics, req)
    events.until(events.has(req.request_id, "restored"))

    statuses = [e.status for e in events.of(req.request_id)]
    assert statuses == ["received", "planned", "excluded", "certified", "restored"]
    certified, restored = events.of(req.request_id, "certified")[0], events.of(req.request_id, "restored")[0]
    assert events.of(req.request_id, "planned")[0].shards == [1] and restored.shards == [1]
    assert restored.version > certified.version and certified.certificate_sha256 != restored.certificate_sha256
    registry = Registry(mlflow_uri)
    assert registry.resolve(name, "certified", None).version == restored.version
    for version in (certified.version, restored.version):
        assert erased_from(registry, name, version, commitments)
    with RecordStore.open(ws) as store:
        assert subject not in store.subjects()

    verified = runner.invoke(app, ["verify", f"models:/{name}@certified", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["envelope_sha256"] == restored.certificate_sha256

    status = runner.invoke(app, ["status", req.request_id, "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["stage"] == "restored" and report["deadline_met"] is True
    assert report["deadline"] == iso(req.deadline)  # type: ignore[arg-type]
    assert report["deadline_policy"]["set_by"] == "sender" and report["deadline_policy"]["policy"] == "GDPR Art. 17"
    assert events.of(req.request_id, "received")[0].deadline == datetime.fromisoformat(report["deadline"])
    info = report["models"][name]
    for stage in (info["excluded"], info["restored"]["1"]):  # both certificates name the request
        predicate = certified_predicate(bundle_dir(ws, name, stage["local_version"]), ws)
        assert req.request_id in {e.requestId for e in predicate.erasures}
    assert info["excluded"]["version"] == certified.version
    assert info["excluded"]["certificate_sha256"] == certified.certificate_sha256
    assert info["restored"]["1"]["version"] == restored.version
    assert report["stages"]["received"] <= report["stages"]["planned"] <= info["excluded"]["certified_at"] \
        <= info["restored"]["1"]["at"]
    human = runner.invoke(app, ["status", req.request_id])
    assert human.exit_code == 0 and "restored" in human.stdout and subject not in human.stdout
    assert runner.invoke(app, ["status", "no-such-request"]).exit_code == 2

    # the same model, another shard, through `erasure forget`: the same stages with the same
    # entries, naming the versions and certificates the command made
    other = victims(ws, name, 2)[0]
    forgot = runner.invoke(app, ["forget", name, "--subject", other, "--json"])
    assert forgot.exit_code == 0, forgot.output
    out = json.loads(forgot.stdout)
    cli = json.loads(runner.invoke(app, ["status", out["request_id"], "--json"]).stdout)
    assert cli["stage"] == "restored" and set(cli) == set(report)
    assert cli["stages"]["received"] <= cli["stages"]["planned"]
    cli_info = cli["models"][name]
    assert cli_info["shards"] == [2] and set(cli_info) == set(info)
    assert cli_info["excluded"]["version"] == out["excluded_version"]
    assert cli_info["restored"]["2"]["version"] == out["restored_version"]
    assert cli_info["restored"]["2"]["executor"] == "cli"
    assert cli["stages"]["planned"] <= cli_info["excluded"]["certified_at"] <= cli_info["restored"]["2"]["at"]
    for stage in (cli_info["excluded"], cli_info["restored"]["2"]):
        registered = registry.get(name, stage["version"])
        assert stage["certificate_sha256"] == registered.certificate_sha256
        predicate = certified_predicate(bundle_dir(ws, name, stage["local_version"]), ws)
        assert out["request_id"] in {e.requestId for e in predicate.erasures}
    assert runner.invoke(app, ["forget", name, "--subject", other, "--json"]).exit_code == 0  # a repeat: no new stage
    assert json.loads(runner.invoke(app, ["status", out["request_id"], "--json"]).stdout) == cli


def test_rectification_with_an_approximate_update_first(model, serving, topics: Topics, events: Events,
                                                         mlflow_uri: str) -> None:
    """v1.1 through Kafka: the planner replaces the record's content and hands an APPROXIMATE
    influence update to the approximator, off the exact path: the jobs go out, the exclusion is
    certified, and only then is the update (never aliased) published; the retrain on the
    corrected record supersedes it. The executor starts once the update is out: with both at
    once the retrain may come first, and the update is then skipped (a unit test covers that)."""
    ws, name = model
    subject, other = victims(ws, name, 0, count=2)
    with RecordStore.open(ws) as store:
        old = next(r for r in store.records("train") if r.subject_id == subject)
        foreign = next(r for r in store.records("train") if r.subject_id == other)
    corrected = "No" if old.answer == "Yes" else "Yes"
    serving("planner", solver=SolverSettings())  # the defaults publish an approximate version
    req = ErasureRequest(kind="rectify_record", subject_id=subject, record_ids=[old.record_id], answer=corrected,
                         approximate=True, model=name, request_id=f"r-{uuid.uuid4().hex[:12]}")
    wrong = ErasureRequest(kind="rectify_record", subject_id=subject, record_ids=[foreign.record_id], answer="Yes",
                           model=name, request_id=f"r-{uuid.uuid4().hex[:12]}")
    too_long = ErasureRequest(kind="rectify_record", subject_id=other, record_ids=[foreign.record_id],
                              prompt="movie " * 3000, model=name, request_id=f"r-{uuid.uuid4().hex[:12]}")
    assert req.schema_ == wrong.schema_ == too_long.schema_ == "erasure.request/v1.1"
    send(ws, topics, req, wrong, too_long)
    events.until(lambda seen: events.has(req.request_id, "approximate")(seen) and all(
        events.has(r.request_id, "rejected")(seen) for r in (wrong, too_long)))
    [approximate] = events.of(req.request_id, "approximate")
    assert approximate.version is not None, approximate.reason
    serving("executor")
    events.until(events.has(req.request_id, "restored"))

    statuses = [e.status for e in events.of(req.request_id)]  # in the order of the events partition
    assert statuses[:2] == ["received", "planned"] and statuses[-1] == "restored"  # the planner's batch first
    assert sorted(statuses[2:-1]) == ["approximate", "certified", "excluded"]
    # the ledger's order: the exclusion certificate, then the approximate version's registration
    logged = indexed(ws)
    [excluded_at] = [i for i, e in logged if e["type"] == "request_excluded" and e["request_id"] == req.request_id]
    [registered_at] = [i for i, e in logged if e["type"] == "model_registered" and e["model"] == name
                       and e["registry_version"] == approximate.version]
    [approximated_at] = [i for i, e in logged
                         if e["type"] == "request_approximated" and e["request_id"] == req.request_id]
    [planned_at] = [i for i, e in logged if e["type"] == "request_planned" and e["request_id"] == req.request_id]
    assert planned_at < excluded_at < registered_at < approximated_at
    at = dict(logged)
    [built] = [e for e in at.values() if e["type"] == "version_built" and e["model"] == name
               and e["version"] == at[approximated_at]["version"]]
    assert built["kind"] == "influence_update" and built["parent_version"] == at[excluded_at]["version"]

    restored = events.of(req.request_id, "restored")[0]
    assert approximate.version < restored.version
    registry = Registry(mlflow_uri)
    assert registry.resolve(name, "certified", None).version == restored.version
    assert [e["registry_version"] for e in entries(ws, "version_superseded", model=name)
            if req.request_id in e["requests"]] == [approximate.version]

    with RecordStore.open(ws) as store:
        new = store.record(old.record_id)
        assert store.record(foreign.record_id) == foreign  # the rejected requests changed nothing
    assert (new.prompt, new.answer) == (old.prompt, corrected) and new.commitment != old.commitment
    assert erased_from(registry, name, restored.version, {old.commitment.hex()})
    assert not erased_from(registry, name, restored.version, {new.commitment.hex()})  # retrained on the correction
    [received] = entries(ws, "request_received", request_id=req.request_id)
    assert received["kind"] == "rectify_record" and received["fields"] == ["answer"]
    assert received["commitments"] == [old.commitment.hex()] and subject not in json.dumps(received)
    status = json.loads(runner.invoke(app, ["status", req.request_id, "--json"]).stdout)
    assert status["kind"] == "rectify_record" and status["stage"] == "restored"
    assert status["models"][name]["approximate"]["version"] == approximate.version
    assert status["models"][name]["approximate"]["certificate_sha256"] == approximate.certificate_sha256
    [rejected] = events.of(wrong.request_id, "rejected")
    assert "does not belong to subject" in rejected.reason and subject not in rejected.reason
    [rejected] = events.of(too_long.request_id, "rejected")  # the retrain could not have used it
    assert "more than max_length" in rejected.reason and not entries(ws, "request_received", request_id=too_long.request_id)

    send(ws, topics, req)  # redelivered: the old content is gone, so no second approximate update
    events.until(events.has(req.request_id, "planned", count=2))
    assert len(events.of(req.request_id, "approximate")) == 1
    assert len(entries(ws, "request_approximated", request_id=req.request_id)) == 1
    assert len(entries(ws, "request_received", request_id=req.request_id)) == 1
    with RecordStore.open(ws) as store:
        assert store.record(old.record_id) == new


def test_same_request_twice_has_one_effect(model, serving, topics: Topics, events: Events, mlflow_uri: str) -> None:
    ws, name = model
    req = request(victims(ws, name, 2)[0], name)
    serving("all")
    send(ws, topics, req)
    events.until(events.has(req.request_id, "restored"))
    registry = Registry(mlflow_uri)
    registered_before = [r.version for r in registry.versions(name)]
    local_before = ModelStore(ws).versions(name)

    send(ws, topics, req)  # the same request, delivered again
    events.until(events.has(req.request_id, "planned", count=2))
    assert len(entries(ws, "request_received", request_id=req.request_id)) == 1
    assert len(entries(ws, "request_excluded", request_id=req.request_id)) == 1
    assert len(entries(ws, "request_restored", request_id=req.request_id)) == 1
    assert ModelStore(ws).versions(name) == local_before
    assert [r.version for r in registry.versions(name)] == registered_before


def test_poison_messages_go_to_the_dlq_and_the_requests_around_them_are_handled(
        model, serving, topics: Topics, events: Events, kafka_bootstrap: str) -> None:
    """A tombstone, undecodable bytes and malformed requests between valid requests on one
    partition: each bad one is on the DLQ with its reason and rejected in the ledger, and the
    valid ones behind them are planned within a bounded time (the planner is never stuck)."""
    ws, name = model
    first, good = (request(s, name) for s in victims(ws, name, 0, count=2))
    unknown = request("nobody-at-all", name)
    bad = [None, b"\xff\xfe\x00 undecodable", b"not json", b'{"schema": "erasure.request/v9", "request_id": "bad-schema"}',
           json.dumps({"schema": "erasure.request/v1", "request_id": "bad-fields", "kind": "erase_subject"}).encode()]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for req, value in [(first, first.to_bytes())] + [(None, v) for v in bad] + [(r, r.to_bytes()) for r in (unknown, good)]:
        producer.send(topics.requests, key=subject_key(req.subject_id) if req else b"poison", value=value, partition=0)
    producer.flush()
    producer.close()
    started = time.monotonic()
    serving("planner")
    events.until(lambda seen: all(events.has(r.request_id, "planned")(seen) for r in (first, good)), timeout_s=60)
    assert time.monotonic() - started < 60
    for req in (first, good):
        assert entries(ws, "request_planned", request_id=req.request_id)
    events.until(events.has(good.request_id, "certified"))

    assert events.has("bad-schema", "rejected")(events.seen) and events.has("bad-fields", "rejected")(events.seen)
    assert "unknown schema 'erasure.request/v9'" in events.of("bad-schema")[0].reason  # type: ignore[operator]
    assert "subject_id" in events.of("bad-fields")[0].reason  # type: ignore[operator]
    reason = events.of(unknown.request_id, "rejected")[0].reason
    assert reason is not None and "unknown subject with tag" in reason and "nobody-at-all" not in reason
    by_offset = {e.request_id: e.reason for e in events.seen if e.status == "rejected" and e.request_id.startswith("kafka:")}
    source = f"kafka:{topics.requests}/0"
    assert set(by_offset) == {f"{source}/1", f"{source}/2", f"{source}/3"}
    assert "the value is null" in by_offset[f"{source}/1"]  # type: ignore[operator]
    assert "not valid JSON" in by_offset[f"{source}/2"] and "not valid JSON" in by_offset[f"{source}/3"]  # type: ignore[operator]

    dlq = KafkaConsumer(topics.dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                        isolation_level="read_committed", consumer_timeout_ms=5000)
    dead = list(dlq)
    dlq.close()
    assert [m.value for m in dead] == bad  # in order; the unknown subject is valid input: no DLQ copy
    assert [dict(m.headers)["erasure.source"] for m in dead] == [f"{topics.requests}/0/{i}".encode() for i in range(1, 6)]
    assert all(dict(m.headers)["erasure.reason"] for m in dead)
    rejected = {e["request_id"]: e for e in entries(ws, "request_rejected")}
    assert {"bad-schema", "bad-fields", unknown.request_id, *by_offset} <= set(rejected)
    assert rejected["bad-fields"]["kafka"]["topic"] == topics.requests
    assert rejected[f"{source}/1"]["reason"] == by_offset[f"{source}/1"]


def test_executor_killed_mid_retrain_completes_the_job_once(model, serving, topics: Topics, events: Events,
                                                            tmp_path: Path, mlflow_uri: str) -> None:
    ws, name = model
    serving("planner")
    command = [str(Path(sys.executable).parent / "erasure"), "serve", "--role", "executor", "--window", "0",
               "--prefix", topics.prefix, "--instance", "killed-executor"]
    log = tmp_path / "executor.log"
    executor = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        req = request(victims(ws, name, 1)[0], name)
        send(ws, topics, req)
        events.until(events.has(req.request_id, "certified"))
        excluded = ModelStore(ws).versions(name)[-1]
        staging = ModelStore(ws).root / name / f".staging-v{excluded + 1}-{executor.pid}"
        deadline = time.monotonic() + TIMEOUT_S
        while not staging.exists():  # the draft of the restored version: the retrain is running
            assert executor.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        executor.send_signal(signal.SIGKILL)
        executor.wait(30)
        assert ModelStore(ws).versions(name)[-1] == excluded  # killed before the version was made

        executor = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        events.until(events.has(req.request_id, "restored"))
    finally:
        executor.send_signal(signal.SIGTERM)
        assert executor.wait(60) == 0, log.read_text()
    assert ModelStore(ws).versions(name)[-1] == excluded + 1
    assert not staging.exists()
    assert len(entries(ws, "request_restored", request_id=req.request_id)) == 1
    assert len(entries(ws, "version_built", model=name, version=excluded + 1)) == 1
    assert not entries(ws, "version_built", model=name, version=excluded + 2)
    restored = events.of(req.request_id, "restored")[0]
    assert Registry(mlflow_uri).resolve(name, "certified", None).version == restored.version
    assert "job " in log.read_text() and "restored v" in log.read_text()


def test_two_executors_split_the_shards(model, serving, topics: Topics, events: Events) -> None:
    ws, name = model
    first, second = serving("executor", "exec-a"), serving("executor", "exec-b")
    deadline = time.monotonic() + TIMEOUT_S
    while not (len(first.assignment()["executor"]) == 1 and len(second.assignment()["executor"]) == 1):
        assert time.monotonic() < deadline, (first.assignment(), second.assignment())
        time.sleep(0.1)
    serving("planner")
    reqs = [request(victims(ws, name, shard)[0], name) for shard in (0, 1)]
    send(ws, topics, *reqs)
    for req in reqs:
        events.until(events.has(req.request_id, "restored"))

    by_shard = {e["shard"]: e["executor"] for req in reqs for e in entries(ws, "request_restored", request_id=req.request_id)}
    assert set(by_shard) == {0, 1}
    assert by_shard[0] != by_shard[1] and set(by_shard.values()) == {"exec-a", "exec-b"}
