"""RecordStore.export_rows / import_rows (what `erasure admin migrate` moves records with): every
row verbatim, still sealed, from SQLite into PostgreSQL (data keys into the keys' database);
resumable; a store holding other rows is refused with nothing written."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from ledger.errors import BadInput
from ledger.workspace import Workspace
from unlearning.data.partition import Partition
from unlearning.data.records import Provenance, RecordStore

BASE = "ab" * 32


def _keys_url(url: str) -> str:
    """The `database_url` fixture's `_keys` companion."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + "_keys"))


def test_rows_move_verbatim_and_a_second_import_adds_nothing(workspace: Workspace, database_url: str, records):
    partition = Partition.for_workspace(workspace)
    with RecordStore(workspace.records_db, workspace.record_keys_db, partition) as source:
        source.ingest(records(subjects=4, per_subject=3))
        first = source.records()[0]
        source.add_provenance([Provenance(first.commitment, "m", 1, "shard0", 0, 0, "train")])
        assert source.add_activations(BASE, [(first.commitment, "answer", b"hidden states")]) == 1
        source.erase_subject("user3")
        rows = source.export_rows()
        expected = source.records()
    assert {t: len(r) for t, r in rows.items()} == {"records": 9, "provenance": 1, "activations": 1,
                                                    "subject_keys": 3}
    with RecordStore.on_postgres(database_url, _keys_url(database_url), partition) as target:
        assert target.import_rows(rows) == {"records": 9, "provenance": 1, "activations": 1, "subject_keys": 3}
        assert target.export_rows() == rows  # the same sealed bytes
        assert target.records() == expected  # and they open with the moved keys
        assert target.activations(BASE, [first.commitment]) == {(first.commitment, "answer"): b"hidden states"}
        assert target.import_rows(rows) == dict.fromkeys(rows, 0)  # resumed: nothing twice


def test_a_store_holding_other_rows_is_refused_with_nothing_written(workspace: Workspace, database_url: str,
                                                                    records):
    partition = Partition.for_workspace(workspace)
    with RecordStore(workspace.records_db, workspace.record_keys_db, partition) as source:
        source.ingest(records(subjects=2, per_subject=2))
        rows = source.export_rows()
    with RecordStore.on_postgres(database_url, _keys_url(database_url), partition) as target:
        target.ingest(records(subjects=2, per_subject=2))  # the same ids, sealed under other keys and salts
        before = target.export_rows()
        with pytest.raises(BadInput, match="another records row under 'rec-0-0'"):
            target.import_rows(rows)
        assert target.export_rows() == before
        target.erase_subject("user0")
        target.erase_subject("user1")
        target.ingest(records(subjects=3, per_subject=2)[4:])  # only rows the source lacks
        with pytest.raises(BadInput, match="rows this store does not"):
            target.import_rows(rows)
        assert len(target.records()) == 2
