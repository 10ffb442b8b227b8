"""Certified versions in the MLflow model registry (design §7).

Each certified bundle is logged as the artifacts of one run and registered as a model version
tagged with `erasure.status` (pending → certified / approximate / superseded / purged), the
certificate's sha256, its ledger index and the local version number. The alias `certified`
moves only after the registered copy, downloaded back over HTTP, verifies. Every registration,
alias move and purge is also a ledger entry.

With no server configured the registry is the workspace's embedded store, used in-process:
`mlflow.db` (SQLite) with artifacts under `mlflow-artifacts/`. It is the store `erasure dev up`'s
server fronts, so versions that server registered (artifact URIs `mlflow-artifacts:/…`) are read
from the same files, and the server serves the ones registered here.
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
    def __init__(self, tracking_uri: str, artifacts: Path | None = None) -> None:
        """`artifacts`: the embedded store's artifact root (not given for a server)."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # after import: mlflow sets INFO on import

        # proxied artifact URIs (mlflow-artifacts:/) resolve through the global tracking URI; MLflow
        # also exports it to os.environ, where Workspace.mlflow_uri() would take it as configured
        exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        for key, value in exported.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.uri = tracking_uri
        self.artifacts = artifacts
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def for_workspace(cls, ws: Workspace) -> "Registry":
        uri = ws.mlflow_uri()
        if uri == ws.mlflow_embedded_uri:
            ws.ensure()
            return cls(uri, ws.mlflow_artifacts)
        return cls(uri)

    def _local(self, uri: str) -> str:
        """An artifact URI this process reaches: in the embedded store, a `mlflow-artifacts:/PATH`
        that `erasure dev up`'s server wrote over the same store is the file PATH under its root."""
        if self.artifacts is None or not uri.startswith("mlflow-artifacts:"):
            return uri
        from urllib.parse import urlparse

        return (self.artifacts / urlparse(uri).path.lstrip("/")).as_uri()

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
        path = self._call("download", download_artifacts, artifact_uri=self._local(registered.source),
                          dst_path=str(dest), tracking_uri=self.uri)
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
        self._upload(run, bundle)
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

    def copy_from(self, source: "Registry", name: str) -> list[int]:
        """Copy every version of `name` from `source` into this registry with the same registry
        version numbers (the ledger's `model_registered` entries bind them), tags and aliases;
        each bundle downloaded and uploaded anew. A number `source` no longer holds (a purged
        version) is taken by a placeholder deleted at once, so the numbers after it still match.
        Versions already here with the same certificate are kept (a copy can be resumed); a
        different one under the same number is refused. Writes no ledger entry: the history
        is the same. Returns the version numbers copied."""
        from mlflow.exceptions import MlflowException

        wanted = source.versions(name)
        present = {r.version: r for r in self._safe_versions(name)}
        copied = []
        if not wanted:
            return copied
        try:
            self.client.create_registered_model(name)
        except MlflowException:
            pass  # already registered
        experiment = self._experiment(f"erasure/{name}")
        by_number = {r.version: r for r in wanted}
        for number in range(1, wanted[-1].version + 1):
            if number in present:
                if number in by_number and present[number].certificate_sha256 != by_number[number].certificate_sha256:
                    raise BadInput(f"{self.uri} already holds {name} v{number} with another certificate")
                continue
            if present and number < max(present):
                continue  # a gap an earlier copy already left
            run = self._call("create run", self.client.create_run, experiment, tags={"erasure.model": name})
            mv = None
            if number in by_number:
                with fetch(source, by_number[number]) as tmp:
                    self._upload(run, Path(tmp) / "bundle")
                tags = source.client.get_model_version(name, str(number)).tags or {}
                mv = self._call("register", self.client.create_model_version, name,
                                f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id, tags=dict(tags))
                copied.append(number)
            else:
                mv = self._call("register", self.client.create_model_version, name, run.info.artifact_uri,
                                run_id=run.info.run_id)
            self._call("finish run", self.client.set_terminated, run.info.run_id)
            if int(mv.version) != number:
                raise ServiceError(f"MLflow at {self.uri} numbered the copy of {name} v{number} as v{mv.version}: "
                                   "the registry was written meanwhile")
            if number not in by_number:
                self._call("version deletion", self.client.delete_model_version, name, str(number))
        for registered in wanted:
            for alias in registered.aliases:
                self._call("alias", self.client.set_registered_model_alias, name, alias, str(registered.version))
        return copied

    def _upload(self, run, bundle: Path) -> None:  # type: ignore[no-untyped-def]
        if self.artifacts is None:
            self._call("upload", self.client.log_artifacts, run.info.run_id, str(bundle), "bundle")
        else:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repo = get_artifact_repository(self._local(run.info.artifact_uri))
            self._call("upload", repo.log_artifacts, str(bundle), "bundle")

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
        if self.artifacts is not None:  # not MLflow's default, ./mlruns in the working directory
            return self._call("create experiment", self.client.create_experiment, name,
                              artifact_location=(self.artifacts / name).as_uri())
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
            repo = get_artifact_repository(self._local(run.info.artifact_uri))
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
