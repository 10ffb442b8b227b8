"""What the intake does with a request, apart from HTTP: authenticate its sender, parse it,
refuse a replay, produce it to `erasure.requests`, and record a refusal.

Two ways in:

- our schema (`ErasureRequest` JSON) with a sender's bearer token; the requester is the sender;
- an IAB DDRF rqJWT (`producers.ddrf`), signed by a registered sender, answered with our acJWT.

A refused request never reaches Kafka's requests topic, so never the planner. When it can be
pinned to a registered sender (a valid token; a DDRF issuer that is registered, signature good
or not) it is recorded as the pipeline records bad input: a `request_rejected` ledger entry, a
DLQ copy with the reason and a `rejected` event. What names no registered sender is answered
and logged only: the ledger is not open to anyone who can reach the port.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field

from consumers.intake.ack import AckSigner
from consumers.intake.outlet import Outlet
from consumers.intake.replay import Accepted
from consumers.intake.senders import Sender, Senders
from consumers.topics import Topics
from ledger import entries
from ledger.errors import BadInput, ServiceError
from ledger.log import log_exists, open_ledger
from ledger.workspace import Workspace
from producers import ddrf
from producers.schemas import MAX_MESSAGE_BYTES, ErasureRequest, parse_request

log = logging.getLogger("erasure.intake")
RETRY_AFTER_S = 30
RESERVED = ("ddrf:", "http:", "kafka:")  # request ids the intake and the planner make


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """`[intake]` in erasure.toml."""

    name: str = "erasure.local"  # our DDRF issuer and audience (an eTLD+1)
    identifiers: tuple[tuple[str, str], ...] = (("ppuid", "plaintext"),)  # DDRF (type, format) we erase by
    max_age_s: float = ddrf.MAX_AGE_S  # the oldest rqJWT we take
    endpoint: str | None = None  # our public DDRF endpoint URL (default: as the request reached us)

    @classmethod
    def of(cls, ws: Workspace) -> "Settings":
        given = ws.config().get("intake", {})
        try:
            pairs = tuple(tuple(i.split("/", 1)) for i in given.get("identifiers", ["ppuid/plaintext"]))
            settings = cls(str(given.get("name", cls.name)), pairs, float(given.get("max_age_s", cls.max_age_s)),
                           given.get("endpoint"))
        except (TypeError, ValueError, AttributeError) as err:
            raise BadInput(f"{ws.config_file}: [intake]: {err}") from None
        if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
            raise BadInput(f"{ws.config_file}: [intake] identifiers must be a list of 'TYPE/FORMAT' strings")
        return settings


class Desk:
    def __init__(self, ws: Workspace, topics: Topics, bootstrap: str, kafka_timeout_s: float = 15.0) -> None:
        self.ws = ws
        self.settings = Settings.of(ws)
        self.signer = AckSigner(ws.key_dir, self.settings.name)
        self.senders = Senders(ws)
        self.accepted = Accepted(ws)
        self.outlet = Outlet(ws, topics, bootstrap, kafka_timeout_s)

    def ours(self, authorization: str | None, body: bytes) -> Answer:
        """POST /v1/requests: 202, 401 (no or bad token), 413, 422 (not a request), 409 (a
        replayed request id), 503 (Kafka away)."""
        scheme, _, token = (authorization or "").partition(" ")
        sender = self.senders.by_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if sender is None:
            reason = "a valid bearer token is required" if authorization else "missing bearer token"
            log.info("intake: 401 %s", reason)
            return Answer(401, {"error": reason}, {"WWW-Authenticate": 'Bearer realm="erasure"'})
        if len(body) > MAX_MESSAGE_BYTES:
            return self._refuse(413, sender, body, f"request of {len(body)}+ bytes, over the {MAX_MESSAGE_BYTES} "
                                "a request may have", "/v1/requests")
        try:
            request = parse_request(body)
            if request.request_id.startswith(RESERVED):
                raise BadInput(f"request_id: ids starting with {', '.join(RESERVED)} are the intake's own")
        except BadInput as err:
            return self._refuse(422, sender, body, f"malformed request: {err}", "/v1/requests", _named_id(body))
        return self._produce(request.model_copy(update={"requester": sender.name}), sender, body, "/v1/requests")

    def ddrf(self, body: bytes) -> Answer:
        """POST /v1/ddrf: an rqJWT, as `application/jwt` or JSON `{"rqJWT": ...}`; 202 or 400
        with an acJWT carrying the framework's result code, 409 (replayed) with one, 503 without."""
        token = _rq_token(body)
        try:
            if token is None:
                raise ddrf.Refused(ddrf.Result.MALFORMED_REQUEST, "the body must be an rqJWT (application/jwt) or "
                                   'JSON {"rqJWT": "..."}')
            verified = ddrf.verify_request(token, self.senders.keys_of, self.settings.name, self.settings.identifiers,
                                           self.settings.max_age_s)
            sender = self.senders.by_issuer(verified.requester)
            if sender is None:  # removed meanwhile
                raise ddrf.Refused(ddrf.Result.INVALID_SIGNATURE, f"no sender {verified.requester!r} is registered")
            request = ddrf.to_request(verified, sender.name)
        except ddrf.Refused as err:
            echo = token or body.decode("utf-8", "replace")
            sender = _claimed_sender(self.senders, token)
            if sender is None:
                log.info("intake: 400 DDRF request of no registered sender: %s", err)
                return self._acked(Answer(400, {"error": str(err)}), echo, err.code)
            return self._acked(self._refuse(400, sender, body, f"DDRF: {err}", "/v1/ddrf", fresh=True), echo, err.code)
        answer = self._produce(request, sender, body, "/v1/ddrf")
        if answer.status == 202:
            return self._acked(answer, token, ddrf.Result.SUCCESS)
        if answer.status == 409:
            return self._acked(answer, token, ddrf.Result.INVALID_TOKEN)
        return answer

    def dsrdelete(self, endpoint: str) -> dict:
        return self.signer.dsrdelete(self.settings.endpoint or endpoint, list(self.settings.identifiers))

    def close(self) -> None:
        self.outlet.close()

    def _produce(self, request: ErasureRequest, sender: Sender, body: bytes, path: str) -> Answer:
        rid = request.request_id
        replay = self._in_ledger(rid) or self.accepted.claim(rid, sender.name)
        if replay:
            return self._refuse(409, sender, body, f"replayed: {replay}", path, fresh=True)
        try:
            self.outlet.send(request)
        except ServiceError as err:
            self.accepted.release(rid)
            log.warning("intake: 503 request %s from %s: %s", rid, sender.name, err)
            return Answer(503, {"error": str(err)}, {"Retry-After": str(RETRY_AFTER_S)})
        self.accepted.confirm(rid)
        log.info("intake: 202 request %s from %s", rid, sender.name)
        return Answer(202, {"request_id": rid})

    def _refuse(self, status: int, sender: Sender, body: bytes, reason: str, path: str, named: str | None = None,
                fresh: bool = False) -> Answer:
        """Record a refusal (ledger, DLQ, event) under the id the body names, unless that one is
        taken (or `fresh`: the body's id is not the sender's to use), then under a new
        `http:SENDER/HEX` id."""
        taken = fresh or not named or self._in_ledger(named, rejected=True) or self.accepted.holds(named)
        rid = f"http:{sender.name}/{uuid.uuid4().hex[:16]}" if taken else named
        source = {"via": "http", "endpoint": path, "sender": sender.name}
        with open_ledger(self.ws) as ledger:
            ledger.append_many([entries.request_rejected(rid, reason, source=source)])
        self.outlet.refused(rid, body, reason, f"http:{path}/{sender.name}")
        log.info("intake: %d request %s from %s: %s", status, rid, sender.name, reason)
        return Answer(status, {"error": reason, "request_id": rid})

    def _in_ledger(self, request_id: str, rejected: bool = False) -> str | None:
        """Why `request_id` is taken in the ledger: received before (or, with `rejected`, rejected
        before), or None. A request may be sent again, corrected, under the id of a rejected one."""
        if not log_exists(self.ws):
            return None
        with open_ledger(self.ws, create=False) as ledger:
            for key, what in ((entries.received_key(request_id), "received"),
                              (entries.rejected_key(request_id), "rejected"))[:2 if rejected else 1]:
                index = ledger.find(key)
                if index is not None:
                    return f"request id {request_id!r} was {what} before (ledger entry {index})"
        return None

    def _acked(self, answer: Answer, rq_token: str, code: ddrf.Result) -> Answer:
        """`answer` with our acJWT for `rq_token`; its raResultString is the error, if any."""
        ack = self.signer.sign(rq_token, code, answer.body.get("error"))
        return Answer(answer.status, {**answer.body, "acJWT": ack, "raResultCode": int(code)}, answer.headers)


def _rq_token(body: bytes) -> str | None:
    """The rqJWT of a body: the compact token itself, or JSON {"rqJWT": ...}."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            token = json.loads(text).get("rqJWT")
        except (ValueError, AttributeError, RecursionError):
            return None
        return token if isinstance(token, str) else None
    return text or None


def _claimed_sender(senders: Senders, token: str | None) -> Sender | None:
    """The registered sender an unverified rqJWT names as its issuer, if any."""
    import jwt

    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss") if token else None
    except jwt.InvalidTokenError:
        return None
    return senders.by_issuer(issuer) if isinstance(issuer, str) else None


def _named_id(body: bytes) -> str | None:
    """The request id a malformed body names, if it names a usable one."""
    try:
        rid = json.loads(body).get("request_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 256 and not rid.startswith(RESERVED) else None
