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

Shared mode (`shared`): the same workload runs twice in one call, first on the embedded backends
(SQLite files, local artifacts), then on the shared ones (the ledger, records, journal and model
leases in PostgreSQL, model versions and certified bundles in an S3 object store), each in a
fresh scratch workspace with fresh topics and a fresh model, on the same Kafka and MLflow. The
shared run gets databases of its own (NAME and NAME_keys) on the PostgreSQL server and a prefix
of its own in the object store, removed afterwards; for a backend not given, a throwaway
PostgreSQL / SeaweedFS is started in a temporary ERASURE_HOME (as `erasure dev up --shared`
starts them) and stopped and purged afterwards. The result keeps the embedded figures where the
default run puts them, adds `shared` (the same figures) and `comparison` (planner requests/s and
latency percentiles side by side, ratio = shared / embedded).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from consumers.topics import Topics, ensure_topics
from ledger.errors import BadInput, ServiceError
from ledger.workspace import Workspace
from producers.producer import RequestProducer
from producers.schemas import ErasureRequest, OutcomeEvent, parse

SHARDS = 4
PER_USER = 4
WAIT_S = 600.0


# never the user's keys, database or object store: the scratch workspace's erasure.toml decides
_MASKED = ("ERASURE_KEY_DIR", "ERASURE_DATABASE_URL", "ERASURE_KEYS_DATABASE_URL", "ERASURE_OBJECT_STORE")


@dataclass(frozen=True)
class SharedBackends:
    """Where one shared run keeps its state: a database (its data keys in DATABASE_keys on the same
    server) and an object store prefix, both its own."""

    database: str  # URL
    object_store: str  # URL
    started: tuple[str, ...]  # the services started for this run ("postgres", "s3")


@contextlib.contextmanager
def scratch_workspace(kafka: str, mlflow: str, shared: SharedBackends | None = None) -> Iterator[Workspace]:
    """A throw-away workspace (its own keys, ledger, records) on the given services; with `shared`,
    its ledger, records, journal and leases in that database and its versions in that object store."""
    home = Path(tempfile.mkdtemp(prefix="erasure-bench-"))
    saved = {name: os.environ.pop(name) for name in _MASKED if name in os.environ}
    try:
        config = f'[kafka]\nbootstrap = "{kafka}"\n\n[mlflow]\ntracking_uri = "{mlflow}"\n'
        if shared is not None:  # JSON strings are TOML basic strings
            config += (f"\n[database]\nurl = {json.dumps(shared.database)}\n"
                       f"\n[object_store]\nurl = {json.dumps(shared.object_store)}\n")
        (home / "erasure.toml").write_text(config)
        yield Workspace(home)
    finally:
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


def _under(url: str, prefix: str) -> str:
    """The object store URL of `prefix` below `url` (s3://BUCKET[/P]?... or a directory)."""
    if url.startswith("s3://"):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{prefix}"))
    if url.startswith("file://"):
        return f"{url.rstrip('/')}/{prefix}"
    return str(Path(url) / prefix)


def describe_object_store(url: str) -> str:
    """An object store URL without its query (credentials file, profile): s3://BUCKET/PREFIX at ENDPOINT."""
    if not url.startswith("s3://"):
        return url
    parts = urlsplit(url)
    endpoint = next((v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if k == "endpoint"), "")
    return urlunsplit(parts._replace(query="")) + (f" at {endpoint}" if endpoint else "")


def _create_databases(server: str, name: str) -> str:
    import psycopg

    from ledger.postgres_store import describe
    from services.postgres import create_database

    try:
        url = create_database(server, name)
        create_database(server, f"{name}_keys")
    except psycopg.Error as err:
        _drop_databases(server, name)
        first = str(err).strip().splitlines()[:1]
        raise ServiceError(f"cannot create the scratch databases {name} and {name}_keys on {describe(server)} "
                           f"(the role needs CREATEDB): {' '.join(first)}") from None
    return url


