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
    def record_keys_db(self) -> Path:
        """The records' data keys, kept apart from records.db (a backup of that alone is unreadable)."""
        return self.key_dir / "record-keys.db"

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

    @property
    def mlflow_embedded_uri(self) -> str:
        """The embedded MLflow store: `mlflow.db` here, artifacts under `mlflow-artifacts/` (the same
        store `erasure dev up`'s server fronts), used in-process when no server is configured."""
        return f"sqlite:///{self.mlflow_db}"

    def mlflow_uri(self, embedded: bool = True) -> str:
        """`MLFLOW_TRACKING_URI`, else `[mlflow] tracking_uri` in erasure.toml, else `erasure dev up`'s
        server, else the embedded store (`mlflow_embedded_uri`); with `embedded=False`, ServiceError
        instead of the embedded store (for what runs several processes against the registry)."""
        default = self.mlflow_embedded_uri if embedded else None
        return self._endpoint("MLFLOW_TRACKING_URI", "mlflow", "tracking_uri", dev_key="url", default=default)

    def database_url(self) -> str | None:
        """The shared deployment's PostgreSQL database (ledger, records, journal, leases):
        `ERASURE_DATABASE_URL`, else `[database] url` in erasure.toml, else the server `erasure dev
        up --shared` started; None: the embedded SQLite files in ERASURE_HOME. Credentials are
        libpq's (`PGPASSWORD`, a `passfile=` in the URL, ~/.pgpass), never required in the URL."""
        return self._optional("ERASURE_DATABASE_URL", "database", "url", dev_service="postgres")

    def keys_database_url(self) -> str | None:
        """Where the records' data keys live when shared: `ERASURE_KEYS_DATABASE_URL`, else
        `[database] keys_url`, else the database URL's database name + `_keys` (same server) —
        never the records' own database, so a dump of the records alone is unreadable."""
        explicit = self._optional("ERASURE_KEYS_DATABASE_URL", "database", "keys_url")
        if explicit or not (records := self.database_url()):
            return explicit
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(records)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_keys"))

    def object_store_url(self) -> str | None:
        """The shared deployment's object store for checkpoints and adapters, as
        `s3://BUCKET[/PREFIX][?endpoint=URL]`: `ERASURE_OBJECT_STORE`, else `[object_store] url` in
        erasure.toml, else the S3 server `erasure dev up --shared` started; None: `artifacts/` in
        ERASURE_HOME only (`ledger.objects.open_object_store` also takes a directory). Credentials come
        from the environment (boto3's chain: AWS_ACCESS_KEY_ID...), or from the AWS-style credentials
        file the URL names (`&credentials=FILE`, as the URL of `erasure dev up --shared`'s server does)."""
        return self._optional("ERASURE_OBJECT_STORE", "object_store", "url", dev_service="s3")

    def _optional(self, env: str, section: str, key: str, dev_service: str | None = None) -> str | None:
        value = os.environ.get(env) or self.config().get(section, {}).get(key)
        if not value and dev_service and self.dev_state.exists():
            value = json.loads(self.dev_state.read_text()).get(dev_service, {}).get("url")
        return value or None

    def _endpoint(self, env: str, service: str, config_key: str, dev_key: str | None = None,
                  default: str | None = None) -> str:
        value = os.environ.get(env) or self.config().get(service, {}).get(config_key)
        if not value and self.dev_state.exists():
            value = json.loads(self.dev_state.read_text()).get(service, {}).get(dev_key or config_key)
        if not value and default:
            return default
        if not value:
            raise ServiceError(f"no {service} endpoint: set {env}, add [{service}] {config_key} to "
                               f"{self.config_file}, or run `erasure dev up`")
        return value

    def ensure(self) -> "Workspace":
        self.home.mkdir(parents=True, exist_ok=True)
        return self
