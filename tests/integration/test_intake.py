"""The HTTP intake against the real broker and MLflow: a uvicorn server on a free 127.0.0.1 port,
requests over HTTP (urllib), a planner and an executor in process.

One module workspace holds a certified SISA model, the intake key and two senders: a DDRF
publisher (its keys from its dsrdelete.json) and a platform with a bearer token. Refused
requests must be recorded (ledger, DLQ, `rejected` event) and never reach the requests topic.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from kafka import KafkaConsumer
from typer.testing import CliRunner

from cli.app import app
from consumers.intake.server import Intake
from consumers.serve import Service
from consumers.topics import Topics
from producers.ddrf import public_keys, verify_ack
from tests.integration.pipeline_kit import TIMEOUT_S, Events, entries, fresh_topics, trained_model, victims
from tests.producers.ddrf_kit import Party

pytestmark = pytest.mark.services
runner = CliRunner()
PUBLISHER = Party("publisher.example")
US = "erasure.local"  # the intake's default DDRF name


class Desk:
    """The module's workspace, senders and topics, with the intake and the pipeline serving them."""

    def __init__(self, ws, name: str, topics: Topics, url: str, token: str) -> None:  # type: ignore[no-untyped-def]
        self.ws, self.name, self.topics, self.url, self.token = ws, name, topics, url, token


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mlflow_uri: str) -> Iterator[Desk]:
    home = tmp_path_factory.mktemp("intake")
    name = f"intake-{uuid.uuid4().hex[:8]}"
    with trained_model(home, kafka_bootstrap, mlflow_uri, name, subjects=12) as ws:
        assert runner.invoke(app, ["keys", "intake"]).exit_code == 0
        (home / "publisher.json").write_text(json.dumps(PUBLISHER.dsrdelete()))
        added = runner.invoke(app, ["intake", "add-sender", PUBLISHER.domain, "--ddrf-keys", str(home / "publisher.json")])
        assert added.exit_code == 0, added.output
        token = runner.invoke(app, ["intake", "add-sender", "platform"]).stdout.strip()
        assert (ws.home / "intake" / "senders.json").stat().st_mode & 0o777 == 0o600
        assert token not in (ws.home / "intake" / "senders.json").read_text()
        topics = fresh_topics(kafka_bootstrap)
        services = [Service(ws, role, topics, window_s=0.5, instance=f"test-{role}", bootstrap=kafka_bootstrap,
                            port=0).start() for role in ("intake", "all")]
        try:
            yield Desk(ws, name, topics, services[0].intake.url, token)  # type: ignore[union-attr]
        finally:
            for service in services:
                service.stop()
            for service in services:
                assert service.wait(TIMEOUT_S) and not service.errors, service.errors


@pytest.fixture
def events(kafka_bootstrap: str, desk: Desk) -> Iterator[Events]:
    with Events(kafka_bootstrap, desk.topics) as reader:
        yield reader


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def ddrf(url: str, token: str) -> tuple[int, dict, dict]:
    return post(f"{url}/v1/ddrf", token.encode(), {"Content-Type": "application/jwt"})


def our_keys(desk: Desk) -> list[dict]:
    """The sender's view of our acknowledgement key: our published dsrdelete.json."""
    import urllib.request

    with urllib.request.urlopen(f"{desk.url}/.well-known/dsrdelete.json", timeout=30) as response:
        published = json.loads(response.read())
    assert published["endpoint"] == f"{desk.url}/v1/ddrf"
    assert published["identifiers"] == [{"id": 1, "type": "ppuid", "format": "plaintext"}]
    return public_keys(published, "dsrdelete.json")


