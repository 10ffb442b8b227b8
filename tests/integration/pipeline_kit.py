"""Helpers of the pipeline tests (real broker and MLflow): requests, events, ledger reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from consumers.topics import JOBS, Topics, ensure_topics
from ledger.failpoints import ENV as FAILPOINT_ENV
from ledger.log import open_ledger
from ledger.workspace import Workspace
from producers.producer import RequestProducer
from producers.schemas import ErasureRequest, OutcomeEvent, parse
from unlearning.data.records import RecordStore
from unlearning.registry.mlflow import Registry

SHARDS = 3
TIMEOUT_S = 120.0  # generous: the machine is shared; every wait polls and returns as soon as it can


def partition_of(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def victims(ws: Workspace, name: str, shard: int, count: int = 1) -> list[str]:
    """Subjects still in the record store whose records trained `shard`, first slice first (so
    their retrain is the whole shard)."""
    rows: dict[str, int] = {}
    with RecordStore.open(ws) as store:
        for record in store.records("train"):
            for p in store.provenance([record.commitment]):
                if p.model == name and p.version == 1 and p.shard == shard:
                    rows[record.subject_id] = min(rows.get(record.subject_id, 9), p.slice)
    return sorted(rows, key=lambda s: (rows[s], s))[:count]


def request(subject: str, name: str, **fields: object) -> ErasureRequest:
    return ErasureRequest(kind="erase_subject", subject_id=subject, model=name,
                          request_id=f"r-{uuid.uuid4().hex[:12]}", **fields)  # type: ignore[arg-type]


def send(ws: Workspace, topics: Topics, *requests: ErasureRequest) -> None:
    with RequestProducer(ws, topic=topics.requests) as producer:
        producer.send(requests)


class Events:
    """Outcome events of one prefix, read committed, as they come."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.reopen()

    def reopen(self) -> None:
        """Read the topic again from its start (everything seen is read anew, so counts stay
        exact): a group-less kafka-python 3 consumer may read nothing more after the broker
        restarts, although the services' consumers go on (seen in CI: every stage committed, this
        reader stuck)."""
        if getattr(self, "consumer", None) is not None:
            self.consumer.close()
        self.consumer = KafkaConsumer(self.topics.events, bootstrap_servers=self.bootstrap,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      isolation_level="read_committed")
        self.seen: list[OutcomeEvent] = []

    def until(self, done: Callable[[list[OutcomeEvent]], bool], timeout_s: float = TIMEOUT_S) -> list[OutcomeEvent]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            assert time.monotonic() < deadline, f"timed out; events so far: {[(e.request_id, e.status) for e in self.seen]}"
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.seen += [parse(m.value, OutcomeEvent) for m in batch]  # type: ignore[misc]
        return self.seen

    def read_for(self, seconds: float) -> list[OutcomeEvent]:
        """Read whatever arrives in the next `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.seen += [parse(m.value, OutcomeEvent) for m in batch]  # type: ignore[misc]
        return self.seen

    def of(self, request_id: str, status: str | None = None) -> list[OutcomeEvent]:
        return [e for e in self.seen if e.request_id == request_id and status in (None, e.status)]

    def has(self, request_id: str, status: str, count: int = 1) -> Callable[[list[OutcomeEvent]], bool]:
        return lambda _: len(self.of(request_id, status)) >= count

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "Events":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fresh_topics(bootstrap: str, letter: str = "t") -> Topics:
    """Topics under a prefix of their own (`letter` + 8 hex digits), jobs in 2 partitions, created on the broker."""
    topics = Topics(f"{letter}{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, partitions={JOBS: 2})
    return topics


def indexed(ws: Workspace) -> list[tuple[int, dict]]:
    """Every ledger entry with its index."""
    with open_ledger(ws) as ledger:
        return [(i, json.loads(e)) for i, e in ledger.entries()]


def entries(ws: Workspace, entry_type: str, **match: object) -> list[dict]:
    with open_ledger(ws) as ledger:
        found = [json.loads(e) for _, e in ledger.entries()]
    return [e for e in found if e["type"] == entry_type and all(e.get(k) == v for k, v in match.items())]


def erased_from(registry: Registry, name: str, version: int, subject_commitments: set[str]) -> bool:
    from unlearning.registry.mlflow import fetch

    with fetch(registry, registry.get(name, version)) as tmp:
        for leaves in (Path(tmp) / "bundle" / "components").glob("*/manifest.leaves"):
            data = leaves.read_bytes()
            if {data[i:i + 32].hex() for i in range(0, len(data), 32)} & subject_commitments:
                return False
    return True


@contextmanager
def trained_model(home: Path, kafka: str, mlflow: str, name: str, subjects: int = 30,
                  shards: int = SHARDS) -> Iterator[Workspace]:
    """A workspace in `home` on these services, with a certified tiny-base SISA model `name`
    (`shards` x 2 slices); its environment variables stay set while the context is open."""
    from typer.testing import CliRunner

    from cli.app import app
    from tests.conftest import make_records
    from unlearning.operations.publish import register_trained
    from unlearning.versions.store import ModelStore

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASURE_HOME", str(home / "home"))
        mp.delenv("ERASURE_KEY_DIR", raising=False)
        mp.setenv("ERASURE_KAFKA", kafka)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow)
        ws = Workspace.from_env()
        ws.key_dir.mkdir(parents=True)
        (ws.key_dir / "partition.key").write_bytes(b"fixed partition key for tests..!")
        records = home / "records.jsonl"
        records.write_text("".join(json.dumps(r.__dict__) + "\n" for r in make_records(subjects=subjects, per_subject=3)))
        assert runner.invoke(app, ["data", "ingest", str(records)]).exit_code == 0
        assert runner.invoke(app, ["keys", "init"]).exit_code == 0
        trained = runner.invoke(app, ["train", name, "--method", "sisa", "--shards", str(shards), "--slices", "2",
                                      "--base", "tiny", "--lr", "0.01", "--batch-size", "4", "--epochs", "1",
                                      "--seed", "3"])
        assert trained.exit_code == 0, trained.output
        register_trained(ws, ModelStore(ws).get(name, 1))
        yield ws


class ServeProcesses:
    """`erasure serve --role ROLE` processes, as deployed, by name (each logging to LOGS/NAME.log);
    SIGTERM at the end. `home(name)` gives the ERASURE_HOME a process runs on; `env` sets
    variables on top of this process's environment (None: unset)."""

    def __init__(self, topics: Topics, logs: Path, home: Callable[[str], Path],
                 env: dict[str, str | None] | None = None) -> None:
        self.topics, self.logs, self.home, self.env = topics, logs, home, env or {}
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, role: str, failpoint: str | None = None) -> subprocess.Popen:
        full = {**os.environ, "ERASURE_HOME": str(self.home(name))}
        for key, value in {**self.env, FAILPOINT_ENV: failpoint}.items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        command = [str(Path(sys.executable).parent / "erasure"), "serve", "--role", role, "--window", "0",
                   "--prefix", self.topics.prefix, "--instance", name]
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(command, env=full, stdout=log, stderr=subprocess.STDOUT)
        return self.processes[name]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def killed(self, timeout_s: float = TIMEOUT_S) -> str:
        """Wait until a process dies of SIGKILL; returns its name."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    assert code == -signal.SIGKILL, f"{name} exited {code}: {self.log(name)[-2000:]}"
                    return name
            time.sleep(0.05)
        raise AssertionError(f"no process reached the failpoint in {timeout_s:.0f} s")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            assert process.wait(TIMEOUT_S) in (0, -signal.SIGKILL), self.log(name)[-2000:]


FINAL_STAGES = ("received", "planned", "excluded", "certified", "restored")


def settled_once(ws: Workspace, name: str, reqs: list, events: Events, timeout_s: float = TIMEOUT_S) -> None:
    """Every request restored, nothing duplicated: one event per stage in Kafka, one ledger entry
    per stage, each version built once and registered once."""
    for req in reqs:  # a redelivered stage re-sends its events once a killed member's partitions move on
        events.until(lambda seen, r=req: all(events.has(r.request_id, s)(seen) for s in FINAL_STAGES), timeout_s)
    events.read_for(3.0)  # a duplicate would have time to show
    for req in reqs:
        statuses = Counter(e.status for e in events.of(req.request_id))
        assert statuses == dict.fromkeys(FINAL_STAGES, 1), statuses
        for stage in ("request_received", "request_planned", "request_excluded", "request_restored"):
            assert len(entries(ws, stage, request_id=req.request_id)) == 1, (stage, req.request_id)
    built = Counter(e["version"] for e in entries(ws, "version_built", model=name))
    assert built and max(built.values()) == 1, built
    registered = Counter(e["version"] for e in entries(ws, "model_registered", model=name))
    assert max(registered.values()) == 1, registered
    in_registry = Counter(v.local_version for v in Registry(os.environ["MLFLOW_TRACKING_URI"]).versions(name))
    assert max(in_registry.values()) == 1, in_registry
