"""`erasure bench pipeline --soak MINUTES`: a steady request stream through the deployed pipeline.

Setup as `consumers.bench` (scratch workspace, MovieLens-100K, a tiny-base SISA model over 4
shards). A planner and `executors` executor processes (`erasure serve`, as deployed) run while
requests, each erasing one training record outside shard 0, arrive at `rate` per second for
`minutes`. Every `SAMPLE_S` the soak records each consumer group's lag (messages on the topic
not yet committed; Kafka counts a transaction's commit marker as one offset, so a settled
partition shows a lag of at most 1) and each process's resident memory. Then the stream stops
and the soak waits up to `drain_s` for every request to reach a final stage (restored,
rejected or failed).

Reported: requests sent and final, time from `requested_at` to excluded and to restored as
percentiles, lag (max, and at the end of the stream and of the drain), RSS per process (first
sample, after the first `WARM_UP` of the stream, last, and the growth since warm-up), and the
ids of requests not in a final stage.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from consumers.bench import SHARDS, _Events, _percentiles, _requests, _serving, _setup, scratch_workspace
from consumers.topics import JOBS, PARTITIONS, Topics, ensure_topics
from ledger.errors import BadInput
from producers.producer import RequestProducer
from producers.schemas import Job

SAMPLE_S = 5.0
WARM_UP = 0.1  # RSS growth is counted from this share of the stream on (models and caches load first)
FINAL = ("restored", "rejected", "failed")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def spread_name(executors: int) -> str:
    """A model name whose shards 1.. (the ones requests erase from) hash to jobs partitions in
    every executor's range (Kafka's default range assignor gives each member a contiguous block),
    so every executor has work, not just the one the hash happens to favour."""
    from kafka.partitioner.default import murmur2

    partitions = PARTITIONS[JOBS]
    block = max(1, partitions // max(1, executors))
    for _ in range(10_000):
        name = f"soak-{os.urandom(4).hex()}"
        owners = {min(((murmur2(Job.key_of(name, s)) & 0x7FFFFFFF) % partitions) // block, executors - 1)
                  for s in range(1, SHARDS)}
        if len(owners) >= min(executors, SHARDS - 1):
            return name
    raise AssertionError("no model name spreads the shards")  # 10 000 draws: never in practice


@dataclass
class _Samples:
    kafka: str
    groups: dict[str, str]  # role -> consumer group
    topics: dict[str, str]  # role -> the topic it consumes
    pids: dict[str, int]  # process name -> pid
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        self._admin = KafkaAdminClient(bootstrap_servers=self.kafka)
        self._ends = KafkaConsumer(bootstrap_servers=self.kafka, enable_auto_commit=False)

    def lag(self, group: str, topic: str) -> int | None:
        """Messages on `topic` past `group`'s committed offsets (None if Kafka did not answer)."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        try:
            partitions = [TopicPartition(topic, p) for p in self._ends.partitions_for_topic(topic) or ()]
            ends = self._ends.end_offsets(partitions)
            committed = self._admin.list_group_offsets(group).get(group, {})
        except KafkaError:
            return None
        return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                   for tp, end in ends.items())

    def take(self, t: float, sent: int, final: int) -> dict:
        row = {"t_s": round(t, 1), "sent": sent, "final": final,
               "lag": {role: self.lag(group, self.topics[role]) for role, group in self.groups.items()},
               "rss_mb": {name: rss_mb(pid) for name, pid in self.pids.items()}}
        self.rows.append(row)
        return row

    def close(self) -> None:
        self._admin.close()
        self._ends.close()


