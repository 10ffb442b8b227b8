"""`erasure request` against the real broker: messages land keyed by subject tag."""

import json
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from typer.testing import CliRunner

from cli.app import app
from consumers.topics import DLQ, EVENTS, JOBS, REQUESTS, ensure_topics
from ledger.workspace import Workspace
from producers.schemas import parse_request
from unlearning.secrets import subject_tag

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
    assert {REQUESTS, JOBS, EVENTS, DLQ} <= set(admin.list_topics())
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

    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"kind": "erase_subject", "subject_id": "u-18"}\n{"kind": "erase_subject", "subject_id": "u-19"}\n')
    result = runner.invoke(app, ["request", "import", str(batch), "--json"])
    assert result.exit_code == 0, result.output
    imported = json.loads(result.stdout)
    assert imported["sent"] == 2

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
    assert sent.key == subject_tag(Workspace.from_env(), "u-17").encode()
    assert b"u-17" not in sent.key
