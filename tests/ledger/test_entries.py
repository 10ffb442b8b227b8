"""Every entry type and natural key lives in `ledger.entries`; nobody else builds them."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from ledger import entries
from ledger.log import Ledger

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "producers", "services", "unlearning", "consumers", "cli")
KEY_PREFIXES = ("request/", "received/", "rejected/", "extended/", "planned/", "approximated/", "excluded/", "restored/", "failed/",
                "component_trained/", "version_built/", "certificate/", "model_registered/", "alias_moved/",
                "version_superseded/", "version_purged/")


def _constructors() -> dict[str, entries.Entry]:
    """One entry of every constructor, with made-up but well-typed arguments."""
    return {
        "request_received": entries.request_received("r1", "erase_subject", "tag", "m", ["00" * 32], {"via": "cli"}),
        "request_commitments": entries.request_commitments("r1", 1, ["00" * 32]),
        "request_rejected": entries.request_rejected("r1", "bad"),
        "request_extended": entries.request_extended("r1", 1, "2026-03-31T23:59:59.000Z",
                                                     "2026-01-31T23:59:59.000Z", 59, "complex request"),
        "request_planned": entries.request_planned("r1", {"m": [0, 2]}),
        "request_approximated": entries.request_approximated("r1", "m", "why"),
        "request_excluded": entries.request_excluded("r1", "m", 2, 5, "ab" * 32, ["shard0-slice0"]),
        "exclusion_deferred": entries.exclusion_deferred("r1", "m", "why"),
        "request_restored": entries.request_restored("r1", "m", 1, 3, 6, "cd" * 32, ["j"], "host-1"),
        "request_failed": entries.request_failed("r1", "m", "why"),
        "component_trained": entries.component_trained("m", 1, "c0", 0, 0, None, "ef" * 32, 3, "01" * 32, "02" * 32),
        "version_trained": entries.version_trained("m", 1, "sisa", "02" * 32, "03" * 32, ["c0"], []),
        "version_excluded": entries.version_excluded("m", 2, 1, ["c0"], [], ["r1"]),
        "version_approximated": entries.version_approximated("m", 3, "influence_update", 2, ["c0"], [], ["c0"], ["r1"]),
        "certificate_issued": entries.certificate_issued("m", 1, "EXACT", "04" * 32, "https://example/p/v1"),
        "model_registered": entries.model_registered("m", 1, 1, "run", "04" * 32),
        "alias_moved": entries.alias_moved("m", "certified", None, 1, "04" * 32),
        "version_superseded": entries.version_superseded("m", 3, 3, "APPROXIMATE", 4, ["r1"]),
        "local_version_purged": entries.local_version_purged("m", 1, ["r1"]),
        "registered_version_purged": entries.registered_version_purged("m", 1, 1, ["r1"], "04" * 32),
    }


def test_every_constructor_is_exercised_and_documented() -> None:
    made = _constructors()
    public = {name for name, fn in inspect.getmembers(entries, inspect.isfunction)
              if fn.__module__ == entries.__name__ and not name.endswith("_key") and name not in ("read", "planned_shards", "request_parts", "_reason")}
    assert public == set(made)
    documented = set(re.findall(r"^\| (\w+) ", entries.__doc__ or "", re.M)) - {"entry"}
    assert {e.type for e in made.values()} == documented


def test_keys_name_the_stages_they_are_read_by() -> None:
    made = _constructors()
    assert made["request_received"].key == entries.received_key("r1")
    assert made["request_commitments"].key == entries.commitments_key("r1", 1)
    assert made["request_excluded"].key == made["exclusion_deferred"].key == entries.excluded_key("r1", "m")
    assert made["request_restored"].key == entries.restored_key("r1", "m", 1)
    assert made["request_extended"].key == entries.extended_key("r1", 1)
    assert made["component_trained"].key == entries.component_trained_key("m", 1, "c0")
    assert made["version_trained"].key == made["version_excluded"].key.replace("v2", "v1")
    assert made["certificate_issued"].key == entries.certificate_key("04" * 32)
    assert made["model_registered"].key == entries.model_registered_key("m", "04" * 32)
    keys = [e.key for e in made.values()]
    assert all(k.startswith(KEY_PREFIXES) for k in keys)
    assert made["request_approximated"].data == {"request_id": "r1", "model": "m", "reason": "why"}  # no None fields


def test_an_entry_appends_once_and_reads_back(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.db", "example.org/log") as ledger:
        first = ledger.append_many([_constructors()["request_planned"]])
        again = ledger.append_many([entries.request_planned("r1", {"m": [0, 2]})])
        assert first == again == [0] and ledger.size == 1
        read = entries.read(ledger, entries.planned_key("r1"))
        assert read is not None and read["type"] == "request_planned" and read["models"] == {"m": [0, 2]}
        assert read["index"] == 0 and entries.read(ledger, entries.planned_key("r2")) is None
        assert entries.planned_shards(ledger, "r1") == {"m": [0, 2]} and entries.planned_shards(ledger, "r2") == {}


def _sources() -> list[Path]:
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if p.relative_to(ROOT).as_posix() not in ("ledger/entries.py", "ledger/log.py")]


def _hand_built(source: str, name: str) -> list[str]:
    """Entry tuples, `append("type", ...)` calls and natural-key strings built outside `ledger.entries`."""
    offenders = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first = node.args[0]
            if node.func.attr == "append" and isinstance(first, ast.Constant) and isinstance(first.value, str) \
                    and first.value.islower() and "_" in first.value:
                offenders.append(f"{where}: append({first.value!r}, ...)")
            if node.func.attr == "append_many" and isinstance(first, (ast.List, ast.ListComp)):
                items = first.elts if isinstance(first, ast.List) else [first.elt]
                offenders += [f"{where}: append_many of a hand-built tuple" for item in items
                              if isinstance(item, ast.Tuple)]
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        if text and text.startswith(KEY_PREFIXES) and " " not in text:
            offenders.append(f"{where}: natural key {text!r}")
    return offenders


def test_the_scan_finds_hand_built_entries() -> None:
    bad = ('ledger.append("request_failed", {"request_id": r}, natural_key=f"failed/{r}")\n'
           'ledger.append_many([("version_built", {}, key)])\n'
           'ledger.find(f"request/{rid}")\n')
    found = _hand_built(bad, "bad.py")
    assert {o.split(":")[1] for o in found} == {"1", "2", "3"}  # each line, whichever way it builds an entry
    assert any("append('request_failed'" in o for o in found) and any("tuple" in o for o in found)
    assert _hand_built('ledger.append_many([entries.request_failed(r, m, why)])\n', "good.py") == []


def test_no_other_module_builds_entries_or_keys() -> None:
    offenders = [o for path in _sources()
                 for o in _hand_built(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert offenders == []
