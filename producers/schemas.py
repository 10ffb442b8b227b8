"""Versioned message schemas (pydantic v2) for the Kafka topics of design §8.

Every message is JSON with a `schema` field naming its type and major version. Parsing is
strict: unknown fields, unknown schemas and missing fields are rejected with a one-line reason
that the planner puts on the DLQ.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ledger.errors import BadInput

REQUEST_SCHEMA = "erasure.request/v1"
# v1.1 (minor, backward compatible): adds kind rectify_record (prompt / answer) and the
# approximate flag; every v1 message means what it meant. A message that uses them names v1.1.
REQUEST_SCHEMA_V1_1 = "erasure.request/v1.1"
JOB_SCHEMA = "erasure.job/v1"
EVENT_SCHEMA = "erasure.event/v1"
# v1.1 (minor): adds status deadline_at_risk and its expected_at; every other event stays v1,
# so a v1 consumer reads them as before. An event that uses them names v1.1.
EVENT_SCHEMA_V1_1 = "erasure.event/v1.1"
# the largest message value parse() reads (Kafka's default limit): anything larger is rejected
# before it is decoded
MAX_MESSAGE_BYTES = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps need a timezone (e.g. 2026-11-22T10:00:00Z)")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: pydantic turns only ValueError into a reason
        raise ValueError("timestamp is out of range in UTC") from None


Timestamp = Annotated[datetime, AfterValidator(_aware)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]
Content = Annotated[str, Field(min_length=1, max_length=65536)]


def _name_minor_version(data: object, schema: str, uses: Callable[[dict], bool]) -> object:
    """A message built in code without a schema names the minor version `schema` exactly when it
    `uses` one of its features, so everything else stays readable by the older consumers."""
    if isinstance(data, dict) and "schema" not in data and "schema_" not in data and uses(data):
        return {**data, "schema": schema}
    return data


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")


class ErasureRequest(_Message):
    """A data platform's request to erase a subject (or some of its records) from models, or
    (v1.1) to rectify one record: new prompt, new answer or both."""

    schema_: Literal["erasure.request/v1", "erasure.request/v1.1"] = Field(REQUEST_SCHEMA, alias="schema")
    request_id: NonEmpty = Field(default_factory=lambda: str(uuid.uuid4()))
    kind: Literal["erase_subject", "erase_records", "rectify_record"]
    subject_id: NonEmpty
    record_ids: list[NonEmpty] | None = None
    prompt: Content | None = Field(None, description="v1.1, rectify_record: the corrected prompt.")
    answer: Content | None = Field(None, description="v1.1, rectify_record: the corrected answer.")
    approximate: bool | None = Field(None, description="v1.1: publish an APPROXIMATE influence update first; the "
                              "exact path always follows and supersedes it.")
    model: NonEmpty | None = Field(None, description="Limit the erasure to one model; all models when absent.")
    requested_at: Timestamp = Field(default_factory=utcnow)
    deadline: Timestamp | None = None
    legal_basis: NonEmpty = "GDPR Art. 17"
    requester: NonEmpty = "unknown"

    @model_validator(mode="before")
    @classmethod
    def _minor_version(cls, data: object) -> object:
        return _name_minor_version(data, REQUEST_SCHEMA_V1_1, lambda d: d.get("kind") == "rectify_record"
                                   or d.get("approximate") is not None)

    @model_validator(mode="after")
    def _records_match_kind(self) -> "ErasureRequest":
        if self.kind != "rectify_record" and (self.prompt is not None or self.answer is not None):
            raise ValueError(f"prompt and answer belong to kind rectify_record, not {self.kind}")
        if (self.kind == "rectify_record" or self.approximate is not None) and self.schema_ == REQUEST_SCHEMA:
            raise ValueError(f"kind rectify_record, prompt, answer and approximate need schema {REQUEST_SCHEMA_V1_1!r}")
        if self.kind == "erase_records" and not self.record_ids:
            raise ValueError("kind erase_records needs a non-empty record_ids")
        if self.kind == "erase_subject" and self.record_ids:
            raise ValueError("kind erase_subject takes no record_ids (use erase_records)")
        if self.kind == "rectify_record":
            if not self.record_ids or len(self.record_ids) != 1:
                raise ValueError("kind rectify_record needs exactly one record id in record_ids")
            if self.prompt is None and self.answer is None:
                raise ValueError("kind rectify_record needs a new prompt, a new answer or both")
        return self


class Job(_Message):
    """Work for an executor: retrain one shard of one model, for the requests coalesced into it."""

    schema_: Literal["erasure.job/v1"] = Field(JOB_SCHEMA, alias="schema")
    job_id: NonEmpty = Field(default_factory=lambda: str(uuid.uuid4()))
    model: NonEmpty
    shard: int = Field(ge=-1)  # -1: the model's components without a shard (APA's aggregator)
    request_ids: list[NonEmpty] = Field(min_length=1)
    created_at: Timestamp = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        """Kafka key: one shard's jobs land on one partition, in order, owned by one executor."""
        return self.key_of(self.model, self.shard)

    @staticmethod
    def key_of(model: str, shard: int) -> bytes:
        return f"{model}/{shard}".encode()


