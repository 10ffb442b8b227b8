"""The HTTP intake (`erasure serve --role intake`): erasure requests over HTTP, in our schema
with a sender's bearer token or as IAB Tech Lab DDRF signed JWTs, produced to `erasure.requests`.

senders.py (who may send: token digests, DDRF issuers and keys), replay.py (request ids taken),
desk.py (authenticate, parse, refuse, produce, record refusals), outlet.py (Kafka), ack.py
(acJWT signing, our dsrdelete.json), app.py (FastAPI routes), server.py (uvicorn in a thread).
"""
