"""The real broker: topics, produce, consumer groups with manual commits."""

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.services


def _consumer(bootstrap: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=10_000)


def test_produce_consume_commit_and_resume(kafka_bootstrap: str) -> None:
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    assert topic in admin.list_topics()
    admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(5):
        producer.send(topic, key=b"k", value=f"m{i}".encode())
    producer.flush()
    producer.close()

    tp = TopicPartition(topic, 0)
    first = _consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    seen = []
    for msg in first:
        seen.append(msg.value)
        if len(seen) == 3:
            break
    assert seen == [b"m0", b"m1", b"m2"]
    first.commit()  # commits the position after m2
    first.close()

    second = _consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    rest = [msg.value for _, msg in zip(range(2), second)]
    assert second.committed(tp) == 3
    assert rest == [b"m3", b"m4"]
    second.close()
