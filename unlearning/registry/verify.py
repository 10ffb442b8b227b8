"""`erasure verify` / `pull` / `load_certified`: check a certified version before anyone uses it.

On top of the offline certificate checks (`ledger.certificate.verify_certificate`) this adds
what needs the workspace: a full audit of the ledger against the auditor's saved state, the
registry binding of a registered version, the alias rule (no alias on a version holding an
erased record), and deterministic replay of sampled components.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ledger import entries
from ledger.audit import audit_log
from ledger.certificate import Verification, verify_certificate
from ledger.errors import BadInput, VerificationFailed
from ledger.keys import Trust, build_trust, read_trust
from ledger.log import Ledger, log_exists, log_location, open_log_store
from ledger.tiles.certified import check_served_log
from ledger.witness.policy import certificate_checkpoints, check_witnessed, ledger_anchor, served_anchor
from ledger.workspace import Workspace
from unlearning import methods
from unlearning.registry.mlflow import ALIAS, RegisteredVersion, Registry, fetch, parse_target
from unlearning.versions.bundle import bundle_version


def trust_for(ws: Workspace, trust_file: Path | None) -> Trust:
    return read_trust(trust_file) if trust_file is not None else build_trust(ws)


def _failing(reason: str):  # type: ignore[no-untyped-def]
    def check() -> str:
        raise VerificationFailed(reason)

    return check


def erased_commitments(log: Ledger) -> dict[str, str]:
    """Every commitment named by a logged erasure request -> its request id."""
    erased: dict[str, str] = {}
    for _, data in log.entries():
        entry = json.loads(data)
        if entry.get("type") in ("request_received", "request_commitments"):  # a receipt and its parts
            for c in entry.get("commitments", []):
                erased.setdefault(c, entry.get("request_id", "?"))
    return erased


def _holding(bundle: Path, erased: dict[str, str]) -> str | None:
    version = bundle_version(bundle)
    for component in version.components:
        manifest = component.manifest()
        for c, request in erased.items():
            if manifest.contains(bytes.fromhex(c)):
                return f"component {component.id} holds a record erased by request {request}"
    return None


def verify_bundle(ws: Workspace, bundle: Path, trust: Trust, state_dir: Path | None = None,
                  replay: int = 0, log_url: str | None = None) -> Verification:
    """With `log_url`, the ledger checks run against the log served there as tiles, not ledger.db."""
    origin = trust.role("ledger").origin
    local = log_url is None and log_exists(ws)
    log = Ledger(open_log_store(ws, origin, create=False)) if local else None
    try:
        v = verify_certificate(bundle, trust, log)
        if not v.verified:
            return v
        served = bundle_version(bundle)
        for check, step in methods.get(served.meta.method).checks(served):  # e.g. APA's aggregator binding
            if not v.run(check, step):
                return v
        if trust.witnesses is not None and not v.run("witnesses", lambda: _witnessed(bundle, v, trust, log, log_url)):
            return v
        if log_url is not None:
            if not check_served_log(v, bundle, trust, log_url, state_dir):
                return v
        elif log is None:
            v.run("ledger consistency", _failing(f"no ledger at {log_location(ws)} to check consistency against "
                                                 "(give --log URL to check against the log served as tiles)"))
            return v
        elif state_dir is not None:
            def audit() -> str:
                store = open_log_store(ws, create=False)
                try:
                    report = audit_log(store, trust.role("ledger").verifiers(), origin, state_dir, trust.witnesses)
                finally:
                    store.close()
                before = f", consistent with size {report.previous_size} seen before" if report.previous_size else ""
                return f"{report.entries} entries recomputed, checkpoint size {report.checkpoint_size}{before}"

            if not v.run("ledger audit", audit):
                return v
        if replay:
            v.run("replay", lambda: _replay(ws, v, replay))
        return v
    finally:
        if log is not None:
            log.close()


def _witnessed(bundle: Path, v: Verification, trust: Trust, log: Ledger | None, log_url: str | None) -> str:
    """The certificate's checkpoints are cosigned as the trust file requires, or prefixes of a
    witnessed checkpoint of the served log (with --log) or of the local ledger."""
    assert v.predicate is not None
    anchor = (None if log_url is None and log is None
              else (lambda: served_anchor(log_url, trust)) if log_url is not None
              else (lambda: ledger_anchor(log, trust)))
    return check_witnessed(trust, certificate_checkpoints(bundle, v.predicate), anchor)


def _replay(ws: Workspace, v: Verification, count: int) -> str:
    """Retrain `count` sampled components from the retained records and compare digests."""
    from unlearning.operations.build import replay_component
    from unlearning.versions.store import ModelStore

    assert v.predicate is not None
    version = ModelStore(ws).get(v.predicate.model, v.predicate.modelVersion)
    # a deterministic sample that nobody picks: ordered by a hash of the certificate and the id
    ids = sorted((c.id for c in v.predicate.components),
                 key=lambda cid: hashlib.sha256(f"{v.envelope_sha256}/{cid}".encode()).digest())[:count]
    for cid in ids:
        result = replay_component(ws, version, cid)
        if not result.equal:
            raise VerificationFailed(f"replay of {cid} gave weights {result.replayed_sha256[:16]}…, "
                                     f"certified {result.expected_sha256[:16]}…")
    return f"{len(ids)} replayed components reproduce their certified digests: {', '.join(ids)}"


def verify_registered(ws: Workspace, registry: Registry, registered: RegisteredVersion, bundle: Path, trust: Trust,
                      state_dir: Path | None = None, replay: int = 0, check_aliases: bool = True,
                      log_url: str | None = None) -> Verification:
    """All checks of a registered version; `check_aliases=False` while promoting it (the alias
    still points at the version being replaced, which is what the promotion fixes)."""
    v = verify_bundle(ws, bundle, trust, state_dir, replay, log_url)
    if not v.verified:
        return v
    assert v.predicate is not None
    p = v.predicate

    def binding() -> str:
        if registered.certificate_sha256 != v.envelope_sha256:
            raise VerificationFailed(f"registry tag {registered.certificate_sha256[:16]}… is not the certificate's "
                                     f"sha256 {v.envelope_sha256[:16]}…")
        if registered.local_version != p.modelVersion or registered.name != p.model:
            raise VerificationFailed(f"registry version {registered.name} v{registered.version} is bound to "
                                     f"v{registered.local_version}, the certificate is for {p.model} v{p.modelVersion}")
        with Ledger(open_log_store(ws, trust.role("ledger").origin, create=False)) as log:
            index = log.find(entries.model_registered_key(p.model, v.envelope_sha256))
            entry = json.loads(log.entry(index)) if index is not None else {}
        if entry.get("registry_version") != registered.version:
            raise VerificationFailed("no model_registered ledger entry binds this registry version to the certificate")
        return f"registry version {registered.version} ↔ certificate (ledger index {index})"

    if not v.run("registry binding", binding):
        return v

    def aliases() -> str:
        with Ledger(open_log_store(ws, trust.role("ledger").origin, create=False)) as log:
            erased = erased_commitments(log)
        aliased = [r for r in registry.versions(p.model) if r.aliases]
        for other in aliased:
            if other.version == registered.version:
                problem = _holding(bundle, erased)
            else:
                with fetch(registry, other) as tmp:
                    problem = _holding(Path(tmp) / "bundle", erased)
            if problem:
                raise VerificationFailed(f"alias {', '.join(other.aliases)} points at v{other.version}: {problem}")
        return f"{len(aliased)} aliased versions hold none of {len(erased)} erased commitments"

    if check_aliases:
        v.run("aliases", aliases)
    return v


def verify_target(ws: Workspace, target: str, trust_file: Path | None = None, state_dir: Path | None = None,
                  replay: int = 0, log_url: str | None = None) -> Verification:
    """Verify `models:/NAME@ALIAS`, `models:/NAME/VERSION` or a local bundle directory; with
    `log_url`, against the log served there (a registered version's binding and aliases still
    read this workspace's ledger)."""
    trust = trust_for(ws, trust_file)
    if not target.startswith("models:/"):
        bundle = Path(target)
        if not bundle.is_dir():
            raise BadInput(f"{target} is neither a models:/ URI nor a bundle directory")
        return verify_bundle(ws, bundle, trust, state_dir, replay, log_url)
    registry = Registry.for_workspace(ws)
    registered = registry.resolve(*parse_target(target))
    with fetch(registry, registered) as tmp:
        return verify_registered(ws, registry, registered, Path(tmp) / "bundle", trust, state_dir, replay,
                                 log_url=log_url)


def pull(ws: Workspace, target: str, dest: Path, trust_file: Path | None = None,
         allow_approximate: bool = False) -> tuple[Verification, RegisteredVersion]:
    """Resolve once, pin, download, verify, and only then move the files into `dest` (atomic)."""
    if dest.exists() and any(dest.iterdir()):
        raise BadInput(f"destination {dest} exists and is not empty")
    trust = trust_for(ws, trust_file)
    registry = Registry.for_workspace(ws)
    registered = registry.resolve(*parse_target(target))
    with fetch(registry, registered) as tmp:
        bundle = Path(tmp) / "bundle"
        v = verify_registered(ws, registry, registered, bundle, trust)
        if not v.verified:
            return v, registered
        if v.claim != "EXACT" and not allow_approximate:
            v.run("claim", _failing(f"v{registered.version} is certified {v.claim}, not EXACT "
                                    "(use --allow-approximate to accept it)"))
            return v, registered
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = dest.with_name(f".{dest.name}.pulling-{os.getpid()}")
        shutil.move(str(bundle), staged)
        if dest.exists():
            dest.rmdir()
        staged.rename(dest)
    return v, registered


def load_certified(target: str, trust: Path | None = None, workspace: Workspace | None = None,
                   allow_approximate: bool = False):  # type: ignore[no-untyped-def]
    """A ready `Predictor` for a registered version, returned only after it verifies."""
    import tempfile

    from unlearning.inference import Predictor

    ws = workspace or Workspace.from_env()
    dest = Path(tempfile.mkdtemp(prefix="erasure-certified-")) / "bundle"
    v, registered = pull(ws, target, dest, trust, allow_approximate)
    if not v.verified:
        failed = next(c for c in v.checks if not c.ok)
        raise VerificationFailed(f"{target} (v{registered.version}) failed {failed.check}: {failed.detail}")
    return Predictor(bundle_version(dest))


__all__ = ["ALIAS", "erased_commitments", "load_certified", "pull", "verify_bundle", "verify_registered",
           "verify_target"]
