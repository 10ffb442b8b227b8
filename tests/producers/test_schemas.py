"""Request/job/event schemas: round trips and one-line rejections."""

import json

import pytest

from ledger.errors import BadInput
from producers.schemas import (
    MAX_MESSAGE_BYTES, ErasureRequest, Job, OutcomeEvent, json_schemas, new_request, parse, parse_request,
)


def test_request_round_trip_and_defaults() -> None:
    req = ErasureRequest(kind="erase_subject", subject_id="42")
    data = json.loads(req.to_bytes())
    assert data["schema"] == "erasure.request/v1" and data["requested_at"].endswith("Z")
    assert parse_request(req.to_bytes()) == req


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{", "not valid JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"schema": "erasure.request/v9"}', "unknown schema"),
    (b'{"kind": "erase_subject", "subject_id": "1"}', "unknown schema None"),
    (b'{"schema": "erasure.request/v1", "kind": "erase_subject"}', "subject_id: Field required"),
    (b'{"schema": "erasure.request/v1", "kind": "erase_records", "subject_id": "1"}', "non-empty record_ids"),
    (b'{"schema": "erasure.request/v1", "kind": "drop_table", "subject_id": "1"}', "kind"),
    (b'{"schema": "erasure.request/v1", "kind": "erase_subject", "subject_id": "1", "extra": 1}', "extra"),
    (b'{"schema": "erasure.request/v1", "kind": "erase_subject", "subject_id": "1",'
     b' "deadline": "2026-01-01T00:00:00"}', "timezone"),
    (b'\xff\xfe', "not valid JSON"),
    (None, "the value is null"),
    (42, "is a int, not bytes"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"n": ' + b"1" * 5000 + b"}", "not valid JSON"),
    (b" " * (MAX_MESSAGE_BYTES + 1), f"over the {MAX_MESSAGE_BYTES}"),
])
def test_bad_requests_are_rejected_with_one_line(raw: object, reason: str) -> None:
    with pytest.raises(BadInput, match=reason) as info:
        parse_request(raw)
    assert "\n" not in str(info.value)


def test_a_job_is_not_a_request() -> None:
    job = Job(model="m", shard=3, request_ids=["r1"])
    assert job.key == b"m/3"
    with pytest.raises(BadInput, match="was expected"):
        parse_request(job.to_bytes())
    assert parse(job.to_bytes()) == job
    # shard -1: the model's components without a shard (APA's aggregator, when a validation subject goes)
    aggregator_job = Job(model="m", shard=-1, request_ids=["r1"])
    assert aggregator_job.key == b"m/-1" and parse(aggregator_job.to_bytes()) == aggregator_job
    with pytest.raises(BadInput, match="shard"):
        parse({**json.loads(job.to_bytes()), "shard": -2})


def test_event_statuses_are_closed() -> None:
    OutcomeEvent(request_id="r", status="excluded", version=2)
    with pytest.raises(BadInput, match="status"):
        parse({"schema": "erasure.event/v1", "request_id": "r", "status": "maybe"})


def test_deadline_at_risk_names_event_v1_1_and_other_events_stay_v1() -> None:
    """A v1 consumer (which forbids unknown fields and statuses) still reads every other event."""
    at_risk = OutcomeEvent(request_id="r", status="deadline_at_risk", expected_at="2026-02-01T00:00:00Z")
    assert at_risk.schema_ == "erasure.event/v1.1" and parse(at_risk.to_bytes()) == at_risk
    plain = json.loads(OutcomeEvent(request_id="r", status="planned").to_bytes())
    assert plain["schema"] == "erasure.event/v1" and "expected_at" not in plain
    with pytest.raises(BadInput, match="need schema"):
        parse({"schema": "erasure.event/v1", "request_id": "r", "status": "deadline_at_risk"})


def test_json_schemas_exported_for_every_message() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"erasure.request/v1", "erasure.request/v1.1", "erasure.job/v1", "erasure.event/v1",
                            "erasure.event/v1.1"}
    assert "subject_id" in schemas["erasure.request/v1"]["required"]


def test_v1_messages_mean_what_they_meant_and_carry_no_v1_1_field() -> None:
    """v1.1 is a minor version: a v1 message parses as before, and a v1 request built now
    serialises without any v1.1 field (a v1 consumer, which forbids unknown fields, reads it)."""
    raw = b'{"schema": "erasure.request/v1", "kind": "erase_records", "subject_id": "7", "record_ids": ["a"]}'
    req = parse_request(raw)
    assert req.schema_ == "erasure.request/v1" and not req.approximate and req.prompt is req.answer is None
    built = json.loads(new_request({"kind": "erase_subject", "subject_id": "7"}).to_bytes())
    assert built["schema"] == "erasure.request/v1" and not {"approximate", "prompt", "answer"} & built.keys()


def test_rectification_and_approximate_name_v1_1() -> None:
    rectify = new_request({"kind": "rectify_record", "subject_id": "7", "record_ids": ["a"], "answer": "No"})
    approximate = new_request({"kind": "erase_subject", "subject_id": "7", "approximate": True})
    assert rectify.schema_ == approximate.schema_ == "erasure.request/v1.1"
    assert parse_request(rectify.to_bytes()) == rectify and parse_request(approximate.to_bytes()) == approximate


@pytest.mark.parametrize(("fields", "reason"), [
    ({"schema": "erasure.request/v1", "kind": "rectify_record", "record_ids": ["a"], "answer": "No"}, "need schema"),
    ({"schema": "erasure.request/v1", "kind": "erase_subject", "approximate": True}, "need schema"),
    ({"kind": "rectify_record", "record_ids": ["a"]}, "new prompt, a new answer or both"),
    ({"kind": "rectify_record", "record_ids": ["a", "b"], "answer": "No"}, "exactly one record id"),
    ({"kind": "rectify_record", "answer": "No"}, "exactly one record id"),
    ({"kind": "erase_subject", "answer": "No"}, "belong to kind rectify_record"),
    ({"kind": "rectify_record", "record_ids": ["a"], "prompt": ""}, "prompt"),
])
def test_bad_v1_1_requests_are_rejected_with_one_line(fields: dict, reason: str) -> None:
    with pytest.raises(BadInput, match=reason) as info:
        new_request({"subject_id": "7", **fields})
    assert "\n" not in str(info.value)
