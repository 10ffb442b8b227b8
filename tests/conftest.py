"""Session-wide fixtures: a real Apache Kafka broker and a real MLflow tracking server.

They are started through the same code as `erasure dev up`, or reused when `ERASURE_KAFKA` /
`MLFLOW_TRACKING_URI` point at running ones, and stopped at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ledger.workspace import Workspace


@dataclass(frozen=True)
class Endpoints:
    kafka: str  # bootstrap host:port
    mlflow: str  # tracking URI (http)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    from consumers import local_services

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
