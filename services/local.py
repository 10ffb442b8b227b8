"""Local Apache Kafka (KRaft, single node) and MLflow tracking server for development and tests.

The broker runs from jars that Maven resolves from Maven Central into a cache outside the repo
(`~/.cache/erasure/kafka-<version>/libs`); MLflow runs as `mlflow server` with a SQLite backend
and a local artifact root served over HTTP. Both listen on free ports on 127.0.0.1 only, and
their pids and endpoints are kept in `$ERASURE_HOME/dev.json` so that `stop` ends exactly the
processes that `start` began. A recorded service that died is restarted on its recorded port,
so clients that hold its address (a running `erasure serve`) reconnect; if another process
holds that port, `up` stops with a one-line error naming it instead of moving elsewhere.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from ledger.errors import ServiceError
from ledger.objects import S3Location
from services import postgres, seaweed
from services.process import Service, exited, free_port, port_free, require, spawn, stop_leftovers
from ledger.workspace import Workspace

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.4"
START_TIMEOUT_S = 120.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.erasure</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <!-- the broker logs through slf4j 1.x; without a binding it would log nothing -->
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
"""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "erasure"


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}" / "libs"


def resolve_kafka(version: str = KAFKA_VERSION, quiet: bool = True) -> Path:
    """Resolve the broker and its runtime dependencies with Maven; reuse the cache when complete."""
    libs = kafka_libs(version)
    if (libs / ".complete").exists():
        return libs
    mvn = require("mvn", "Maven is needed once to resolve the Kafka broker jars (apt-get install maven)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        staged = Path(tmp) / "libs"
        cmd = [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staged}", "-DincludeScope=runtime"]
        if quiet:
            cmd.insert(1, "-q")
        done = subprocess.run(cmd, capture_output=quiet, text=True)
        if done.returncode != 0:
            tail = (done.stdout or "").strip().splitlines()[-1:] if quiet else []
            raise ServiceError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}: {' '.join(tail)}")
        (staged / ".complete").write_text(version)
        if libs.exists():  # a partial earlier attempt
            shutil.rmtree(libs)
        staged.rename(libs)  # atomic: a cache dir is either complete or absent
    return libs


