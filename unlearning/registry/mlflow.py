"""Certified versions in the MLflow model registry (design §7).

Each certified bundle is logged as the artifacts of one run and registered as a model version
tagged with `erasure.status` (pending → certified / approximate / superseded / purged), the
certificate's sha256, its ledger index and the local version number. The alias `certified`
moves only after the registered copy, downloaded back over HTTP, verifies. Every registration,
alias move and purge is also a ledger entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ledger import entries
from ledger.certificate import ENVELOPE_FILE, Predicate
from ledger.errors import BadInput, ServiceError
from ledger.log import open_ledger
from ledger.workspace import Workspace

ALIAS = "certified"
STATUS = "erasure.status"
CERT_SHA = "erasure.certificate_sha256"
CERT_INDEX = "erasure.ledger_index"
LOCAL_VERSION = "erasure.version"
CLAIM = "erasure.claim"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int  # registry version number
    local_version: int
    status: str
    certificate_sha256: str
    aliases: tuple[str, ...]
    run_id: str
    source: str


def parse_target(target: str) -> tuple[str, str | None, int | None]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, alias, version)."""
    if not target.startswith("models:/"):
        raise BadInput(f"{target!r} is not a models:/NAME@ALIAS or models:/NAME/VERSION URI")
    rest = target.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in rest:
        name, number = rest.rsplit("/", 1)
        if name and number.isdigit():
            return name, None, int(number)
    raise BadInput(f"{target!r} is not a models:/NAME@ALIAS or models:/NAME/VERSION URI")


