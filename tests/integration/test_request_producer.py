"""`erasure request` against the real broker: messages land keyed by the subject's digest."""

import json
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from typer.testing import CliRunner

from cli.app import app
from consumers.topics import DLQ, EVENTS, JOBS, JOBS_DLQ, REQUESTS, ensure_topics
from producers.producer import subject_key
from producers.schemas import parse_request

pytestmark = pytest.mark.services


def _drain(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_topics_are_created_once(kafka_bootstrap: str) -> None:
    ensure_topics(kafka_bootstrap)
    assert ensure_topics(kafka_bootstrap) == []
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    assert {REQUESTS, JOBS, EVENTS, DLQ, JOBS_DLQ} <= set(admin.list_topics())
    admin.close()


def test_erase_and_import_produce_keyed_requests(kafka_bootstrap: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ERASURE_KAFKA", kafka_bootstrap)
    runner = CliRunner()

    result = runner.invoke(app, ["request", "erase", "--subject", "u-17", "--record", "r1", "--model", "recs",
                                 "--deadline", "2026-12-24T00:00:00Z"])
    assert result.exit_code == 0, result.output
    request_id = result.stdout.strip()

    result = runner.invoke(app, ["request", "rectify", "--subject", "u-17", "--record", "r2", "--answer", "No",
                                 "--approximate"])
    assert result.exit_code == 0, result.output
    rectify_id = result.stdout.strip()
    result = runner.invoke(app, ["request", "rectify", "--subject", "u-17", "--record", "r2"])
    assert result.exit_code == 2 and "a new prompt, a new answer or both" in result.stderr

    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"kind": "erase_subject", "subject_id": "u-18"}\n{"kind": "erase_subject", "subject_id": "u-19"}\n'
                     '{"kind": "rectify_record", "subject_id": "u-19", "record_ids": ["r9"], "prompt": "new"}\n')
    result = runner.invoke(app, ["request", "import", str(batch), "--json"])
    assert result.exit_code == 0, result.output
    imported = json.loads(result.stdout)
    assert imported["sent"] == 3

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "erase_subject", "subject_id": "u-20"}\nnot json\n')
    result = runner.invoke(app, ["request", "import", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.stderr

    # the topic has several partitions: match messages by request id, not by position
    by_id = {parse_request(m.value).request_id: m for m in _drain(kafka_bootstrap, REQUESTS)}
    assert set(imported["request_ids"]) <= set(by_id)
    assert not [m for m in by_id.values() if parse_request(m.value).subject_id == "u-20"]  # bad file: nothing sent
    sent = by_id[request_id]
    first = parse_request(sent.value)
    assert first.record_ids == ["r1"] and first.model == "recs" and first.kind == "erase_records"
    assert sent.key == subject_key("u-17")
    assert first.schema_ == "erasure.request/v1"  # no v1.1 feature used: still readable by v1 consumers
    rectify = parse_request(by_id[rectify_id].value)
    assert (rectify.schema_, rectify.kind, rectify.record_ids, rectify.answer, rectify.approximate) == (
        "erasure.request/v1.1", "rectify_record", ["r2"], "No", True)
    assert rectify.legal_basis == "GDPR Art. 16" and by_id[rectify_id].key == sent.key
    imported_rectify = parse_request(by_id[imported["request_ids"][2]].value)
    assert imported_rectify.schema_ == "erasure.request/v1.1" and imported_rectify.prompt == "new"
    assert b"u-17" not in sent.key