def kafka_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a metadata request."""
    # refused connections are the expected answer while a broker starts: keep them out of the logs
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        return _describe(bootstrap, timeout_s)
    finally:
        logging.getLogger("kafka").setLevel(logging.NOTSET)


def _describe(bootstrap: str, timeout_s: float) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        # bootstrap_timeout_ms too: a restarting broker accepts connections well before it answers
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def mlflow_reachable(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_kafka(ws: Workspace, port: int | None = None) -> Service:
    """Start a single-node KRaft broker+controller on `port` (a free one by default); format its
    storage on first start."""
    java = require("java", "Kafka needs a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
    libs = resolve_kafka()
    kdir = ws.home / "kafka"
    kdir.mkdir(parents=True, exist_ok=True)
    port, controller = port or free_port(), free_port()  # the controller's port is the broker's own business
    props = kdir / "server.properties"
    props.write_text("\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={kdir / 'data'}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "",
    ]))
    log4j = kdir / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=kdir / "server.log"))
    jvm = [java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (kdir / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        done = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {done.stderr.strip().splitlines()[-1:]}")
    log = kdir / "stdout.log"
    pid = spawn(jvm + ["kafka.Kafka", str(props)], log)
    return Service("kafka", pid, f"127.0.0.1:{port}", str(kdir / "server.log"), marker=str(props))


def start_mlflow(ws: Workspace, port: int | None = None) -> Service:
    """MLflow on the embedded store (mlflow.db and mlflow-artifacts/ in ERASURE_HOME), or, when
    `erasure dev up --shared` recorded PostgreSQL and the S3 server, with its backend store in
    PostgreSQL's `mlflow` database and its artifacts in the bucket (`mlflow-artifacts/`), read
    with the credentials file the S3 URL names."""
    port = port or free_port()
    artifacts = ws.mlflow_artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    recorded = load_state(ws)
    database, objects = recorded.get("postgres"), recorded.get("s3")
    backend = (postgres.sqlalchemy_url(database.endpoint, postgres.MLFLOW_DATABASE) if database
               else f"sqlite:///{ws.mlflow_db}")
    env = dict(os.environ)
    destination = str(artifacts)
    if objects is not None:  # the server proxies artifacts: clients need no S3 credentials
        location = S3Location.parse(objects.endpoint)
        destination = f"s3://{location.bucket}/mlflow-artifacts"
        env.update({"MLFLOW_S3_ENDPOINT_URL": location.endpoint or "", "AWS_PROFILE": location.profile,
                    "AWS_SHARED_CREDENTIALS_FILE": str(location.credentials or ""), "AWS_DEFAULT_REGION": location.region})
        env.pop("AWS_ACCESS_KEY_ID", None), env.pop("AWS_SECRET_ACCESS_KEY", None)
    # the server's background job runner forks a dozen workers that Erasure never uses
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", destination, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = ws.home / "mlflow-server.log"
    pid = spawn(cmd, log, env=env)
    return Service("mlflow", pid, f"http://127.0.0.1:{port}", str(log), marker=backend)


def reachable(svc: Service) -> bool:
    return REACHABLE[svc.name](svc.endpoint)


def _wait(services: list[Service], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        for svc in list(pending):
            if exited(svc.pid):
                raise ServiceError(f"{svc.name} exited during start-up; see {svc.log}")
            if reachable(svc):
                pending.remove(svc)
        if pending and time.monotonic() > deadline:
            names = ", ".join(s.name for s in pending)
            raise ServiceError(f"{names} did not answer within {timeout_s:.0f} s; see the logs in dev.json")
        if pending:
            time.sleep(0.5)


def load_state(ws: Workspace) -> dict[str, Service]:
    if not ws.dev_state.exists():
        return {}
    data = json.loads(ws.dev_state.read_text())
    return {name: Service.from_json(name, data[name]) for name in NAMES if name in data}


def _save_state(ws: Workspace, services: dict[str, Service]) -> None:
    tmp = ws.dev_state.with_suffix(".tmp")
    tmp.write_text(json.dumps({n: s.to_json() for n, s in services.items()}, indent=2))
    tmp.replace(ws.dev_state)


STARTERS = {"kafka": start_kafka, "mlflow": start_mlflow, "postgres": postgres.start_postgres,
            "s3": seaweed.start_s3}
REACHABLE = {"kafka": kafka_reachable, "mlflow": mlflow_reachable, "postgres": postgres.reachable,
             "s3": seaweed.reachable}
PREPARE = {"postgres": postgres.prepare, "s3": seaweed.prepare}  # once it answers: what it needs before clients use it
NAMES = tuple(STARTERS)


def up(ws: Workspace, which: tuple[str, ...] = ("kafka", "mlflow"),
       timeout_s: float = START_TIMEOUT_S) -> dict[str, Service]:
    """Start the services (reusing any recorded one that still runs) and wait until they answer.

    A recorded service that died restarts on its recorded port (what is left of its process
    group is stopped first), so its clients reconnect; ServiceError naming the port when another
    process holds it. Both start before either is awaited, so start-up costs the slower one, not
    the sum.
    """
    ws.ensure()
    recorded = load_state(ws)
    services = {n: s for n, s in recorded.items() if s.alive()}
    ports = {}
    for name in which:
        if name in recorded and name not in services:
            stop_leftovers(recorded[name])
            ports[name] = recorded[name].port
            if not port_free(ports[name]):
                raise ServiceError(f"cannot restart {name} on its port {ports[name]} (recorded in {ws.dev_state}): "
                                   "another process holds it; stop that process, or run `erasure dev down` to "
                                   "start afresh on new ports")
    started = []
    try:
        for name in which:
            if name not in services:
                services[name] = STARTERS[name](ws, ports.get(name))
                started.append(services[name])
        _save_state(ws, services)
        _wait(list(services.values()), timeout_s)
        for name in which:
            if name in PREPARE:
                PREPARE[name](services[name])
    except BaseException:
        for svc in started:
            svc.stop(spawned_here=True)
            services.pop(svc.name)
        _save_state(ws, services)
        raise
    return services


SHARED = ("postgres", "s3")


def up_shared(ws: Workspace, timeout_s: float = START_TIMEOUT_S) -> dict[str, Service]:
    """The shared deployment on this machine: PostgreSQL and the S3 server first (MLflow keeps
    its registry in them), then Kafka and MLflow. ServiceError when MLflow already runs on the
    embedded store (its registry would not follow): `erasure dev down` first."""
    mlflow = load_state(ws).get("mlflow")
    if mlflow is not None and mlflow.alive() and mlflow.marker.startswith("sqlite:"):
        raise ServiceError(f"MLflow (pid {mlflow.pid}) runs on the embedded store {mlflow.marker}: run "
                           "`erasure dev down`, then `erasure dev up --shared`")
    up(ws, SHARED, timeout_s)
    return up(ws, ("kafka", "mlflow"), timeout_s)


def down(ws: Workspace, purge: bool = False) -> list[str]:
    """Stop exactly the recorded processes; returns the names of those that were running.
    `purge`: also delete the shared services' data (PostgreSQL's cluster, SeaweedFS's files)."""
    stopped = []
    for name, svc in load_state(ws).items():
        if svc.alive():
            svc.stop()
            stopped.append(name)
        else:
            stop_leftovers(svc)
    ws.dev_state.unlink(missing_ok=True)
    if purge:
        postgres.purge(ws)
        seaweed.purge(ws)
    return stopped


def status(ws: Workspace) -> dict[str, dict]:
    services = load_state(ws)
    report = {}
    shown = [name for name in NAMES if name in ("kafka", "mlflow") or name in services]  # shared ones when up
    for name in shown:
        svc = services.get(name)
        report[name] = {
            "bootstrap" if name == "kafka" else "url": svc.endpoint if svc else None,
            "pid": svc.pid if svc else None,
            "running": bool(svc and svc.alive()),
            "reachable": bool(svc and svc.alive() and reachable(svc)),
        }
    return report