class Registry:
    def __init__(self, tracking_uri: str) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # after import: mlflow sets INFO on import

        # proxied artifact URIs (mlflow-artifacts:/) resolve through the global tracking URI
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def for_workspace(cls, ws: Workspace) -> "Registry":
        return cls(ws.mlflow_uri())

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from mlflow.exceptions import MlflowException

        try:
            # MLflow prints run links on stdout, which belongs to our --json output
            with contextlib.redirect_stdout(sys.stderr):
                return fn(*args, **kwargs)
        except MlflowException as err:
            raise ServiceError(f"MLflow at {self.uri}: {what} failed: {err.message.splitlines()[0]}") from None

    # --- reading -----------------------------------------------------------------------------

    def _registered(self, mv) -> RegisteredVersion:  # type: ignore[no-untyped-def]
        tags = mv.tags or {}
        return RegisteredVersion(mv.name, int(mv.version), int(tags.get(LOCAL_VERSION, 0)), tags.get(STATUS, ""),
                                 tags.get(CERT_SHA, ""), tuple(getattr(mv, "aliases", []) or []), mv.run_id or "",
                                 mv.source)

    def versions(self, name: str) -> list[RegisteredVersion]:
        found = self._call("search", self.client.search_model_versions, f"name='{name}'")
        # search results do not carry aliases in every MLflow release: read each version
        return sorted((self.get(name, int(mv.version)) for mv in found), key=lambda r: r.version)

    def get(self, name: str, version: int) -> RegisteredVersion:
        return self._registered(self._call(f"reading {name} v{version}", self.client.get_model_version, name, str(version)))

    def resolve(self, name: str, alias: str | None, version: int | None) -> RegisteredVersion:
        """Resolve an alias once and pin the version it points to."""
        if alias is None:
            return self.get(name, version)  # type: ignore[arg-type]
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise BadInput(f"model {name!r} has no alias {alias!r} in the registry at {self.uri}") from None
        return self._registered(mv)

    def download(self, registered: RegisteredVersion, dest: Path) -> Path:
        """Download the pinned version's bundle into `dest` (a fresh directory)."""
        from mlflow.artifacts import download_artifacts

        dest.mkdir(parents=True, exist_ok=True)
        path = self._call("download", download_artifacts, artifact_uri=registered.source, dst_path=str(dest),
                          tracking_uri=self.uri)
        return Path(path)

    # --- writing -----------------------------------------------------------------------------

    def register(self, ws: Workspace, bundle: Path, predicate: Predicate, certificate_index: int) -> RegisteredVersion:
        """Log the bundle as a run and register it (idempotent per certificate)."""
        sha = hashlib.sha256((bundle / ENVELOPE_FILE).read_bytes()).hexdigest()
        name = predicate.model
        for existing in self._safe_versions(name):
            if existing.certificate_sha256 == sha:
                return existing
        experiment = self._experiment(f"erasure/{name}")
        run = self._call("create run", self.client.create_run, experiment,
                         tags={"erasure.model": name, LOCAL_VERSION: str(predicate.modelVersion)})
        self._call("upload", self.client.log_artifacts, run.info.run_id, str(bundle), "bundle")
        self._call("finish run", self.client.set_terminated, run.info.run_id)
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException:
            pass  # already registered
        mv = self._call("register", self.client.create_model_version, name, f"{run.info.artifact_uri}/bundle",
                        run_id=run.info.run_id, tags={STATUS: "pending", CERT_SHA: sha, CERT_INDEX: str(certificate_index),
                                                      LOCAL_VERSION: str(predicate.modelVersion), CLAIM: predicate.claim})
        with open_ledger(ws) as ledger:
            ledger.append_many([entries.model_registered(name, predicate.modelVersion, int(mv.version), run.info.run_id,
                                                         sha)])
        return self.get(name, int(mv.version))

    def _safe_versions(self, name: str) -> list[RegisteredVersion]:
        from mlflow.exceptions import MlflowException

        try:
            return self.versions(name)
        except (ServiceError, MlflowException):
            return []

    def _experiment(self, name: str) -> str:
        found = self._call("experiment lookup", self.client.get_experiment_by_name, name)
        if found is not None:
            return found.experiment_id
        return self._call("create experiment", self.client.create_experiment, name)

    def set_status(self, registered: RegisteredVersion, status: str) -> None:
        self._call("tag", self.client.set_model_version_tag, registered.name, str(registered.version), STATUS, status)

    def move_alias(self, ws: Workspace, registered: RegisteredVersion, alias: str = ALIAS) -> None:
        """Point `alias` at `registered`; the version it left is superseded. Logged in the ledger."""
        previous = None
        from mlflow.exceptions import MlflowException

        try:
            previous = self._registered(self.client.get_model_version_by_alias(registered.name, alias))
        except MlflowException:
            pass
        self._call("alias", self.client.set_registered_model_alias, registered.name, alias, str(registered.version))
        self.set_status(registered, "certified")
        if previous is not None and previous.version != registered.version:
            self.set_status(previous, "superseded")
        with open_ledger(ws) as ledger:
            ledger.append_many([entries.alias_moved(registered.name, alias, previous.version if previous else None,
                                                    registered.version, registered.certificate_sha256)])

    def purge(self, ws: Workspace, registered: RegisteredVersion, request_ids: list[str]) -> None:
        """Delete a version holding erased data: aliases, run artifacts, the version; keep a tombstone."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        for alias in registered.aliases:
            self._call("alias removal", self.client.delete_registered_model_alias, registered.name, alias)
        run = self._call("run lookup", self.client.get_run, registered.run_id) if registered.run_id else None
        if run is not None:
            repo = get_artifact_repository(run.info.artifact_uri)
            self._call("artifact deletion", repo.delete_artifacts, "bundle")
        self._call("version deletion", self.client.delete_model_version, registered.name, str(registered.version))
        with open_ledger(ws) as ledger:
            ledger.append_many([entries.registered_version_purged(registered.name, registered.version,
                                                                  registered.local_version, request_ids,
                                                                  registered.certificate_sha256)])


def fetch(registry: Registry, registered: RegisteredVersion) -> tempfile.TemporaryDirectory:
    """A temporary directory holding the downloaded bundle at `<tmp>/bundle`."""
    tmp = tempfile.TemporaryDirectory(prefix="erasure-pull-")
    downloaded = registry.download(registered, Path(tmp.name) / "dl")
    shutil.move(str(downloaded), Path(tmp.name) / "bundle")
    return tmp
