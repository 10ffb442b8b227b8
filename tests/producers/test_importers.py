"""Bulk import files: all-or-nothing parsing with line numbers."""

from pathlib import Path

import pytest

from ledger.errors import BadInput
from producers.importers import read_requests


def test_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"kind": "erase_subject", "subject_id": "1"}\n\n'
                     '{"kind": "erase_records", "subject_id": "2", "record_ids": ["a", "b"]}\n')
    reqs = read_requests(jsonl)
    assert [r.subject_id for r in reqs] == ["1", "2"] and reqs[1].record_ids == ["a", "b"]

    csv = tmp_path / "r.csv"
    csv.write_text("subject_id,record_ids,deadline\n7,,\n8,x;y,2026-12-01T00:00:00Z\n")
    reqs = read_requests(csv)
    assert [r.kind for r in reqs] == ["erase_subject", "erase_records"]
    assert reqs[1].record_ids == ["x", "y"] and reqs[1].deadline.year == 2026


@pytest.mark.parametrize(("name", "body", "where"), [
    ("bad.jsonl", '{"kind": "erase_subject", "subject_id": "1"}\n{oops\n', ":2: not valid JSON"),
    ("bad.jsonl", '{"kind": "erase_subject"}\n', ":1: subject_id"),
    ("bad.csv", "subject_id\n1\n\"\"\n", ":3: subject_id"),
    ("bad.csv", "user\n1\n", ":1: the CSV header"),
    ("dup.jsonl", '{"kind":"erase_subject","subject_id":"1","request_id":"r"}\n'
                  '{"kind":"erase_subject","subject_id":"2","request_id":"r"}\n', "duplicate request_id"),
    ("x.txt", "", "expected a .jsonl or .csv"),
])
def test_bad_files_name_the_line(tmp_path: Path, name: str, body: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(BadInput, match=where):
        read_requests(path)
