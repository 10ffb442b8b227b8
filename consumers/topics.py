"""The Kafka topics and consumer groups of design §8, and the topics' idempotent creation."""

from __future__ import annotations

from dataclasses import dataclass

from producers.topics import DLQ, EVENTS, EXCLUDER_GROUP, EXECUTOR_GROUP, JOBS, JOBS_DLQ, PLANNER_GROUP, REQUESTS

# Jobs are keyed by model/shard: more partitions let more executors share the shards.
PARTITIONS = {REQUESTS: 3, JOBS: 8, EVENTS: 1, DLQ: 1, JOBS_DLQ: 1}


@dataclass(frozen=True)
class Topics:
    """The pipeline's topic and group names; a prefix keeps several pipelines (tests, benchmarks)
    apart on one broker."""

    prefix: str = ""

    @property
    def requests(self) -> str:
        return self.prefix + REQUESTS

    @property
    def jobs(self) -> str:
        return self.prefix + JOBS

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def dlq(self) -> str:
        """Requests that cannot be handled (bad input, or their handling failed for good)."""
        return self.prefix + DLQ

    @property
    def jobs_dlq(self) -> str:
        """Jobs that cannot succeed (malformed, or their work failed for good)."""
        return self.prefix + JOBS_DLQ

    @property
    def planner_group(self) -> str:
        return self.prefix + PLANNER_GROUP

    @property
    def excluder_group(self) -> str:
        return self.prefix + EXCLUDER_GROUP

    @property
    def executor_group(self) -> str:
        return self.prefix + EXECUTOR_GROUP


def ensure_topics(bootstrap: str, topics: Topics = Topics(), partitions: dict[str, int] | None = None,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics and wait until the broker lists them all.

    `partitions` overrides counts by design name (e.g. {JOBS: 2}). Returns the names this call
    created (none on a second call).
    """
    import time

    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from ledger.errors import ServiceError

    wanted = {topics.prefix + name: count for name, count in {**PARTITIONS, **(partitions or {})}.items()}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        missing = [name for name in wanted if name not in set(admin.list_topics())]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, num_partitions=wanted[name], replication_factor=1)])
                created.append(name)
            except TopicAlreadyExistsError:  # another process won the race
                pass
        deadline = time.monotonic() + timeout_s
        while not set(wanted) <= set(admin.list_topics()):  # creation reaches metadata asynchronously
            if time.monotonic() > deadline:
                raise ServiceError(f"Kafka at {bootstrap} did not list the erasure topics within {timeout_s:.0f} s")
            time.sleep(0.2)
        return created
    finally:
        admin.close()
