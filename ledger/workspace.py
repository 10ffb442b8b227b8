"""Where Erasure keeps its state (design §10).

`ERASURE_HOME` (default `./.erasure`) holds the config, the SQLite stores, artifacts and the
embedded MLflow store; keys live in `ERASURE_KEY_DIR` (default `$ERASURE_HOME/keys`).
Only paths here: creating files is the job of the package that owns them.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import ServiceError


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

    def kafka_bootstrap(self) -> str:
        """`ERASURE_KAFKA`, else `[kafka] bootstrap` in erasure.toml, else the broker `erasure dev up` started."""
        return self._endpoint("ERASURE_KAFKA", "kafka", "bootstrap")

    def mlflow_uri(self) -> str:
        """`MLFLOW_TRACKING_URI`, else `[mlflow] tracking_uri` in erasure.toml, else `erasure dev up`'s server."""
        return self._endpoint("MLFLOW_TRACKING_URI", "mlflow", "tracking_uri", dev_key="url")

    def _endpoint(self, env: str, service: str, config_key: str, dev_key: str | None = None) -> str:
        value = os.environ.get(env) or self.config().get(service, {}).get(config_key)
        if not value and self.dev_state.exists():
            value = json.loads(self.dev_state.read_text()).get(service, {}).get(dev_key or config_key)
        if not value:
            raise ServiceError(f"no {service} endpoint: set {env}, add [{service}] {config_key} to "
                               f"{self.config_file}, or run `erasure dev up`")
        return value

    def ensure(self) -> "Workspace":
        self.home.mkdir(parents=True, exist_ok=True)
        return self
