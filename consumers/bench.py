"""`erasure bench pipeline`: planner throughput and end-to-end latency on the real broker.

Setup (not measured): a scratch workspace with the packaged MovieLens-100K (four records per
user), a tiny-base SISA model, certified and registered. Each request erases one training
record of a shard other than the first, so every exclusion leaves a shard to serve.

The planner and the executor run as `erasure serve` processes, as deployed.

1. Latency: with the planner and `executors` executors running (none: exclusions alone), `load` requests are sent at `rate` per
   second to the fresh model; for each, the time from its `requested_at` to its `excluded`
   (exclusion version built), `certified` (exclusion certified, registered, aliased) and
   `restored` (retrained version certified) events, as percentiles. (Each certificate carries
   every earlier erasure of its model forward, so publishing slows as a model's erasures add up.)
2. Throughput: `requests` more requests wait in the topic; a planner starts, and the clock
   runs from its joining the group to the moment the last request's `planned` event (sent in
   the transaction that also carries its jobs) is readable: requests from Kafka to ledger +
   jobs, per second.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from consumers.topics import Topics, ensure_topics
from ledger.errors import BadInput, ServiceError
from ledger.workspace import Workspace
from producers.producer import RequestProducer
from producers.schemas import ErasureRequest, OutcomeEvent, parse

SHARDS = 4
PER_USER = 4
WAIT_S = 600.0


@contextlib.contextmanager
def scratch_workspace(kafka: str, mlflow: str) -> Iterator[Workspace]:
    """A throw-away workspace (its own keys, ledger, records) on the given services."""
    home = Path(tempfile.mkdtemp(prefix="erasure-bench-"))
    saved = os.environ.pop("ERASURE_KEY_DIR", None)  # never the user's keys
    try:
        (home / "erasure.toml").write_text(f'[kafka]\nbootstrap = "{kafka}"\n\n[mlflow]\ntracking_uri = "{mlflow}"\n')
        yield Workspace(home)
    finally:
        if saved is not None:
            os.environ["ERASURE_KEY_DIR"] = saved
        shutil.rmtree(home, ignore_errors=True)


def _setup(ws: Workspace, name: str, epochs: float) -> dict[int, list[tuple[str, str]]]:
    """Records, keys, a certified model; returns shard -> training (subject, record id)s."""
    from ledger.keys import init_keys
    from unlearning.data import movielens
    from unlearning.data.records import RecordStore
    from unlearning.operations.build import train_model
    from unlearning.operations.publish import register_trained
    from unlearning.training.config import TrainConfig

    init_keys(ws.key_dir)
    with RecordStore.open(ws) as store:
        store.ingest(movielens.build_samples(movielens.load(), per_user=PER_USER))
        records = [(r.subject_id, r.record_id) for r in store.records("train")]
        by_shard = {s: [r for r in records if store.partition.shard(r[0], SHARDS) == s] for s in range(SHARDS)}
    config = TrainConfig(method="sisa", base="tiny", shards=SHARDS, slices=1, epochs=epochs, lr=0.01, batch_size=8,
                         seed=3)
    register_trained(ws, train_model(ws, name, config))
    return by_shard


class _Events:
    def __init__(self, bootstrap: str, topics: Topics) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(topics.events, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False, isolation_level="read_committed")
        self.first: dict[tuple[str, str], tuple[OutcomeEvent, float]] = {}  # (request, status) -> event, seen at

    def wait(self, request_ids: list[str], status: str, timeout_s: float = WAIT_S) -> float:
        """Wait until every request has an event of `status`; returns when the last one was read."""
        deadline = time.monotonic() + timeout_s
        while any((r, status) not in self.first for r in request_ids):
            if time.monotonic() > deadline:
                missing = sum((r, status) not in self.first for r in request_ids)
                raise TimeoutError(f"{missing} requests without a {status} event after {timeout_s:.0f} s")
            for batch in self.consumer.poll(timeout_ms=200).values():
                now = time.monotonic()
                for m in batch:
                    event: OutcomeEvent = parse(m.value, OutcomeEvent)  # type: ignore[assignment]
                    self.first.setdefault((event.request_id, event.status), (event, now))
        return max(self.first[(r, status)][1] for r in request_ids)

    def latencies(self, requests: list[ErasureRequest], status: str) -> list[float]:
        return [(self.first[(r.request_id, status)][0].at - r.requested_at).total_seconds() for r in requests]


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3),
            "max": round(max(values), 3)}


def _requests(records: list[tuple[str, str]], name: str) -> list[ErasureRequest]:
    return [ErasureRequest(kind="erase_records", subject_id=subject, record_ids=[record], model=name,
                           request_id=f"bench-{uuid.uuid4().hex[:16]}", requester="bench") for subject, record in records]


@contextlib.contextmanager
def _serving(ws: Workspace, kafka: str, mlflow: str, topics: Topics, role: str, window_s: float,
             instance: str = "bench-planner", members: int = 1) -> Iterator[None]:
    """`erasure serve --role ROLE` as its own process (as deployed), stopped with SIGTERM."""
    env = {**os.environ, "ERASURE_HOME": str(ws.home), "ERASURE_KAFKA": kafka, "MLFLOW_TRACKING_URI": mlflow}
    env.pop("ERASURE_KEY_DIR", None)
    log = ws.home / f"serve-{instance}.log"
    command = [sys.executable, "-c", "from cli.app import main; main()", "serve", "--role", role,
               "--prefix", topics.prefix, "--window", str(window_s), "--instance", instance]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        group = topics.planner_group if role == "planner" else topics.executor_group
        _wait_stable(kafka, group, members, process, log)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_stable(kafka: str, group: str, members: int, process: subprocess.Popen, log: Path) -> None:
    """Until the group is stable with `members` members: the new process is consuming."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            described = admin.describe_groups([group])[group]
            if described["group_state"] == "Stable" and len(described["members"]) >= members:
                return
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise ServiceError(f"erasure serve did not join {group}: {' | '.join(tail)}")
            time.sleep(0.05)
    finally:
        admin.close()


