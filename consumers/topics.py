"""The Kafka topics of design §8 and their idempotent creation."""

from __future__ import annotations

REQUESTS = "erasure.requests"
JOBS = "erasure.jobs"
EVENTS = "erasure.events"
DLQ = "erasure.requests.dlq"

# Jobs are keyed by model/shard: more partitions let more executors share the shards.
PARTITIONS = {REQUESTS: 3, JOBS: 8, EVENTS: 1, DLQ: 1}


def ensure_topics(bootstrap: str, partitions: dict[str, int] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics and wait until the broker lists them all.

    Returns the names this call created (none on a second call).
    """
    import time

    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from ledger.errors import ServiceError

    wanted = {**PARTITIONS, **(partitions or {})}
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
