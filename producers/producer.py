"""The Kafka producer for erasure requests: idempotent, acks from all replicas, keyed by subject tag.

The key is the subject's HMAC tag, never the raw id, so all requests about one subject land on
one partition (in order) and topic keys do not name people.
"""

from __future__ import annotations

from collections.abc import Iterable

from consumers.topics import REQUESTS
from ledger.errors import ServiceError
from ledger.workspace import Workspace
from producers.schemas import ErasureRequest
from unlearning.secrets import subject_tag


class RequestProducer:
    def __init__(self, workspace: Workspace, bootstrap: str | None = None, topic: str = REQUESTS) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.workspace = workspace
        self.topic = topic
        bootstrap = bootstrap or workspace.kafka_bootstrap()
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                           linger_ms=5, request_timeout_ms=15_000)
        except KafkaError as err:
            raise ServiceError(f"cannot reach Kafka at {bootstrap}: {err}") from None

    def send(self, requests: Iterable[ErasureRequest]) -> list[str]:
        """Send and wait until every request is acknowledged; returns their request ids."""
        from kafka.errors import KafkaError

        futures = []
        for req in requests:
            key = subject_tag(self.workspace, req.subject_id).encode()
            headers = [("schema", req.schema_.encode())]
            futures.append((req.request_id, self._producer.send(self.topic, key=key, value=req.to_bytes(),
                                                                headers=headers)))
        self._producer.flush()
        try:
            for _, fut in futures:
                fut.get(timeout=30)
        except KafkaError as err:
            raise ServiceError(f"Kafka did not acknowledge a request: {err}") from None
        return [rid for rid, _ in futures]

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> "RequestProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
