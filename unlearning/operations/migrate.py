"""Move an embedded workspace into the shared backends (`erasure admin migrate`).

An embedded workspace keeps its state in ERASURE_HOME: the ledger in `ledger.db`, the encrypted
records in `records.db` (their data keys in the key directory's `record-keys.db`), the model
versions and certified bundles under `artifacts/`, the registry in the embedded MLflow store.
`migrate` copies each of them, verbatim, into the shared deployment and proves the copy:

1. ledger: entries (with their natural keys), tree hashes and signed checkpoints, in one
   transaction on the target; proved by the same size, the same root (from the stored hashes,
   and recomputed from the copied entries) and the same latest checkpoint on both sides;
2. records: every row still sealed (ciphertexts, nonces, commitments), provenance, cached
   activations, and the subjects' data keys into the keys database; proved by equal rows and
   a sample of records decrypting to the same content from PostgreSQL;
3. versions: every local model version and certified bundle uploaded to the object store
   (each local copy then marked as the store's: `SYNCED_MARK`);
4. registry: the embedded registry's versions copied to an MLflow server with the same version
   numbers, tags and aliases (the ledger's `model_registered` entries bind the numbers);
5. config: `[database] url`, `[object_store] url` (and `[mlflow] tracking_uri` when the
   registry moved) appended to erasure.toml, so every later command uses the shared backends;
6. retire: the local copies a later erasure would not reach are deleted — the record store and
   its data keys (`records.db`, `record-keys.db`) and the moved embedded registry; `ledger.db`
   stays as a backup.

Every step is resumable: a target that already holds exactly what the workspace holds (or a
prefix of the ledger) is completed, never duplicated; one holding anything else is refused
before the step writes. Conflicts that can be seen up front (erasure.toml naming other
backends, a restore in progress, another ledger or other versions in the targets) are refused
before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.certificate import ENVELOPE_FILE
from ledger.errors import BadInput, VerificationFailed
from ledger.log import Ledger
from ledger.merkle import leaf_hash, root, stored_count
from ledger.store import LogReader, SqliteStore
from ledger.workspace import Workspace
from unlearning.versions.layout import BUNDLES_DIR, MODEL_JSON, SYNCED_MARK

Progress = Callable[[str, str], None]  # (step, one line)
STEPS = ("ledger", "records", "versions", "registry", "config")
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
_SAMPLE = 16  # records decrypted from the target as the proof that the keys moved with them


@dataclass(frozen=True)
class Targets:
    database: str
    keys_database: str
    object_store: str
    mlflow: str | None  # None: the registry stays where it is


def targets_for(ws: Workspace, database_url: str, object_store_url: str, mlflow_url: str | None = None,
                keys_database_url: str | None = None) -> Targets:
    """The backends to move into; the keys' database, unless given, is the one the workspace will
    use once configured (`ERASURE_KEYS_DATABASE_URL`, `[database] keys_url`, else the database's
    name + `_keys` on the same server)."""
    if not database_url or not object_store_url:
        raise BadInput("migrate needs both a database URL (--database) and an object store URL (--object-store)")
    keys = (keys_database_url or os.environ.get("ERASURE_KEYS_DATABASE_URL")
            or ws.config().get("database", {}).get("keys_url"))
    if not keys:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        keys = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_keys"))
    return Targets(database_url, keys, object_store_url, mlflow_url or None)


# --- before anything is written -----------------------------------------------------------------


def _config_wanted(ws: Workspace, targets: Targets, registry_moves: bool) -> dict[str, dict[str, str]]:
    wanted: dict[str, dict[str, str]] = {"database": {"url": targets.database},
                                         "object_store": {"url": targets.object_store}}
    explicit_keys = ws.config().get("database", {}).get("keys_url") or os.environ.get("ERASURE_KEYS_DATABASE_URL")
    if targets.keys_database != _derived_keys(targets.database) and not explicit_keys:
        wanted["database"]["keys_url"] = targets.keys_database
    if registry_moves and targets.mlflow:
        wanted["mlflow"] = {"tracking_uri": targets.mlflow}
    return wanted


def _derived_keys(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_keys"))


def registry_plan(ws: Workspace, mlflow_url: str | None) -> tuple[bool, str]:
    """(whether the registry step copies, what it does, said for people)."""
    configured = ws.config().get("mlflow", {}).get("tracking_uri")
    if configured and configured != mlflow_url:
        return False, f"skipped: the workspace already uses the registry at {configured} (erasure.toml)"
    if not ws.mlflow_db.exists():
        return False, "skipped: the workspace has no embedded registry (mlflow.db)"
    if not mlflow_url:
        return False, ("skipped: no MLflow server given (--mlflow or MLFLOW_TRACKING_URI): the registry stays "
                       f"embedded in {ws.mlflow_db}, usable on this host only")
    if mlflow_url == ws.mlflow_embedded_uri:
        return False, "skipped: the target registry is the embedded one"
    return True, f"copy the embedded registry to {mlflow_url}"


def preflight(ws: Workspace, targets: Targets) -> None:
    """Refuse, before anything is written, what would make the migration wrong: no embedded
    ledger, a restore in progress, erasure.toml or the environment naming other backends, a
    target ledger that is not a prefix of this one, other versions under the same names."""
    if not ws.ledger_db.exists():
        raise BadInput(f"no embedded ledger at {ws.ledger_db}: nothing to migrate")
    from unlearning.operations.restore import Journal

    pending = sorted((ws.home / "pipeline").glob("*" + Journal.SUFFIX)) if (ws.home / "pipeline").is_dir() else []
    if pending:
        raise BadInput(f"a restore is in progress ({pending[0]}): let `erasure serve` or `erasure forget` finish it "
                       "before migrating")
    for what, configured, target in (("database", ws.database_url(), targets.database),
                                     ("object store", ws.object_store_url(), targets.object_store)):
        if configured and configured != target:
            raise BadInput(f"the workspace is already configured for another {what} ({_redact(configured)}): "
                           "nothing migrated")
    moves, _ = registry_plan(ws, targets.mlflow)
    config = ws.config()
    for section, values in _config_wanted(ws, targets, moves).items():
        for key, value in values.items():
            present = config.get(section, {}).get(key)
            if present is not None and present != value:
                raise BadInput(f"{ws.config_file} already has [{section}] {key} = {_redact(str(present))}, not "
                               f"{_redact(value)}: nothing migrated")
    source = SqliteStore.open(ws.ledger_db, create=False)
    try:
        _check_target_ledger(source, targets.database)
    finally:
        source.close()
    _versions_plan(ws, targets.object_store)  # raises on a conflict
    if moves:
        _check_registry(ws, targets.mlflow)  # type: ignore[arg-type]


# --- 1. ledger ----------------------------------------------------------------------------------


def _check_target_ledger(source: SqliteStore, url: str) -> None:
    from ledger.postgres_store import PostgresStore

    if not PostgresStore.exists(url):
        return
    target = PostgresStore.open(url, source.origin, create=False)  # BadInput: another origin
    try:
        with source.reading() as src, target.reading() as dst:
            _check_prefix(src, dst, url)
    finally:
        target.close()


def _check_prefix(src: LogReader, dst: LogReader, url: str) -> int:
    """The target's size, after checking that what it holds is a prefix of the source log (entries,
    natural keys, tree hashes, checkpoints): BadInput naming the first difference otherwise."""
    from ledger.postgres_store import describe

    have, size = dst.size(), src.size()
    refusal = f"the database {describe(url)} holds another ledger"
    if have > size:
        raise BadInput(f"{refusal}: {have} entries, more than the workspace's {size} (or the workspace already moved "
                       "and went on there): nothing migrated")
    if have == 0:
        if dst.checkpoints():
            raise BadInput(f"{refusal}: checkpoints without entries: nothing migrated")
        return 0
    for (i, a), (_, b) in zip(src.entries(0, have), dst.entries(0, have), strict=True):
        if a != b:
            raise BadInput(f"{refusal}: entry {i} differs: nothing migrated")
    if [k for k in src.iter_keys() if k[0] < have] != list(dst.iter_keys()):
        raise BadInput(f"{refusal}: the natural keys differ: nothing migrated")
    positions = list(range(stored_count(have)))
    if src.read_hashes(positions) != dst.read_hashes(positions):
        raise BadInput(f"{refusal}: the tree hashes differ: nothing migrated")
    mine = dict(src.checkpoints())
    for at, note in dst.checkpoints():
        if mine.get(at) != note:
            raise BadInput(f"{refusal}: its checkpoint of size {at} is not the workspace's: nothing migrated")
    return have


def migrate_ledger(ws: Workspace, url: str) -> dict:
    """Copy ledger.db into the database (store level, verbatim, one transaction; completes a
    prefix an interrupted run left) and prove it: `ledger_proof`."""
    from ledger.postgres_store import PostgresStore

    source = SqliteStore.open(ws.ledger_db, create=False)
    try:
        target = PostgresStore.open(url, source.origin, create=True)
        try:
            with source.writing() as src, target.writing() as dst:  # the embedded log held still meanwhile
                have, size = _check_prefix(src, dst, url), src.size()
                keys = {i: k for i, k in src.iter_keys() if i >= have}
                dst.insert_entries([(i, data, keys.get(i)) for i, data in src.entries(have, size)])
                first = stored_count(have)
                dst.insert_hashes([(pos, h) for pos, h in src.iter_hashes() if pos >= first])
                present = {at for at, _ in dst.checkpoints()}
                checkpoints = [(at, note) for at, note in src.checkpoints() if at not in present]
                for at, note in checkpoints:
                    dst.insert_checkpoint(at, note)
        finally:
            target.close()
    finally:
        source.close()
    return {"entries_copied": size - have, "checkpoints_copied": len(checkpoints), **ledger_proof(ws, url)}


def _state(store: Any) -> dict:
    ledger = Ledger(store)
    with store.reading() as view:
        size = view.size()
        recomputed = root([leaf_hash(data) for _, data in view.iter_entries()]) if size else None
        latest = view.latest_checkpoint()
    stored = ledger.root(size)
    return {"size": size, "root": stored.hex(), "root_from_entries": recomputed.hex() if recomputed else stored.hex(),
            "checkpoint_size": latest[0] if latest else None,
            "checkpoint_sha256": hashlib.sha256(latest[1].encode()).hexdigest() if latest else None}


def ledger_proof(ws: Workspace, url: str) -> dict:
    """Size, root (stored and recomputed from the entries) and latest checkpoint of ledger.db
    (`before`) and of the database (`after`); VerificationFailed unless all are the same."""
    from ledger.postgres_store import PostgresStore, describe

    source = SqliteStore.open(ws.ledger_db, create=False)
    try:
        target = PostgresStore.open(url, source.origin, create=False)
        try:
            before, after = _state(source), _state(target)
        finally:
            target.close()
    finally:
        source.close()
    for side, state in (("ledger.db", before), (describe(url), after)):
        if state["root"] != state["root_from_entries"]:
            raise VerificationFailed(f"the ledger in {side}: its stored tree hashes are not the tree of its entries")
    if before != after:
        differ = next(k for k in before if before[k] != after[k])
        raise VerificationFailed(f"the migrated ledger differs from ledger.db in {differ}: {before[differ]} there, "
                                 f"{after[differ]} in {describe(url)} (was ledger.db written meanwhile? run it again)")
    return {"before": before, "after": after, "identical": True}


# --- 2. records ---------------------------------------------------------------------------------


def migrate_records(ws: Workspace, url: str, keys_url: str) -> dict:
    """Copy records.db and the data keys (record-keys.db) verbatim into the databases; prove equal
    rows in every table and that a sample of records decrypts the same from PostgreSQL."""
    from unlearning.data.partition import Partition
    from unlearning.data.records import RecordStore

    if not ws.records_db.exists():
        return {"skipped": f"no embedded record store ({ws.records_db})", "inserted": {}, "counts": {}}
    if not ws.record_keys_db.exists():
        return {"skipped": f"no data keys at {ws.record_keys_db}: retired by an earlier migration", "inserted": {},
                "counts": {}}
    partition = Partition.for_workspace(ws)
    with RecordStore(ws.records_db, ws.record_keys_db, partition) as source, \
            RecordStore.on_postgres(url, keys_url, partition) as target:
        rows = source.export_rows()
        inserted = target.import_rows(rows)
        copied = target.export_rows()
        counts = {table: len(found) for table, found in rows.items()}
        if copied != rows:
            differ = next(t for t in rows if rows[t] != copied.get(t))
            raise VerificationFailed(f"the migrated record store differs in {differ}: {counts[differ]} rows here, "
                                     f"{len(copied.get(differ, []))} there")
        ids = [row[0] for row in rows["records"]]
        sample = ids[:: max(1, len(ids) // _SAMPLE)][:_SAMPLE]
        for record_id in sample:
            if target.record(record_id) != source.record(record_id):
                raise VerificationFailed(f"record {record_id!r} does not decrypt to the same content from PostgreSQL")
    return {"inserted": inserted, "counts": counts, "target_counts": {t: len(r) for t, r in copied.items()},
            "decrypted_sample": len(sample)}


# --- 3. versions and bundles --------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local_versions(ws: Workspace) -> list[tuple[str, int, Path]]:
    root_dir = ws.artifacts / "models"
    found = []
    for model in sorted(root_dir.iterdir()) if root_dir.is_dir() else []:
        for directory in sorted(model.iterdir()) if model.is_dir() else []:
            if (m := _VERSION_DIR.fullmatch(directory.name)) and (directory / MODEL_JSON).is_file():
                found.append((model.name, int(m.group(1)), directory))
    return sorted(found, key=lambda v: (v[0], v[1]))


def _local_bundles(ws: Workspace) -> list[tuple[str, int, Path]]:
    root_dir = ws.artifacts / BUNDLES_DIR
    found = []
    for model in sorted(root_dir.iterdir()) if root_dir.is_dir() else []:
        for directory in sorted(model.iterdir()) if model.is_dir() else []:
            if (m := _VERSION_DIR.fullmatch(directory.name)) and (directory / ENVELOPE_FILE).is_file():
                found.append((model.name, int(m.group(1)), directory))
    return sorted(found, key=lambda v: (v[0], v[1]))


def _version_digests(path: Path) -> dict:
    return {"model_json": _sha(path / MODEL_JSON),
            "components": {c.name: {f.name: _sha(f) for f in sorted(c.iterdir()) if f.is_file()}
                           for c in sorted((path / "components").iterdir())}}


def _bundle_digests(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): _sha(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _versions_plan(ws: Workspace, url: str) -> tuple[list, list, list, list]:
    """(versions to upload, versions already there, bundles to upload, bundles already there);
    BadInput when the store holds another version or bundle under a local one's name and number."""
    from unlearning.versions.remote import RemoteVersions, bundle_key

    local_versions, local_bundles = _local_versions(ws), _local_bundles(ws)
    if not (local_versions or local_bundles):
        return [], [], [], []
    remote = RemoteVersions(url)
    upload, there, upload_bundles, bundles_there = [], [], [], []
    stored = {name: set(remote.versions(name)) for name in {v[0] for v in local_versions}}
    for name, number, path in local_versions:
        if number not in stored[name]:
            upload.append((name, number, path))
            continue
        index = remote.index(name, number)
        if {"model_json": index["model_json"], "components": index["components"]} != _version_digests(path):
            raise BadInput(f"the object store {_redact(url)} already holds another {name} v{number}: nothing migrated")
        there.append((name, number, path))
    for name, number, path in local_bundles:
        if not remote.has_bundle(name, number):
            upload_bundles.append((name, number, path))
            continue
        index = json.loads(remote.objects.get(bundle_key(name, number)))
        if index.get("files") != _bundle_digests(path):
            raise BadInput(f"the object store {_redact(url)} already holds another bundle of {name} v{number}: "
                           "nothing migrated")
        bundles_there.append((name, number, path))
    return upload, there, upload_bundles, bundles_there


