"""Read erasure requests from data-platform exports (JSONL or CSV), all-or-nothing.

Every row is validated before anything is sent, so a bad line sends nothing and is reported
with its line number.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ledger.errors import BadInput
from producers.schemas import REQUEST_SCHEMA, REQUEST_SCHEMA_V1_1, ErasureRequest, parse_request

# CSV carries the request fields as columns; record_ids is a ';'-separated list.
_LIST_SEPARATOR = ";"


def _from_csv_row(row: dict[str, str]) -> dict:
    data = {k: v for k, v in row.items() if k is not None and v not in ("", None)}
    if "record_ids" in data:
        data["record_ids"] = [r for r in data["record_ids"].split(_LIST_SEPARATOR) if r]
    data.setdefault("kind", "erase_records" if data.get("record_ids") else "erase_subject")
    return data


def read_requests(path: Path) -> list[ErasureRequest]:
    """Parse a `.jsonl` or `.csv` file of requests; BadInput names the first bad line."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise BadInput(f"{path}: expected a .jsonl or .csv file")
    requests: list[ErasureRequest] = []
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".jsonl":
            rows = ((n, line) for n, line in enumerate(f, start=1) if line.strip())
            for n, line in rows:
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadInput(f"{path}:{n}: not valid JSON: {err.msg}") from None
                requests.append(_parse_line(path, n, data))
        else:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "subject_id" not in reader.fieldnames:
                raise BadInput(f"{path}:1: the CSV header needs a subject_id column")
            for row in reader:
                requests.append(_parse_line(path, reader.line_num, _from_csv_row(row)))
    ids = [r.request_id for r in requests]
    if len(ids) != len(set(ids)):
        raise BadInput(f"{path}: duplicate request_id values")
    return requests


def _parse_line(path: Path, line: int, data: object) -> ErasureRequest:
    if isinstance(data, dict) and "schema" not in data:  # the oldest schema that can carry the line
        v1_1 = data.get("kind") == "rectify_record" or data.get("approximate") is not None
        data = {"schema": REQUEST_SCHEMA_V1_1 if v1_1 else REQUEST_SCHEMA, **data}
    try:
        return parse_request(data)
    except BadInput as err:
        raise BadInput(f"{path}:{line}: {err}") from None
