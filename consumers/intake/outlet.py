"""The intake's way into Kafka: the `RequestProducer` for the requests it accepts, and a plain
idempotent producer for the DLQ copies and `rejected` events of those it refuses.

Both are made on first use and made again after a failure, so the intake starts, and answers
503, while Kafka is away. A request is accepted only once Kafka has acknowledged it from all
replicas; a refusal's DLQ copy and event are sent after its ledger entry, which is the record:
if Kafka is away then, they are logged as lost and the answer stands.
"""

from __future__ import annotations

import logging
import threading

from consumers.stages import DLQ_VALUE_MAX, REASON_MAX, outcome_event
from consumers.topics import Topics, ensure_topics
from ledger.errors import ServiceError
from ledger.workspace import Workspace
from producers.producer import RequestProducer
from producers.schemas import ErasureRequest

log = logging.getLogger("erasure.intake")


class Outlet:
    def __init__(self, ws: Workspace, topics: Topics, bootstrap: str, timeout_s: float = 15.0) -> None:
        self.ws, self.topics, self.bootstrap, self.timeout_s = ws, topics, bootstrap, timeout_s
        self._lock = threading.Lock()
        self._requests: RequestProducer | None = None
        self._plain = None

    def send(self, request: ErasureRequest) -> None:
        """Produce `request` to the requests topic and wait for its acknowledgement; ServiceError
        when Kafka cannot be reached or does not acknowledge it within the timeout."""
        from kafka.errors import KafkaError

        try:
            self._ready()[0].send([request])
        except (ServiceError, KafkaError) as err:
            self._drop()
            raise ServiceError(f"Kafka at {self.bootstrap} is unavailable: {err}") from None

    def refused(self, request_id: str, value: bytes, reason: str, source: str) -> None:
        """A DLQ copy of a refused body (reason in `erasure.reason`, where it came from in
        `erasure.source`) and a `rejected` event; best effort, the ledger entry is the record."""
        from kafka.errors import KafkaError

        headers = [("erasure.reason", reason[:REASON_MAX].encode()), ("erasure.source", source.encode())]
        if len(value) > DLQ_VALUE_MAX:
            headers.append(("erasure.truncated", str(len(value)).encode()))
        event = outcome_event(request_id, "rejected", reason=reason[:REASON_MAX])
        try:
            plain = self._ready()[1]
            sent = [plain.send(self.topics.dlq, value=value[:DLQ_VALUE_MAX], headers=headers),
                    plain.send(self.topics.events, key=request_id.encode(), value=event.to_bytes())]
            for future in sent:
                future.get(timeout=self.timeout_s)
        except (ServiceError, KafkaError) as err:
            self._drop()
            log.warning("request %s: refused and ledgered; its DLQ copy and event are lost: %s", request_id, err)

    def _ready(self) -> tuple[RequestProducer, object]:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        with self._lock:
            if self._requests is None:
                requests = RequestProducer(self.ws, self.bootstrap, self.topics.requests, self.timeout_s)
                wait_ms = int(self.timeout_s * 1000)
                try:
                    ensure_topics(self.bootstrap, self.topics)  # the broker answered: this is quick
                    self._plain = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                                linger_ms=5, bootstrap_timeout_ms=wait_ms, max_block_ms=wait_ms,
                                                request_timeout_ms=min(15_000, wait_ms))
                except (KafkaError, ServiceError):
                    requests.close()
                    raise
                self._requests = requests
            return self._requests, self._plain

    def _drop(self) -> None:
        """Forget the producers after a failure (the next use makes new ones), without waiting."""
        self.close(timeout_s=0)

    def close(self, timeout_s: float | None = None) -> None:
        with self._lock:
            producers, self._requests, self._plain = (self._requests, self._plain), None, None
        for producer in producers:
            if isinstance(producer, RequestProducer):
                producer.close(timeout_s)
            elif producer is not None:
                producer.close(timeout=timeout_s)  # type: ignore[attr-defined]
