"""Canonical JSON for ledger entries: the bytes that are hashed are the bytes that are stored.

Sorted keys, no insignificant whitespace, UTF-8 (not ASCII escapes), integers only. Floats are
rejected because their text form is not unique across serialisers, which would let two honest
parties disagree on an entry's leaf hash.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.errors import BadInput

_SCALARS = (str, int, bool, type(None))


def _check(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadInput(f"{where}: object keys must be strings, got {type(key).__name__}")
            _check(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]")
    elif isinstance(value, float):
        raise BadInput(f"{where}: floats are not allowed in canonical JSON (use an integer or a string)")
    elif not isinstance(value, _SCALARS):
        raise BadInput(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_json(obj: Any) -> bytes:
    """Serialise `obj` canonically; raises BadInput for floats, non-string keys and non-JSON types."""
    _check(obj, "$")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("strings must be valid Unicode (lone surrogates cannot be encoded as UTF-8)") from None


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must already be canonical JSON (a round trip gives the same bytes)."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_float=_reject_float)
        canonical = canonical_json(obj)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadInput(f"not canonical JSON: {err}") from None
    except RecursionError:
        raise BadInput("not canonical JSON: nested too deeply") from None
    if canonical != data:
        raise BadInput("not canonical JSON: keys unsorted, extra whitespace or escaped characters")
    return obj


def _reject_float(text: str) -> Any:
    raise ValueError(f"float {text} is not allowed")
