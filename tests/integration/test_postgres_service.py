"""services/postgres.py: the cluster directory is created fresh and private, never adopted."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import ServiceError
from ledger.workspace import Workspace
from services import postgres


def test_a_cluster_directory_someone_else_made_is_refused(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "home")
    root = postgres.cluster_dir(ws)
    root.mkdir(mode=0o755, parents=True)  # made first by another user (as root: not the server's user)
    try:
        with pytest.raises(ServiceError, match="not a private directory of the PostgreSQL server's user"):
            postgres.start_postgres(ws)
        assert list(root.iterdir()) == []  # nothing written into it
    finally:
        root.rmdir()
