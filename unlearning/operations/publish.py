"""Publish: certify a version, register it in MLflow, verify the registered copy, then alias it.

With an `approximation` (an influence update) the claim is APPROXIMATE and the version gets no
alias; an EXACT version supersedes every approximate one whose requests its certificate covers.

In the shared deployment the model's lease (`unlearning.versions.lease`) is checked before
certifying, before registering and before moving the alias: a stalled executor whose lease
was taken over fails with `LeaseLost` there (retried by the services, and found done).
"""

from __future__ import annotations

from pathlib import Path

from ledger import entries, failpoints
from ledger.certificate import ENVELOPE_FILE
from ledger.errors import ServiceError, VerificationFailed
from ledger.log import open_ledger
from ledger.statement import file_sha256
from ledger.workspace import Workspace
from unlearning.operations.approximate import is_approximate
from unlearning.operations.certify import certified_bundle, certified_predicate, certify
from unlearning.operations.receive import Receipt
from unlearning.registry.mlflow import RegisteredVersion, Registry, fetch
from unlearning.registry.verify import trust_for, verify_registered
from unlearning.versions.lease import check_lease
from unlearning.versions.store import ModelStore, ModelVersion


def _lineage(parent: ModelVersion, child: ModelVersion) -> tuple[dict[str, str], dict[str, str | None], list[str]]:
    """Per component of `child`: kept (same weights as in `parent`) or retrained (and from what)."""
    before = {c.id: c.weights_sha256 for c in parent.components}
    actions, resumed = {}, {}
    for c in child.components:
        if before.get(c.id) == c.weights_sha256:
            actions[c.id] = "kept"
        else:
            actions[c.id] = "retrained"
            resumed[c.id] = c.parent
    removed = sorted(before.keys() - {c.id for c in child.components})
    return actions, resumed, removed


def publish(ws: Workspace, registry: Registry, version: ModelVersion, receipts: list[Receipt],
            parent: ModelVersion | None = None, approximation: dict | None = None) -> RegisteredVersion:
    """Certify, register, verify the registered copy, then move the `certified` alias to it.

    With `approximation` (an influence update of `parent`) the claim is APPROXIMATE: the
    changed components are `updated`, not retrained, and the version gets no alias. An EXACT
    version supersedes every approximate one whose requests its certificate covers.
    """
    check_lease(version.name)  # a stalled holder whose lease was taken over certifies nothing
    if approximation is None and is_approximate(version):
        raise VerificationFailed(f"{version.name} v{version.version} is an approximate update: it is never certified EXACT")
    actions, resumed, removed = _lineage(parent, version) if parent else ({}, {}, [])
    if approximation is not None:
        actions = {cid: "updated" if action == "retrained" else action for cid, action in actions.items()}
        resumed = {}
    bundle = certify(ws, version, receipts, actions, resumed, removed,
                     claim="EXACT" if approximation is None else "APPROXIMATE", approximation=approximation)
    predicate = certified_predicate(bundle, ws)
    envelope_sha = file_sha256(bundle / ENVELOPE_FILE)
    with open_ledger(ws) as ledger:
        certificate_index = ledger.find(entries.certificate_key(envelope_sha))
    check_lease(version.name)
    registered = registry.register(ws, bundle, predicate, certificate_index)
    with fetch(registry, registered) as tmp:
        check = verify_registered(ws, registry, registered, Path(tmp) / "bundle", trust_for(ws, None),
                                  check_aliases=False)
    if not check.verified:
        failed = next(c for c in check.checks if not c.ok)
        registry.set_status(registered, "rejected")
        raise VerificationFailed(f"registered v{registered.version} failed {failed.check}: {failed.detail}")
    if predicate.claim == "EXACT":
        failpoints.reach("publish.before_alias")
        check_lease(version.name)
        registry.move_alias(ws, registered)
        _supersede_approximations(ws, registry, registered, {e.requestId for e in predicate.erasures})
    else:
        registry.set_status(registered, "approximate")
    return registry.get(registered.name, registered.version)


def _supersede_approximations(ws: Workspace, registry: Registry, exact: RegisteredVersion, handled: set[str]) -> None:
    """Mark every registered approximate version whose requests `exact` handles as superseded
    (and log it: the purge that follows deletes the version from the registry)."""
    for other in registry.versions(exact.name):
        if other.status != "approximate":
            continue
        with fetch(registry, other) as tmp:
            requests = {r["requestId"] for r in certified_predicate(Path(tmp) / "bundle", ws).approximation["requests"]}
        if requests <= handled:
            registry.set_status(other, "superseded")
            with open_ledger(ws) as ledger:
                ledger.append_many([entries.version_superseded(exact.name, other.version, other.local_version,
                                                               "APPROXIMATE", exact.version, sorted(requests))])


def register_trained(ws: Workspace, version: ModelVersion) -> RegisteredVersion:
    """Certify and register a freshly trained version (no erasures yet) and alias it."""
    return publish(ws, Registry.for_workspace(ws), version, [])


def registry_unready(ws: Workspace) -> str | None:
    """Why a new version cannot be certified and registered right now, if it cannot."""
    from ledger.keys import private_key_path

    missing = [role for role in ("ledger", "certifier") if not private_key_path(ws.key_dir, role).exists()]
    if missing:
        return f"no {' and '.join(missing)} key: run `erasure keys init`"
    try:
        ws.mlflow_uri()
    except ServiceError as err:
        return str(err)
    return None


def registered_elsewhere(ws: Workspace, registry: Registry, name: str) -> str | None:
    """With the embedded registry: why the model cannot be served from it, if its newest certified
    version was registered in another registry (a server no longer configured). Publishing and
    purging here would leave the versions that hold erased data in that registry."""
    if registry.artifacts is None:
        return None
    models = ModelStore(ws)
    for number in reversed(models.versions(name)):
        if certified_bundle(ws, name, number) is None:
            continue
        try:
            registry_version, sha = registration(ws, models.get(name, number))
        except LookupError:
            return None
        if any(r.certificate_sha256 == sha for r in registry.versions(name)):
            return None
        return (f"{name} v{number} is registered (registry version {registry_version}) in another MLflow registry, "
                f"not in the embedded one ({ws.mlflow_db}): set MLFLOW_TRACKING_URI to that registry's server")
    return None


def registration(ws: Workspace, version: ModelVersion) -> tuple[int, str]:
    """(registry version, certificate sha256) of a published version, from the ledger."""
    bundle = certified_bundle(ws, version.name, version.version)
    if bundle is None:
        raise LookupError(f"{version.name} v{version.version} is not certified")
    sha = file_sha256(bundle / ENVELOPE_FILE)
    with open_ledger(ws) as ledger:
        entry = entries.read(ledger, entries.model_registered_key(version.name, sha))
    if entry is None:
        raise LookupError(f"{version.name} v{version.version} is certified but not registered")
    return entry["registry_version"], sha
