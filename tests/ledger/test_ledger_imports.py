"""The auditor installs `ledger` alone: importing it must not pull in heavy packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "kafka", "mlflow", "numpy", "peft", "safetensors")
REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter from the repository root, so `ledger` is the real package.
_PROBE = f"""
import importlib, json, pkgutil, sys
import ledger
names = [f"ledger.{{m.name}}" for m in pkgutil.iter_modules(ledger.__path__)]
for name in names:
    importlib.import_module(name)
import cli.keys, cli.ledger
print(json.dumps({{"modules": names, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def test_ledger_imports_nothing_heavy() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, cwd=REPO)
    report = json.loads(result.stdout)
    assert {"ledger.merkle", "ledger.log", "ledger.manifest", "ledger.note", "ledger.keys", "ledger.audit"} <= set(
        report["modules"]
    )
    assert report["heavy"] == []
