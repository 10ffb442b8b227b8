"""The Kafka producer for erasure requests: idempotent, acks from all replicas, keyed per subject.

The key is a SHA-256 digest of the subject id (`subject_key`), never the raw id, so all requests
about one subject land on one partition (in order) and topic keys do not spell out people. It is
unkeyed on purpose: a data platform produces requests without any of the workspace's secrets
(the ledger names subjects by the keyed HMAC tag instead).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ledger.errors import ServiceError
from ledger.workspace import Workspace
from producers.schemas import ErasureRequest
from producers.topics import REQUESTS


def subject_key(subject_id: str) -> bytes:
    """The Kafka key of a subject's requests (same subject, same partition, in order)."""
    return hashlib.sha256(b"erasure/subject-key/v1\x00" + subject_id.encode()).hexdigest().encode()


class RequestProducer:
    def __init__(self, workspace: Workspace, bootstrap: str | None = None, topic: str = REQUESTS,
                 timeout_s: float = 30.0) -> None:
        """`timeout_s` bounds each wait on Kafka: reaching it, and a send's acknowledgement."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.workspace = workspace
        self.topic = topic
        self.timeout_s = timeout_s
        bootstrap = bootstrap or workspace.kafka_bootstrap()
        wait_ms = int(timeout_s * 1000)
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                           linger_ms=5, request_timeout_ms=min(15_000, wait_ms),
                                           bootstrap_timeout_ms=wait_ms, max_block_ms=wait_ms)
        except KafkaError as err:
            raise ServiceError(f"cannot reach Kafka at {bootstrap}: {err}") from None

    def send(self, requests: Iterable[ErasureRequest]) -> list[str]:
        """Send and wait until every request is acknowledged; returns their request ids."""
        from kafka.errors import KafkaError

        futures = []
        try:
            for req in requests:
                key = subject_key(req.subject_id)
                headers = [("schema", req.schema_.encode())]
                futures.append((req.request_id, self._producer.send(self.topic, key=key, value=req.to_bytes(),
                                                                    headers=headers)))
            for _, fut in futures:  # linger_ms sends them; each wait is bounded (a flush would not be)
                fut.get(timeout=self.timeout_s)
        except KafkaError as err:
            raise ServiceError(f"Kafka did not acknowledge a request: {err}") from None
        return [rid for rid, _ in futures]

    def close(self, timeout_s: float | None = None) -> None:
        """Close, waiting up to `timeout_s` (None: as long as it takes) for requests still buffered."""
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> "RequestProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