def migrate_versions(ws: Workspace, url: str) -> dict:
    """Upload every local model version and certified bundle the object store lacks, and mark each
    local copy as the store's (`SYNCED_MARK`: a host drops it once the store no longer holds it)."""
    from unlearning.versions.remote import RemoteVersions

    upload, there, upload_bundles, bundles_there = _versions_plan(ws, url)
    remote = RemoteVersions(url)
    for name, number, path in upload:
        if not remote.upload(name, number, path) and \
                {k: remote.index(name, number)[k] for k in ("model_json", "components")} != _version_digests(path):
            raise BadInput(f"{name} v{number} was written to {_redact(url)} by someone else meanwhile")
    for name, number, path in upload_bundles:
        remote.upload_bundle(name, number, path)
    for _, _, path in (*upload, *there):
        (path / SYNCED_MARK).touch()
    listed = {name: remote.versions(name) for name in sorted({v[0] for v in (*upload, *there)})}
    missing = [f"{n} v{v}" for n, v, _ in (*upload, *there) if v not in listed[n]]
    missing += [f"bundle {n} v{v}" for n, v, _ in (*upload_bundles, *bundles_there) if not remote.has_bundle(n, v)]
    if missing:
        raise VerificationFailed(f"the object store {_redact(url)} lacks {', '.join(missing)} after the upload")
    return {"uploaded": [f"{n}/v{v}" for n, v, _ in upload], "already_there": [f"{n}/v{v}" for n, v, _ in there],
            "bundles_uploaded": [f"{n}/v{v}" for n, v, _ in upload_bundles],
            "bundles_already_there": [f"{n}/v{v}" for n, v, _ in bundles_there], "in_store": listed}