def _drop_databases(server: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with contextlib.suppress(psycopg.Error), psycopg.connect(server, dbname="postgres", autocommit=True) as db:
        for database in (name, f"{name}_keys"):
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _purge_objects(url: str) -> None:
    from ledger.objects import LocalObjects, open_object_store

    store = open_object_store(url)
    for key in store.list():
        store.delete(key)
    if isinstance(store, LocalObjects):
        shutil.rmtree(store.root, ignore_errors=True)


@contextlib.contextmanager
def shared_backends(database_url: str | None = None, object_store_url: str | None = None) -> Iterator[SharedBackends]:
    """Fresh databases on the PostgreSQL server `database_url` names and a fresh prefix of
    `object_store_url`, removed afterwards; for one not given, a throwaway PostgreSQL / SeaweedFS
    started in a temporary ERASURE_HOME, stopped and purged afterwards."""
    from services import local

    with contextlib.ExitStack() as cleanup:
        missing = tuple(name for name, given in (("postgres", database_url), ("s3", object_store_url)) if not given)
        if missing:
            home = Workspace(Path(tempfile.mkdtemp(prefix="erasure-bench-services-")))
            cleanup.callback(shutil.rmtree, home.home, True)
            cleanup.callback(local.down, home, True)
            started = local.up(home, missing)
            database_url = database_url or started["postgres"].endpoint
            object_store_url = object_store_url or started["s3"].endpoint
        assert database_url is not None and object_store_url is not None
        tag = secrets.token_hex(4)
        name = f"erasure_bench_{tag}"
        database = _create_databases(database_url, name)
        cleanup.callback(_drop_databases, database_url, name)
        objects = _under(object_store_url, f"erasure-bench-{tag}")
        cleanup.callback(_purge_objects, objects)
        yield SharedBackends(database, objects, missing)


def _setup(ws: Workspace, name: str, epochs: float, users: int | None = None) -> dict[int, list[tuple[str, str]]]:
    """Records, keys, a certified model; returns shard -> training (subject, record id)s."""
    from ledger.keys import init_keys
    from unlearning.data import movielens
    from unlearning.data.records import RecordStore
    from unlearning.operations.build import train_model
    from unlearning.operations.publish import register_trained
    from unlearning.training.config import TrainConfig

    init_keys(ws.key_dir)
    with RecordStore.open(ws) as store:
        store.ingest(movielens.build_samples(movielens.load(), per_user=PER_USER, max_users=users))
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
            self.poll(0.2)
        return max(self.first[(r, status)][1] for r in request_ids)

    def poll(self, timeout_s: float) -> None:
        """Read the events that arrive within `timeout_s`."""
        for batch in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            now = time.monotonic()
            for m in batch:
                event: OutcomeEvent = parse(m.value, OutcomeEvent)  # type: ignore[assignment]
                self.first.setdefault((event.request_id, event.status), (event, now))

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
             instance: str = "bench-planner", members: int = 1) -> Iterator[subprocess.Popen]:
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
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_stable(kafka: str, group: str, members: int, process: subprocess.Popen, log: Path) -> None:
    """Until the group is stable with `members` members: the new process is consuming."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                described = admin.describe_groups([group])[group]
            except KafkaError:  # no coordinator yet: a fresh broker creates its offsets topic first
                described = {"group_state": "", "members": []}
            if described["group_state"] == "Stable" and len(described["members"]) >= members:
                return
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise ServiceError(f"erasure serve did not join {group}: {' | '.join(tail)}")
            time.sleep(0.05)
    finally:
        admin.close()


def run_pipeline_benchmark(kafka: str, mlflow: str, requests: int = 1500, load: int = 100, rate: float = 5.0,
                           window_s: float = 2.0, executors: int = 1, epochs: float = 0.1, users: int | None = None,
                           shared: bool = False, database_url: str | None = None,
                           object_store_url: str | None = None) -> dict:
    """The benchmark on the embedded backends; with `shared` (or a database / object store URL),
    then the same on the shared ones, side by side (see the module's docstring)."""
    embedded = _run(kafka, mlflow, None, requests, load, rate, window_s, executors, epochs, users)
    if not (shared or database_url or object_store_url):
        return embedded
    import sqlite3

    import psycopg

    from ledger.postgres_store import describe

    with shared_backends(database_url, object_store_url) as backends:
        with psycopg.connect(backends.database) as db:
            number = db.info.server_version
        report = _run(kafka, mlflow, backends, requests, load, rate, window_s, executors, epochs, users)
    report.pop("machine"), report.pop("model")
    report = {"database": describe(backends.database), "postgresql": f"{number // 10000}.{number % 10000}",
              "object_store": describe_object_store(backends.object_store), "started_here": list(backends.started),
              **report}
    return {**embedded, "sqlite": sqlite3.sqlite_version, "shared": report, "comparison": _compare(embedded, report)}


def _ratio(shared: float, embedded: float) -> float | None:
    return round(shared / embedded, 3) if embedded else None


def _compare(embedded: dict, shared: dict) -> dict:
    """Planner requests/s and each latency percentile side by side: ratio = shared / embedded."""
    a, b = embedded["planner"]["requests_per_s"], shared["planner"]["requests_per_s"]
    latency = {
        status: {cut: {"embedded": cuts[cut], "shared": shared["latency"]["seconds"][status][cut],
                       "ratio": _ratio(shared["latency"]["seconds"][status][cut], cuts[cut])} for cut in cuts}
        for status, cuts in embedded["latency"]["seconds"].items()
    }
    return {"planner_requests_per_s": {"embedded": a, "shared": b, "ratio": _ratio(b, a)},
            "setup_s": {"embedded": embedded["setup_s"], "shared": shared["setup_s"],
                        "ratio": _ratio(shared["setup_s"], embedded["setup_s"])},
            "latency_s": latency}


def _run(kafka: str, mlflow: str, backends: SharedBackends | None, requests: int, load: int, rate: float,
         window_s: float, executors: int, epochs: float, users: int | None) -> dict:
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}.")
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with scratch_workspace(kafka, mlflow, backends) as ws:
        started = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):  # MLflow's "View run" lines: stdout stays the result's
            by_shard = _setup(ws, name, epochs, users)
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
                      "data": f"MovieLens-100K, {PER_USER} records per user"
                              + (f", the first {users} users" if users else "")},
            "setup_s": round(setup_s, 1),
            "planner": {"requests": requests, "seconds": round(t1 - t0, 3),
                        "requests_per_s": round(requests / (t1 - t0), 1)},
            "latency": {"requests": load, "rate_per_s": rate, "executors": executors, "executor_window_s": window_s,
                        "seconds": {status: _percentiles(events.latencies(paced, status)) for status in statuses}},
        }
