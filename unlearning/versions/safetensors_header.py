"""The JSON header of a safetensors file, read without the safetensors library.

An auditor's base install has neither safetensors nor numpy, yet verifying an APA version
reads the aggregator's header: its metadata names the adapter behind each prediction column,
and the shape of `predictions` says how many columns there are. The format: an 8-byte
little-endian unsigned header length N, then N bytes of UTF-8 JSON (`__metadata__`: string
-> string; per tensor: `dtype`, `shape`, `data_offsets` into the bytes after the header).
Only the header is read, never the tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import VerificationFailed

# The safetensors library refuses longer headers too; it bounds what a hostile file makes us read.
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class SafetensorsHeader:
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape


def _naturals(value: Any) -> bool:
    return isinstance(value, list) and all(type(n) is int and n >= 0 for n in value)


def read_header(path: Path) -> SafetensorsHeader:
    """The header of `path`; VerificationFailed (naming the file) if it is not well-formed."""

    def malformed(reason: str) -> VerificationFailed:
        return VerificationFailed(f"{path.name} is not a safetensors file: {reason}")

    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise malformed(f"{size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER, size - 8):
                raise malformed(f"header length {length} exceeds the file ({size} bytes) or {MAX_HEADER}")
            raw = f.read(length)
    except OSError as err:
        raise VerificationFailed(f"cannot read {path.name}: {err.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: nested too deeply
        raise malformed("the header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise malformed("the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise malformed("__metadata__ is not an object of strings")
    data = size - 8 - length
    shapes = {}
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1] <= data
                and isinstance(info.get("dtype"), str) and _naturals(info.get("shape"))):
            raise malformed(f"tensor {name!r} has no valid dtype, shape and data_offsets within the file")
        shapes[name] = tuple(info["shape"])
    return SafetensorsHeader(metadata, shapes)
