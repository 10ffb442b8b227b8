"""Shared fixtures.

- Session-wide: a real Apache Kafka broker and a real MLflow tracking server, started through
  the same code as `erasure dev up` (or reused when `ERASURE_KAFKA` / `MLFLOW_TRACKING_URI`
  point at running ones) and stopped at the end of the session.
- Per test: a fresh workspace, and small synthetic TALLRec-style records. The records use the
  MovieLens prompt template with made-up titles and a learnable rule (the answer is "Yes" when
  the target shares its first word with a liked title), so the tiny model trains in seconds
  and no MovieLens data is needed.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.workspace import Workspace
from unlearning.data.movielens import Item, prompt
from unlearning.data.records import Record


@dataclass(frozen=True)
class Endpoints:
    kafka: str  # bootstrap host:port
    mlflow: str  # tracking URI (http)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    from services import local as local_services

    given = {"kafka": os.environ.get("ERASURE_KAFKA"), "mlflow": os.environ.get("MLFLOW_TRACKING_URI")}
    missing = tuple(name for name, endpoint in given.items() if not endpoint)
    ws = Workspace(tmp_path_factory.mktemp("services"))
    started = local_services.up(ws, which=missing) if missing else {}
    try:
        endpoints = {name: given[name] or started[name].endpoint for name in given}
        yield Endpoints(kafka=endpoints["kafka"], mlflow=endpoints["mlflow"])
    finally:
        if missing:
            local_services.down(ws)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Endpoints) -> str:
    return services.kafka


@pytest.fixture(scope="session")
def mlflow_uri(services: Endpoints) -> str:
    return services.mlflow


def _local_service(tmp_path_factory: pytest.TempPathFactory, which: str) -> Iterator[str]:
    """One service started as `erasure dev up --shared` starts it, in a workspace of its own; its
    endpoint until the session ends, then stopped and its data deleted."""
    from services import local as local_services

    ws = Workspace(tmp_path_factory.mktemp(which))
    started = local_services.up(ws, which=(which,))
    try:
        yield started[which].endpoint
    finally:
        local_services.down(ws, purge=True)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server (Debian's, as `erasure dev up --shared` starts it) for the session:
    the URL of its `erasure` database. Tests take a database of their own (`database_url`)."""
    yield from _local_service(tmp_path_factory, "postgres")


@pytest.fixture
def database_url(postgres_server: str) -> str:
    """A fresh, empty database (and its `_keys` companion) on the session's PostgreSQL server."""
    from services.postgres import create_database

    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(postgres_server, f"{name}_keys")
    return create_database(postgres_server, name)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS, as `erasure dev up --shared` starts it) for the session: the
    object store URL of its `erasure` bucket. Tests take a prefix of their own (`object_store_url`)."""
    yield from _local_service(tmp_path_factory, "s3")


@pytest.fixture
def object_store_url(s3_server: str) -> str:
    """A fresh, empty prefix of the session's S3 bucket (s3://erasure/t-XXXX?endpoint=...&credentials=...)."""
    bucket, query = s3_server.split("?", 1)
    return f"{bucket}/t-{uuid.uuid4().hex[:12]}?{query}"


WORDS = ["Star", "Night", "River", "Ghost", "Summer", "Iron", "Blue", "Wild"]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("ERASURE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ERASURE_KEY_DIR", raising=False)
    return with_fixed_partition_key(Workspace.from_env())


def with_fixed_partition_key(workspace: Workspace) -> Workspace:
    """A fixed partition key, so which synthetic subjects are held out is the same on every run."""
    workspace.key_dir.mkdir(parents=True)
    (workspace.key_dir / "partition.key").write_bytes(b"fixed partition key for tests..!")
    (workspace.key_dir / "partition.key").chmod(0o600)
    return workspace


def make_records(subjects: int = 8, per_subject: int = 5, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)

    def item(i: int) -> Item:
        return Item(str(i), f"{rng.choice(WORDS)} {rng.choice(WORDS).lower()}", str(rng.randint(1950, 1999)), ())

    records = []
    for s in range(subjects):
        for k in range(per_subject):
            liked, disliked, target = [item(1) for _ in range(2)], [item(2)], item(3)
            answer = "Yes" if any(t.title.split()[0] == target.title.split()[0] for t in liked) else "No"
            records.append(Record(f"rec-{s}-{k}", f"user{s}", prompt(liked, disliked, target), answer))
    return records


@pytest.fixture
def records() -> Callable[..., list[Record]]:
    return make_records


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[list], Path]:
    def write(rows: list, name: str = "records.jsonl") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r if isinstance(r, dict) else r.__dict__) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
