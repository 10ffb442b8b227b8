"""Where Erasure keeps its state (design §10).

`ERASURE_HOME` (default `./.erasure`) holds the config, the SQLite stores, artifacts and the
embedded MLflow store; keys live in `ERASURE_KEY_DIR` (default `$ERASURE_HOME/keys`).
Only paths here: creating files is the job of the package that owns them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls) -> "Workspace":
        return cls(Path(os.environ.get("ERASURE_HOME", ".erasure")).absolute())

    @property
    def config_file(self) -> Path:
        return self.home / "erasure.toml"

    @property
    def ledger_db(self) -> Path:
        return self.home / "ledger.db"

    @property
    def records_db(self) -> Path:
        return self.home / "records.db"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow-artifacts"

    @property
    def dev_state(self) -> Path:
        return self.home / "dev.json"

    @property
    def auditor_state(self) -> Path:
        """Where `erasure ledger verify` keeps the last checkpoint it verified, per origin."""
        return self.home / "auditor"

    @property
    def key_dir(self) -> Path:
        return Path(os.environ.get("ERASURE_KEY_DIR", self.home / "keys")).absolute()

    def config(self) -> dict:
        """The parsed `erasure.toml`, or an empty dict when there is none."""
        if not self.config_file.exists():
            return {}
        with self.config_file.open("rb") as f:
            return tomllib.load(f)

    def ensure(self) -> "Workspace":
        self.home.mkdir(parents=True, exist_ok=True)
        return self
