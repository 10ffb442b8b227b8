"""A workspace with a database URL keeps its ledger on PostgreSQL: the commands that look for the
ledger find it there (not in a missing ledger.db), and `erasure check` checks it there."""

from __future__ import annotations

import psycopg
import pytest

from ledger.errors import BadInput, ServiceError
from ledger.log import open_ledger
from ledger.postgres_store import describe
from ledger.workspace import Workspace
from services.process import free_port
from unlearning.operations.check import check_shared_ledger, check_sqlite
from unlearning.operations.status import request_status


def test_status_and_check_follow_the_database(workspace: Workspace, database_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with open_ledger(workspace) as local:  # an embedded ledger.db left behind is not the shared ledger
        local.append("e", {})
    monkeypatch.setenv("ERASURE_DATABASE_URL", database_url)
    where = describe(database_url)
    with pytest.raises(BadInput, match=f"no ledger at {where}"):
        request_status(workspace, "r-1")
    assert check_shared_ledger(workspace) == [] and check_sqlite(workspace) == []
    with open_ledger(workspace) as ledger:
        ledger.append_many([("e", {"i": i}) for i in range(5)])
    with pytest.raises(BadInput, match="no request 'r-1' in the ledger"):  # the ledger is found, the request not
        request_status(workspace, "r-1")
    [finding] = check_shared_ledger(workspace)
    assert (finding.store, finding.path, finding.problem) == ("ledger", where, None)
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("DELETE FROM ledger.entries WHERE idx = 2")
    [finding] = check_shared_ledger(workspace)
    assert finding.problem == "1 of the entries below 5 are missing"
    assert finding.line() == f"ledger: {where}: 1 of the entries below 5 are missing"


def test_an_unreachable_database_is_a_service_error(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASURE_DATABASE_URL", f"postgresql://erasure@127.0.0.1:{free_port()}/erasure")
    with pytest.raises(ServiceError, match=r"^cannot open ledger database postgresql://127\.0\.0\.1:\d+/erasure: "):
        check_shared_ledger(workspace)
    with pytest.raises(ServiceError, match="cannot open ledger database"):
        open_ledger(workspace)