# approximate: an APPROXIMATE influence update was published (v1.1 requests with approximate);
# deadline_at_risk (event v1.1): the request's expected completion is past its deadline
Status = Literal["received", "planned", "approximate", "excluded", "certified", "restored", "rejected", "failed",
                 "deadline_at_risk"]


class OutcomeEvent(_Message):
    """What happened to a request, for data platforms and registry consumers."""

    schema_: Literal["erasure.event/v1", "erasure.event/v1.1"] = Field(EVENT_SCHEMA, alias="schema")
    request_id: NonEmpty
    status: Status
    model: str | None = None
    version: int | None = Field(None, description="Registry version: models:/MODEL/VERSION.")
    shards: list[int] | None = Field(None, description="The model's shards that held the records.")
    certificate_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    reason: str | None = None
    at: Timestamp = Field(default_factory=utcnow)
    requested_at: Timestamp | None = None
    deadline: Timestamp | None = None
    expected_at: Timestamp | None = Field(None, description="v1.1, deadline_at_risk: when the request is expected "
                                          "to complete, from measured stage times.")

    @model_validator(mode="before")
    @classmethod
    def _minor_version(cls, data: object) -> object:
        return _name_minor_version(data, EVENT_SCHEMA_V1_1, lambda d: d.get("status") == "deadline_at_risk"
                                   or d.get("expected_at") is not None)

    @model_validator(mode="after")
    def _v1_1_features_name_v1_1(self) -> "OutcomeEvent":
        if (self.status == "deadline_at_risk" or self.expected_at is not None) and self.schema_ == EVENT_SCHEMA:
            raise ValueError(f"status deadline_at_risk and expected_at need schema {EVENT_SCHEMA_V1_1!r}")
        return self


SCHEMAS: dict[str, type[_Message]] = {REQUEST_SCHEMA: ErasureRequest, REQUEST_SCHEMA_V1_1: ErasureRequest,
                                       JOB_SCHEMA: Job, EVENT_SCHEMA: OutcomeEvent, EVENT_SCHEMA_V1_1: OutcomeEvent}


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    # a location holds the message's own keys: an unknown field named "a\nb" is shown as 'a\nb'
    where = ".".join(str(p) if str(p).isprintable() else repr(p) for p in first["loc"]) or "message"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse(raw: bytes | str | dict | None, expect: type[_Message] | None = None) -> _Message:
    """Parse one message; BadInput with a one-line reason on anything but a JSON object of a known
    schema with valid fields: a null value (a tombstone), a value over MAX_MESSAGE_BYTES, bytes
    that are not JSON (undecodable, too deeply nested), unknown schema or fields."""
    if isinstance(raw, dict):
        data = raw
    elif raw is None:
        raise BadInput("empty message: the value is null (a tombstone)")
    elif not isinstance(raw, (bytes, bytearray, str)):
        raise BadInput(f"message value is a {type(raw).__name__}, not bytes")
    elif len(raw) > MAX_MESSAGE_BYTES:
        raise BadInput(f"message of {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} a message may have")
    else:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as err:  # ValueError: bad JSON, bad UTF-8, too many digits
            raise BadInput(f"not valid JSON: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise BadInput("message is not a JSON object")
    name = data.get("schema")
    cls = SCHEMAS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise BadInput(f"unknown schema {name!r} (expected one of: {', '.join(SCHEMAS)})")
    if expect is not None and cls is not expect:
        raise BadInput(f"schema {name!r} where an {expect.__name__} was expected")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise BadInput(_one_line(err)) from None


def new_request(fields: dict) -> ErasureRequest:
    """A request built from fields (no schema: v1, or v1.1 where a v1.1 feature is used);
    BadInput with a one-line reason."""
    try:
        return ErasureRequest.model_validate(fields)
    except ValidationError as err:
        raise BadInput(_one_line(err)) from None


def parse_request(raw: bytes | str | dict) -> ErasureRequest:
    return parse(raw, ErasureRequest)  # type: ignore[return-value]


def json_schemas() -> dict[str, dict]:
    return {name: cls.model_json_schema(by_alias=True) for name, cls in SCHEMAS.items()}
