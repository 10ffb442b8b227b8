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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import ServiceError
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


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ServiceError(f"{tool} not found on PATH: {why}")
    return path


def resolve_kafka(version: str = KAFKA_VERSION, quiet: bool = True) -> Path:
    """Resolve the broker and its runtime dependencies with Maven; reuse the cache when complete."""
    libs = kafka_libs(version)
    if (libs / ".complete").exists():
        return libs
    mvn = _require("mvn", "Maven is needed once to resolve the Kafka broker jars (apt-get install maven)")
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as the broker and uvicorn do, with
    SO_REUSEADDR: connections of a killed server in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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


@dataclass
class Service:
    name: str
    pid: int
    endpoint: str  # Kafka: host:port bootstrap; MLflow: http URL
    log: str
    marker: str  # a string in the process's command line, so a recycled pid is never killed

    def to_json(self) -> dict:
        key = "bootstrap" if self.name == "kafka" else "url"
        return {"pid": self.pid, key: self.endpoint, "log": self.log, "marker": self.marker}

    @classmethod
    def from_json(cls, name: str, data: dict) -> "Service":
        endpoint = data.get("bootstrap") or data.get("url")
        return cls(name, int(data["pid"]), endpoint, data["log"], data["marker"])

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def alive(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        return self.marker in cmdline

    def reachable(self) -> bool:
        if self.name == "kafka":
            return kafka_reachable(self.endpoint)
        return mlflow_reachable(self.endpoint)

    def stop(self, timeout_s: float = 30.0, spawned_here: bool = False) -> None:
        """Stop the process group this service leads (mlflow forks uvicorn workers).

        `spawned_here`: this process just started it, so it is ours even before its command line
        shows the marker (a failed start-up must not leave it running).
        """
        if not spawned_here and not self.alive():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _group_alive(self.pid):
                return
            time.sleep(0.2)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _leftovers(svc: Service) -> list[int]:
    """Processes of a dead service's process group still running: mlflow's uvicorn outlives a
    killed `mlflow server`, and holds the port. Only those whose command line names the
    service's port or marker count, so a recycled process group is never touched."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pgid = int(stat.read_text().rsplit(")", 1)[1].split()[2])
            args = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if pgid == svc.pid and (svc.marker in " ".join(args) or any(
                a == "--port" and b == str(svc.port) for a, b in zip(args, args[1:]))):
            found.append(int(stat.parent.name))
    return found


def _stop_leftovers(svc: Service, timeout_s: float = 15.0) -> None:
    pids = _leftovers(svc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a zombie leader still counts as alive for killpg; reap it if it is our child
    try:
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == pgid:
            return _group_alive(pgid)
    except ChildProcessError:
        pass
    return True


def _exited(pid: int) -> bool:
    """Whether a process we started has ended (its command line may not show the marker until
    it has exec'd, so start-up checks go by pid)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: look it up
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def _spawn(cmd: list[str], log: Path, env: dict | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    return proc.pid


def start_kafka(ws: Workspace, port: int | None = None) -> Service:
    """Start a single-node KRaft broker+controller on `port` (a free one by default); format its
    storage on first start."""
    java = _require("java", "Kafka needs a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
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
    pid = _spawn(jvm + ["kafka.Kafka", str(props)], log)
    return Service("kafka", pid, f"127.0.0.1:{port}", str(kdir / "server.log"), marker=str(props))


def start_mlflow(ws: Workspace, port: int | None = None) -> Service:
    port = port or free_port()
    db, artifacts = ws.mlflow_db, ws.mlflow_artifacts
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # the server's background job runner forks a dozen workers that Erasure never uses
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = ws.home / "mlflow-server.log"
    pid = _spawn(cmd, log, env=env)
    return Service("mlflow", pid, f"http://127.0.0.1:{port}", str(log), marker=f"sqlite:///{db}")


def _wait(services: list[Service], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        for svc in list(pending):
            if _exited(svc.pid):
                raise ServiceError(f"{svc.name} exited during start-up; see {svc.log}")
            if svc.reachable():
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
    return {name: Service.from_json(name, data[name]) for name in ("kafka", "mlflow") if name in data}


def _save_state(ws: Workspace, services: dict[str, Service]) -> None:
    tmp = ws.dev_state.with_suffix(".tmp")
    tmp.write_text(json.dumps({n: s.to_json() for n, s in services.items()}, indent=2))
    tmp.replace(ws.dev_state)


STARTERS = {"kafka": start_kafka, "mlflow": start_mlflow}


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
            _stop_leftovers(recorded[name])
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
    except BaseException:
        for svc in started:
            svc.stop(spawned_here=True)
            services.pop(svc.name)
        _save_state(ws, services)
        raise
    return services


def down(ws: Workspace) -> list[str]:
    """Stop exactly the recorded processes; returns the names of those that were running."""
    stopped = []
    for name, svc in load_state(ws).items():
        if svc.alive():
            svc.stop()
            stopped.append(name)
        else:
            _stop_leftovers(svc)
    ws.dev_state.unlink(missing_ok=True)
    return stopped


def status(ws: Workspace) -> dict[str, dict]:
    services = load_state(ws)
    report = {}
    for name, key in (("kafka", "bootstrap"), ("mlflow", "url")):
        svc = services.get(name)
        report[name] = {
            key: svc.endpoint if svc else None,
            "pid": svc.pid if svc else None,
            "running": bool(svc and svc.alive()),
            "reachable": bool(svc and svc.alive() and svc.reachable()),
        }
    return report