# --- 4. registry --------------------------------------------------------------------------------


def _registries(ws: Workspace, url: str):  # type: ignore[no-untyped-def]
    from unlearning.registry.mlflow import Registry

    source = Registry(ws.mlflow_embedded_uri, ws.mlflow_artifacts)
    return source, Registry(url)  # the target last: MLflow's global tracking URI resolves its proxied artifacts


def _model_names(registry: Any) -> list[str]:
    names, token = [], None
    while True:
        page = registry._call("model listing", registry.client.search_registered_models, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def _summary(registry: Any, name: str) -> list[dict]:
    return [{"version": r.version, "local_version": r.local_version, "status": r.status,
             "certificate_sha256": r.certificate_sha256, "aliases": sorted(r.aliases)} for r in registry.versions(name)]


def _check_registry(ws: Workspace, url: str) -> None:
    source, target = _registries(ws, url)
    for name in _model_names(source):
        mine = {r.version: r.certificate_sha256 for r in source.versions(name)}
        for r in target._safe_versions(name):
            if r.version in mine and mine[r.version] != r.certificate_sha256:
                raise BadInput(f"the registry at {url} already holds another {name} v{r.version}: nothing migrated")
            if r.version > max(mine, default=0):
                raise BadInput(f"the registry at {url} holds {name} v{r.version}, past the workspace's versions: it "
                               "is another registry's model: nothing migrated")


def migrate_registry(ws: Workspace, url: str) -> dict:
    """Copy every model of the embedded registry to the server (`Registry.copy_from`: same version
    numbers, tags, aliases, bundles; resumable) and prove the versions listed on both are the same."""
    source, target = _registries(ws, url)
    copied, proof = {}, {}
    for name in _model_names(source):
        copied[name] = target.copy_from(source, name)
        before, after = _summary(source, name), _summary(target, name)
        if before != after:
            raise VerificationFailed(f"the registry at {url} lists {name} as {after}, the embedded one as {before}")
        proof[name] = after
    return {"copied": copied, "versions": proof, "target": url}


# --- 5. config ----------------------------------------------------------------------------------


def write_config(ws: Workspace, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Add the settings erasure.toml lacks (a key into its section when the section is there, else
    a new section at the end); returns what was added."""
    text = ws.config_file.read_text() if ws.config_file.exists() else ""
    config = ws.config()
    added: dict[str, dict[str, str]] = {}
    for section, values in wanted.items():
        new = {k: v for k, v in values.items() if config.get(section, {}).get(k) is None}
        if not new:
            continue
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in new.items())
        header = re.search(rf"(?m)^\[{re.escape(section)}\][ \t]*(#.*)?\n", text)
        if header is not None:
            text = text[:header.end()] + lines + text[header.end():]
        else:
            text += ("" if not text or text.endswith("\n") else "\n") + ("\n" if text else "") + f"[{section}]\n" + lines
        added[section] = new
    if added:
        import tomllib

        tomllib.loads(text)  # what we write must parse
        ws.ensure()
        fd, tmp = tempfile.mkstemp(dir=ws.home, prefix=".erasure.toml.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if ws.config_file.exists():
            shutil.copymode(ws.config_file, tmp)
        os.replace(tmp, ws.config_file)
    return added


# --- all of it ----------------------------------------------------------------------------------


def migrate(ws: Workspace, database_url: str, object_store_url: str, mlflow_url: str | None = None,
            progress: Progress | None = None, keys_database_url: str | None = None) -> dict:
    """Run the steps in order (ledger, records, versions, registry, config) after `preflight`;
    returns the proof of each. The ledger is proved once more at the end (nothing appended to
    either side meanwhile)."""
    say = progress or (lambda step, line: None)
    targets = targets_for(ws, database_url, object_store_url, mlflow_url, keys_database_url)
    preflight(ws, targets)
    moves, registry_note = registry_plan(ws, targets.mlflow)
    out: dict[str, Any] = {}

    out["ledger"] = migrate_ledger(ws, targets.database)
    after = out["ledger"]["after"]
    say("ledger", f"{out['ledger']['entries_copied']} entries copied; size {after['size']} root {after['root'][:16]}… "
                  "the same on both sides")
    out["records"] = migrate_records(ws, targets.database, targets.keys_database)
    if "skipped" in out["records"]:
        say("records", out["records"]["skipped"])
    else:
        counts = out["records"]["counts"]
        say("records", f"{sum(out['records']['inserted'].values())} rows copied; {counts['records']} records, "
                       f"{counts['subject_keys']} data keys the same on both sides, "
                       f"{out['records']['decrypted_sample']} decrypted from PostgreSQL")
    out["versions"] = migrate_versions(ws, targets.object_store)
    v = out["versions"]
    say("versions", f"{len(v['uploaded'])} versions and {len(v['bundles_uploaded'])} bundles uploaded "
                    f"({len(v['already_there'])} and {len(v['bundles_already_there'])} were there)")
    if moves:
        out["registry"] = migrate_registry(ws, targets.mlflow)  # type: ignore[arg-type]
        say("registry", f"{sum(map(len, out['registry']['copied'].values()))} versions copied to {targets.mlflow}; "
                        f"{sum(map(len, out['registry']['versions'].values()))} listed the same on both")
    else:
        out["registry"] = {"skipped": registry_note}
        say("registry", registry_note)
    out["ledger"]["final"] = ledger_proof(ws, targets.database)["after"]
    added = write_config(ws, _config_wanted(ws, targets, moves))
    out["config"] = {"file": str(ws.config_file), "added": {s: {k: _redact(v) for k, v in kv.items()}
                                                           for s, kv in added.items()}}
    say("config", (f"{ws.config_file}: added " + ", ".join(f"[{s}] {', '.join(kv)}" for s, kv in added.items()))
        if added else f"{ws.config_file} already names these backends")
    out["retired"] = retire(ws, moves)
    if out["retired"]:
        say("retired", "deleted what later erasures would not reach: " + ", ".join(out["retired"]))
    out["stale"] = [str(p) for p in (ws.ledger_db,) if p.exists()]
    out["stale_note"] = "a backup, no longer written: the ledger's entries (commitments, no personal data)"
    return out


# --- 6. retire ----------------------------------------------------------------------------------


def retire(ws: Workspace, registry_moved: bool) -> list[str]:
    """Delete the local copies an erasure from now on would not reach, once the workspace uses the
    shared backends (config written): the record store (`records.db`: subject ids and provenance
    in the clear beside the sealed records) with its data keys (`record-keys.db`: they would still
    open a subject erased later) and, when the registry moved, the embedded registry (`mlflow.db`,
    `mlflow-artifacts/`: bundles a later purge would leave behind). `ledger.db` stays as a backup
    (commitments, no personal data). Local model versions stay: they are marked as the object
    store's, and a host drops a copy the store no longer holds."""
    gone = []
    doomed = [db.with_name(db.name + suffix) for db in (ws.record_keys_db, ws.records_db)
              for suffix in ("", "-wal", "-shm")]
    if registry_moved:
        doomed += [ws.mlflow_db, ws.mlflow_artifacts]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        gone.append(str(path))
    return gone


def _redact(url: str) -> str:
    from unlearning.data.records import redact_url

    return redact_url(url) if "://" in url else url
