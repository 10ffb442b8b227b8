"""The intake's HTTP face (FastAPI): thin routes over `Desk`; this module's docstrings are the
API's documentation (`GET /openapi.json`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from consumers.intake import dashboard
from consumers.intake.desk import Answer, Desk
from ledger.errors import ErasureError
from producers.schemas import MAX_MESSAGE_BYTES, ErasureRequest

log = logging.getLogger("erasure.intake")
JWT_BODY = {"application/jwt": {"schema": {"type": "string", "description": "The rqJWT (JWS compact)."}},
            "application/json": {"schema": {"type": "object", "properties": {"rqJWT": {"type": "string"}},
                                            "required": ["rqJWT"]}}}


def make_app(desk: Desk) -> FastAPI:
    app = FastAPI(title="Erasure intake", docs_url=None, redoc_url=None,
                  description="Erasure requests over HTTP: our schema with a sender's bearer token, or IAB Tech Lab "
                              "DDRF signed JWTs. Accepted requests go to Kafka (erasure.requests); follow them with "
                              "`erasure status REQUEST_ID` or the erasure.events topic.")

    @app.exception_handler(ErasureError)
    async def _failed(request: Request, err: ErasureError) -> JSONResponse:
        log.error("intake: 500 %s %s: %s", request.method, request.url.path, err)
        return JSONResponse({"error": str(err)}, status_code=500)

    @app.post("/v1/requests", status_code=202, openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ErasureRequest.model_json_schema(by_alias=True)}}}})
    async def post_request(request: Request) -> JSONResponse:
        """Send one request of our schema (erasure.request/v1 or v1.1) with `Authorization: Bearer
        TOKEN` (`erasure intake add-sender`); its requester is the sender.

        202 `{request_id}` once Kafka holds it; 401 no or bad token; 413 over 1 MiB; 422 not a
        valid request; 409 its request id was used before; 503 Kafka unavailable (retry after the
        Retry-After seconds). A 413, 422 or 409 is recorded: a `request_rejected` ledger entry,
        a DLQ copy and a `rejected` event, under the `request_id` the answer names.
        """
        body = await _body(request)
        return _respond(await run_in_threadpool(desk.ours, request.headers.get("authorization"), body))

    @app.post("/v1/ddrf", openapi_extra={"requestBody": {"required": True, "content": JWT_BODY}})
    async def post_ddrf(request: Request) -> JSONResponse:
        """Send an IAB DDRF 1.0 deletion request: the rqJWT (with its idJWT), signed by a sender
        registered with `--ddrf-keys`, as `application/jwt` or JSON `{"rqJWT": ...}`.

        202 with our `acJWT` (raResultCode 0) once Kafka holds the request `ddrf:ISS:JTI`; 400
        with an acJWT carrying the framework's result code (1 malformed, 2 bad signature, 3
        invalid token or wrong aud, 4/5 identifier type/format, 6 expired or stale); 409 with an
        acJWT (code 3) for a replayed rqJWT; 503 without one when Kafka is unavailable. Verify
        the acJWT with the key of `GET /.well-known/dsrdelete.json`.
        """
        body = await _body(request)
        return _respond(await run_in_threadpool(desk.ddrf, body))

    @app.get("/.well-known/dsrdelete.json")
    @app.get("/dsrdelete.json")
    async def dsrdelete(request: Request) -> dict:
        """Our dsrdelete.json: the DDRF endpoint, the identifiers we erase by, and the public key
        (JWK, ES256) our acJWTs verify with."""
        return desk.dsrdelete(str(request.url_for("post_ddrf")))

    app.include_router(dashboard.router(desk.ws))  # read-only; off until `erasure intake dashboard-token`
    return app


async def _body(request: Request) -> bytes:
    """The body, read up to one byte past the largest a request may have."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            break
    return bytes(body[:MAX_MESSAGE_BYTES + 1])


def _respond(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