def read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_ddrf_request_is_restored_and_its_ack_verifies_with_our_published_key(desk: Desk, events: Events) -> None:
    subject = victims(desk.ws, desk.name, 1)[0]
    token = PUBLISHER.rq_jwt(PUBLISHER.id_jwt(subject), subject, aud=US)
    status, body, _ = ddrf(desk.url, token)
    assert status == 202, body
    ack = verify_ack(body["acJWT"], our_keys(desk), US)
    assert (ack["raResultCode"], ack["rqJWT"], ack["version"]) == (0, token, "1.0")
    rid = f"ddrf:{PUBLISHER.domain}:{jwt.decode(token, options={'verify_signature': False})['jti']}"
    assert body["request_id"] == rid
    events.until(events.has(rid, "restored"))
    assert [e.status for e in events.of(rid)] == ["received", "planned", "excluded", "certified", "restored"]
    [received] = entries(desk.ws, "request_received", request_id=rid)
    assert received["source"]["requester"] == PUBLISHER.domain and subject not in json.dumps(received)


def test_refused_ddrf_requests_are_recorded_and_never_reach_the_planner(desk: Desk, events: Events,
                                                                        kafka_bootstrap: str) -> None:
    keys = our_keys(desk)
    accepted = PUBLISHER.rq_jwt(PUBLISHER.id_jwt("nobody"), "nobody")  # the planner rejects the unknown subject
    assert ddrf(desk.url, accepted)[0] == 202
    refused = {  # name: (token, HTTP status, raResultCode)
        "forged": (PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u1"), "u1", key=ec.generate_private_key(ec.SECP256R1())), 400, 2),
        "wrong audience": (PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u1"), "u1", aud="someone.else"), 400, 3),
        "expired": (PUBLISHER.rq_jwt(PUBLISHER.id_jwt("u1"), "u1", exp=1_700_000_000), 400, 6),
        "replayed": (accepted, 409, 3),
    }
    ids = {}
    for what, (token, http, code) in refused.items():
        status, body, _ = ddrf(desk.url, token)
        assert (status, body["raResultCode"]) == (http, code), (what, body)
        ack = verify_ack(body["acJWT"], keys, US)
        assert (ack["raResultCode"], ack["rqJWT"], ack["raResultString"]) == (code, token, body["error"])
        assert body["request_id"].startswith(f"http:{PUBLISHER.domain}/")
        ids[what] = body["request_id"]
    stranger = Party("stranger.example")  # names no registered sender: answered, not recorded
    status, body, _ = ddrf(desk.url, stranger.rq_jwt(stranger.id_jwt("u1"), "u1"))
    assert (status, body["raResultCode"], "request_id" in body) == (400, 2, False)
    status, body, _ = post(f"{desk.url}/v1/ddrf", b'{"no": "token"}', {"Content-Type": "application/json"})
    assert (status, body["raResultCode"]) == (400, 1)

    events.until(lambda seen: all(events.has(rid, "rejected")(seen) for rid in ids.values()))
    rejected = {e["request_id"]: e for e in entries(desk.ws, "request_rejected")}
    for what, rid in ids.items():
        assert rejected[rid]["source"] == {"via": "http", "endpoint": "/v1/ddrf", "sender": PUBLISHER.domain}
        assert events.of(rid, "rejected")[0].reason == rejected[rid]["reason"]
    assert "signature does not verify" in rejected[ids["forged"]]["reason"]
    assert "aud" in rejected[ids["wrong audience"]]["reason"] and "expired" in rejected[ids["expired"]]["reason"]
    assert "replayed" in rejected[ids["replayed"]]["reason"]
    dead = {m.value.decode(): dict(m.headers) for m in read_all(kafka_bootstrap, desk.topics.dlq)}
    for what, (token, _, _) in refused.items():
        assert dead[token]["erasure.source"] == f"http:/v1/ddrf/{PUBLISHER.domain}".encode(), what
    on_requests = [json.loads(m.value)["request_id"] for m in read_all(kafka_bootstrap, desk.topics.requests)]
    accepted_id = f"ddrf:{PUBLISHER.domain}:{jwt.decode(accepted, options={'verify_signature': False})['jti']}"
    assert on_requests.count(accepted_id) == 1  # the replay did not reach it
    refused_ids = {f"ddrf:{PUBLISHER.domain}:{jwt.decode(t, options={'verify_signature': False})['jti']}"
                   for t, _, _ in list(refused.values())[:3]}
    assert not refused_ids & set(on_requests)


def test_the_bearer_token_path(desk: Desk, events: Events, kafka_bootstrap: str) -> None:
    url, auth = f"{desk.url}/v1/requests", {"Authorization": f"Bearer {desk.token}"}
    request = {"schema": "erasure.request/v1", "request_id": f"r-{uuid.uuid4().hex[:10]}", "kind": "erase_subject",
               "subject_id": "nobody", "model": desk.name, "requester": "someone else"}
    body = json.dumps(request).encode()
    status, answer, headers = post(url, body)
    assert (status, headers.get("www-authenticate")) == (401, 'Bearer realm="erasure"'), answer
    assert post(url, body, {"Authorization": "Bearer ers_not-a-token"})[0] == 401
    status, answer, _ = post(url, body, auth)
    assert (status, answer) == (202, {"request_id": request["request_id"]})
    status, replay, _ = post(url, body, auth)
    assert status == 409 and "replayed" in replay["error"] and replay["request_id"].startswith("http:platform/")
    malformed = {**request, "request_id": f"r-{uuid.uuid4().hex[:10]}", "subject_id": None}
    status, bad, _ = post(url, json.dumps(malformed).encode(), auth)
    assert (status, bad["request_id"]) == (422, malformed["request_id"]) and "subject_id" in bad["error"]
    assert post(url, b"x" * (1024 * 1024 + 1), auth)[0] == 413
    corrected = {**malformed, "subject_id": "nobody"}  # a refused request may come again under its id
    assert post(url, json.dumps(corrected).encode(), auth)[:2] == (202, {"request_id": malformed["request_id"]})

    # the accepted one went through Kafka to the planner (which rejects the unknown subject), as the sender
    events.until(lambda seen: all(events.has(r, "rejected")(seen)
                                  for r in (request["request_id"], replay["request_id"], bad["request_id"])))
    assert "unknown subject" in (events.of(request["request_id"], "rejected")[0].reason or "")
    produced = [json.loads(m.value) for m in read_all(kafka_bootstrap, desk.topics.requests)]
    assert [r["requester"] for r in produced if r["request_id"] == request["request_id"]] == ["platform"]
    assert [r["subject_id"] for r in produced if r["request_id"] == malformed["request_id"]] == ["nobody"]
    [logged] = entries(desk.ws, "request_rejected", request_id=malformed["request_id"])
    assert logged["source"]["sender"] == "platform" and "subject_id" in logged["reason"]
    dead = [m for m in read_all(kafka_bootstrap, desk.topics.dlq)
            if dict(m.headers)["erasure.source"] == b"http:/v1/requests/platform"]
    assert json.dumps(malformed).encode() in [m.value for m in dead]


def test_kafka_away_is_a_503_and_the_request_id_stays_free(desk: Desk) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    intake = Intake(desk.ws, desk.topics, dead, port=0, kafka_timeout_s=1.0)
    stop = threading.Event()
    serving = threading.Thread(target=intake.run, args=(stop,))
    serving.start()
    try:
        rid = f"r-{uuid.uuid4().hex[:10]}"
        body = json.dumps({"schema": "erasure.request/v1", "request_id": rid, "kind": "erase_subject",
                           "subject_id": "nobody"}).encode()
        status, answer, headers = post(f"{intake.url}/v1/requests", body, {"Authorization": f"Bearer {desk.token}"})
        assert (status, headers.get("retry-after")) == (503, "30") and "unavailable" in answer["error"]
        assert not intake.desk.accepted.holds(rid)
        status, answer, _ = ddrf(intake.url, PUBLISHER.rq_jwt(PUBLISHER.id_jwt("nobody"), "nobody"))
        assert status == 503 and "acJWT" not in answer
    finally:
        stop.set()
        serving.join(30)
