"""`erasure serve`: the planner (with the excluder, the approximator and the deadline watch)
and/or an executor in one process, each a consumer loop in its own thread, with a transactional
producer per loop; the approximator is a worker thread the planner hands approximate updates
to, and the deadline watch a thread that warns of requests falling behind their deadlines, each
with a plain idempotent producer for its events. With an object store (shared deployments), a
cache-sweep thread deletes this host's copies of versions purged on other hosts. Role `intake` is the HTTP intake alone (`consumers.intake`):
no consumer loop, a server thread producing what it accepts to the requests topic; it runs
beside the other roles, in its own process (`all` does not include it: it listens on a port).

Stopping: `stop()` lets each loop finish the unit in flight (commit it) and hand everything
else back uncommitted, then leave the group so other members take over its partitions; the
approximator finishes a solve in flight and logs the updates it still holds as lost (their
records lived only in this process).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from consumers.approximator import Approximator
from consumers.deadline_watch import INTERVAL_S, DeadlineWatch
from consumers.excluder import Excluder
from consumers.executor import Executor
from consumers.loop import RETRIES, ConsumerLoop
from consumers.planner import Planner
from consumers.topics import Topics, ensure_topics
from ledger.errors import ServiceError
from ledger.workspace import Workspace
from unlearning.methods.influence.solver import SolverSettings
from unlearning.operations.check import require_sound
from unlearning.operations.context import Context
from unlearning.versions.store import ModelStore

ROLES = ("planner", "executor", "all", "intake")
SWEEP_S = 60.0
SESSION_TIMEOUT_MS = 10_000  # a killed member's partitions move on after this
TRANSACTION_TIMEOUT_MS = 20_000  # a killed member's open transaction is aborted after this

log = logging.getLogger("erasure.serve")


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Service:
    ws: Workspace
    role: str = "all"
    topics: Topics = Topics()
    window_s: float = 2.0
    instance: str = field(default_factory=default_instance)
    bootstrap: str | None = None
    errors: list[BaseException] = field(default_factory=list)
    solver: SolverSettings = field(default_factory=SolverSettings)  # the approximator's updates
    retries: int = RETRIES  # transient failures of a unit before its messages go to a DLQ (consumers.loop)
    host: str = "127.0.0.1"  # intake: where it listens (port 0: a free port, see `intake.url`)
    port: int = 8080
    watch_s: float = INTERVAL_S  # the deadline watch's interval (consumers.deadline_watch)
    sweep_s: float = SWEEP_S  # with an object store: how often copies of versions purged elsewhere are deleted

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loops: list[ConsumerLoop] = []
        self._approximator: Approximator | None = None
        self._watch: DeadlineWatch | None = None
        self.intake = None  # role intake: the consumers.intake.server.Intake serving

    def start(self) -> "Service":
        """Check the workspace's stores (CorruptState: refuse to start), then start the loops."""
        from kafka.errors import KafkaError

        for finding in require_sound(self.ws):
            log.info("store sound: %s", finding.line())
        bootstrap = self.bootstrap or self.ws.kafka_bootstrap()
        if self.role == "intake":  # reaches Kafka per request: it starts, and answers 503, while Kafka is away
            from consumers.intake.server import Intake

            self.intake = Intake(self.ws, self.topics, bootstrap, self.host, self.port)
            self._start("intake", partial(self.intake.run, self._stop))
            return self
        try:
            ensure_topics(bootstrap, self.topics)
            self._loops = self._make_loops(bootstrap)
        except KafkaError as err:
            raise ServiceError(f"cannot start the pipeline on Kafka at {bootstrap}: {err}") from None
        for loop in self._loops:
            self._start(loop.handler.name, partial(loop.run, self._stop))
        if self._approximator is not None:  # it outlives the loops: the planner hands off as it stops
            loops = list(self._threads)
            self._start(self._approximator.name, partial(self._approximator.run,
                                                         lambda: any(t.is_alive() for t in loops)))
        if self._watch is not None:
            self._start(self._watch.name, self._watch.run)
        if self.ws.object_store_url():
            self._start("cache-sweep", self._sweep)
        log.info("serving %s as %s (topics %s*)", self.role, self.instance, self.topics.prefix or "erasure.")
        return self

    def _make_loops(self, bootstrap: str) -> list[ConsumerLoop]:
        ctx = Context(self.ws, self.instance)
        wanted = []
        if self.role in ("planner", "all"):
            self._approximator = Approximator(ctx, self.topics, self._producer(bootstrap, f"{self.instance}-approximator"),
                                              self.solver, self._stop)
            self._watch = DeadlineWatch(ctx, self.topics, self._producer(bootstrap, f"{self.instance}-deadline-watch"),
                                        self._stop, self.watch_s)
            wanted.append((Planner(ctx, self.topics, self._approximator.submit, self._watch.warned),
                           self.topics.requests, self.topics.planner_group, 2000))
            wanted.append((Excluder(ctx, self.topics), self.topics.jobs, self.topics.excluder_group, 5000))
        if self.role in ("executor", "all"):
            wanted.append((Executor(ctx, self.topics, self.window_s), self.topics.jobs, self.topics.executor_group, 100))
        return [self._loop(bootstrap, handler, topic, group, max_records) for handler, topic, group, max_records in wanted]

    def _loop(self, bootstrap: str, handler, topic: str, group: str, max_records: int) -> ConsumerLoop:  # type: ignore[no-untyped-def]
        from kafka import KafkaConsumer, KafkaProducer

        client = f"{self.instance}-{handler.name}"
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=client,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 isolation_level="read_committed", max_poll_records=max_records,
                                 session_timeout_ms=SESSION_TIMEOUT_MS)
        # one transactional id per consumer instance: offsets and outputs commit together
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=client, transactional_id=f"{group}/{client}",
                                 enable_idempotence=True, acks="all", linger_ms=5,
                                 transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        producer.init_transactions()
        return ConsumerLoop(handler, consumer, producer, topic, self.retries)

    @staticmethod
    def _producer(bootstrap: str, client: str):  # type: ignore[no-untyped-def]
        """A plain idempotent producer (no transactions): the approximator's and the deadline watch's events."""
        from kafka import KafkaProducer

        return KafkaProducer(bootstrap_servers=bootstrap, client_id=client, enable_idempotence=True, acks="all",
                             linger_ms=5)

    def _sweep(self) -> None:
        """Every `sweep_s`, delete this host's copies of versions purged on another host (they
        trained on erased records); a process that lists a model does it too, but an idle
        executor lists nothing. A failed sweep (the object store away) is tried again later."""
        store = ModelStore(self.ws)
        while not self._stop.wait(self.sweep_s):
            try:
                for name, number in store.sweep():
                    log.info("cache-sweep: deleted this host's copy of %s v%d: purged from the object store",
                             name, number)
            except Exception as err:  # noqa: BLE001 - housekeeping must not stop the service
                log.warning("cache-sweep: no sweep this time: %s: %s", type(err).__name__, err)

    def _start(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._run, args=(name, work), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run(self, name: str, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - reported by wait(); the other loops stop too
            log.error("%s stopped: %s", name, err)
            self.errors.append(err)
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every loop has stopped (True) or `timeout` passed (False)."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def assignment(self) -> dict[str, frozenset]:
        """Role -> the partitions its consumer owns now."""
        return {loop.handler.name: loop.assigned for loop in self._loops}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()