def run_pipeline_benchmark(kafka: str, mlflow: str, requests: int = 1500, load: int = 100, rate: float = 5.0,
                           window_s: float = 2.0, executors: int = 1, epochs: float = 0.1) -> dict:
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}.")
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with scratch_workspace(kafka, mlflow) as ws:
        started = time.monotonic()
        by_shard = _setup(ws, name, epochs)
        pool = [s for shard in range(1, SHARDS) for s in by_shard[shard]]
        random.Random(0).shuffle(pool)  # requests spread over the shards, the same on every run
        if len(pool) < requests + load:
            raise BadInput(f"only {len(pool)} training records outside shard 0: lower --requests/--load")
        setup_s = time.monotonic() - started
        ensure_topics(kafka, topics)
        events = _Events(kafka, topics)

        statuses = ("excluded", "certified", "restored")[:3 if executors else 2]
        with contextlib.ExitStack() as serving:
            serving.enter_context(_serving(ws, kafka, mlflow, topics, "planner", window_s))
            for i in range(executors):
                serving.enter_context(_serving(ws, kafka, mlflow, topics, "executor", window_s, f"bench-executor-{i}", i + 1))
            paced = []
            with RequestProducer(ws, bootstrap=kafka, topic=topics.requests) as producer:
                start = time.monotonic()
                for i, record in enumerate(pool[:load]):
                    time.sleep(max(0.0, start + i / rate - time.monotonic()))
                    paced += _requests([record], name)  # requested_at: now
                    producer.send(paced[-1:])
            for status in statuses:
                events.wait([r.request_id for r in paced], status)
        burst = _requests(pool[load:load + requests], name)
        with RequestProducer(ws, bootstrap=kafka, topic=topics.requests) as producer:
            producer.send(burst)
        with _serving(ws, kafka, mlflow, topics, "planner", window_s):
            t0 = time.monotonic()
            t1 = events.wait([r.request_id for r in burst], "planned")
        events.consumer.close()
        return {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "model": {"base": "tiny", "method": "sisa", "shards": SHARDS, "slices": 1, "epochs": epochs,
                      "records": sum(len(v) for v in by_shard.values()),
                      "data": f"MovieLens-100K, {PER_USER} records per user"},
            "setup_s": round(setup_s, 1),
            "planner": {"requests": requests, "seconds": round(t1 - t0, 3),
                        "requests_per_s": round(requests / (t1 - t0), 1)},
            "latency": {"requests": load, "rate_per_s": rate, "executors": executors, "executor_window_s": window_s,
                        "seconds": {status: _percentiles(events.latencies(paced, status)) for status in statuses}},
        }