def run_soak(kafka: str, mlflow: str, minutes: float, rate: float = 0.5, executors: int = 2, window_s: float = 2.0,
             drain_s: float = 600.0, epochs: float = 0.1, progress=None,  # type: ignore[no-untyped-def]
             logs: Path | None = None) -> dict:
    """Run the soak; `progress(row)` sees every sample; the services' logs are copied to `logs`.
    Returns the result (JSON-ready)."""
    topics = Topics(f"soak-{os.urandom(4).hex()}.")
    name = spread_name(executors)
    with scratch_workspace(kafka, mlflow) as ws:
        by_shard = _setup(ws, name, epochs)
        pool = [s for shard in range(1, SHARDS) for s in by_shard[shard]]
        random.Random(0).shuffle(pool)
        wanted = int(minutes * 60 * rate)
        if len(pool) < wanted:
            raise BadInput(f"only {len(pool)} training records outside shard 0 for {wanted} requests: "
                           "lower --soak or --rate")
        ensure_topics(kafka, topics)
        events = _Events(kafka, topics)
        sent: list = []
        with contextlib.ExitStack() as stack:
            pids = {"planner": stack.enter_context(_serving(ws, kafka, mlflow, topics, "planner", window_s)).pid}
            for i in range(executors):
                process = stack.enter_context(_serving(ws, kafka, mlflow, topics, "executor", window_s,
                                                       f"soak-executor-{i}", i + 1))
                pids[f"executor-{i}"] = process.pid
            groups = {"planner": topics.planner_group, "excluder": topics.excluder_group}
            consumed = {"planner": topics.requests, "excluder": topics.jobs}
            if executors:
                groups["executor"], consumed["executor"] = topics.executor_group, topics.jobs
            samples = _Samples(kafka, groups, consumed, pids)
            stack.callback(samples.close)

            def final() -> set[str]:
                return {r for (r, status) in events.first if status in FINAL}

            start = time.monotonic()
            next_sample = start
            with RequestProducer(ws, bootstrap=kafka, topic=topics.requests) as producer:
                while len(sent) < wanted or time.monotonic() < start + minutes * 60:
                    now = time.monotonic()
                    if len(sent) < wanted and now >= start + len(sent) / rate:
                        sent += _requests([pool[len(sent)]], name)  # requested_at: now
                        producer.send(sent[-1:])
                    if now >= next_sample:
                        row = samples.take(now - start, len(sent), len(final()))
                        if progress:
                            progress(row)
                        next_sample += SAMPLE_S
                    events.poll(0.1)
            stream_end = samples.take(time.monotonic() - start, len(sent), len(final()))
            drain_deadline = time.monotonic() + drain_s
            ids = {r.request_id for r in sent}
            while not ids <= final() and time.monotonic() < drain_deadline:
                events.poll(0.5)
                if time.monotonic() >= next_sample:
                    row = samples.take(time.monotonic() - start, len(sent), len(final()))
                    if progress:
                        progress(row)
                    next_sample += SAMPLE_S
            drained = samples.take(time.monotonic() - start, len(sent), len(final()))
        if logs is not None:  # the scratch workspace goes; a failure's story stays
            logs.mkdir(parents=True, exist_ok=True)
            for log in ws.home.glob("serve-*.log"):
                shutil.copy2(log, logs / log.name)
        events.consumer.close()

    def latency(status: str) -> dict | None:
        values = [(events.first[(r.request_id, status)][0].at - r.requested_at).total_seconds()
                  for r in sent if (r.request_id, status) in events.first]
        return {"requests": len(values), **_percentiles(values)} if len(values) >= 2 else None

    outcome = {status: sum((r.request_id, status) in events.first for r in sent) for status in FINAL}
    rows = samples.rows
    processes = {}
    warm_t = minutes * 60 * WARM_UP
    for proc in pids:
        series = [(row["t_s"], row["rss_mb"][proc]) for row in rows if row["rss_mb"][proc] is not None]
        if not series:
            processes[proc] = None
            continue
        warm = next((mb for t, mb in series if t >= warm_t), series[-1][1])
        processes[proc] = {"first_mb": round(series[0][1], 1), "warm_mb": round(warm, 1),
                           "last_mb": round(series[-1][1], 1), "max_mb": round(max(mb for _, mb in series), 1),
                           "growth_after_warm_up_mb": round(series[-1][1] - warm, 1)}
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": {"base": "tiny", "method": "sisa", "shards": SHARDS, "slices": 1, "epochs": epochs},
        "settings": {"minutes": minutes, "rate_per_s": rate, "executors": executors, "executor_window_s": window_s,
                     "drain_s": drain_s, "sample_s": SAMPLE_S},
        "requests": {"sent": len(sent), "final": len(final() & {r.request_id for r in sent}), **outcome,
                     "not_final": sorted({r.request_id for r in sent} - final()),
                     "failures": [{"request_id": r.request_id, "status": status,
                                   "reason": events.first[(r.request_id, status)][0].reason}
                                  for r in sent for status in ("rejected", "failed")
                                  if (r.request_id, status) in events.first]},
        "seconds": {"excluded": latency("excluded"), "restored": latency("restored")},
        "lag": {role: {"max": max((row["lag"][role] for row in rows if row["lag"][role] is not None), default=None),
                       "stream_end": stream_end["lag"][role],
                       "drained": drained["lag"][role]} for role in groups},
        "drain_s": round(drained["t_s"] - stream_end["t_s"], 1),
        "rss": processes,
        "samples": rows,
    }


def write_soak_plot(result: dict, path: Path) -> Path:
    """Lag per group and RSS per process over time (PNG, Agg)."""
    from matplotlib.figure import Figure

    rows = result["samples"]
    t = [row["t_s"] / 60 for row in rows]
    fig = Figure(figsize=(11, 4), layout="constrained")
    lag_ax, rss_ax = fig.subplots(1, 2)
    for role in result["lag"]:
        lag_ax.plot(t, [row["lag"][role] for row in rows], label=role)
    lag_ax.set(title="consumer lag", xlabel="minutes", ylabel="messages not committed")
    for proc in result["rss"]:
        rss_ax.plot(t, [row["rss_mb"][proc] for row in rows], label=proc)
    rss_ax.set(title="resident memory", xlabel="minutes", ylabel="MiB")
    for ax in (lag_ax, rss_ax):
        ax.axvline(result["settings"]["minutes"], color="grey", linestyle="--")
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
