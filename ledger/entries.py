"""Every entry type the service logs: its fields and its natural key, in one place.

No other module builds entry dicts or natural keys. A constructor returns an `Entry`, which is
what `Ledger.append_many` takes; `*_key` functions name entries for `Ledger.find` and `read`.
Natural keys make appends idempotent: a redelivered message or a repeated command finds the
entry it logged before instead of logging it again.

Every entry must fit a C2SP tlog-tiles entry bundle (at most 65,535 bytes; `Ledger.append_many`
refuses a larger one). Lists that grow with the input are split or bounded here: a request's
commitments (64 hex chars each) go 512 to an entry, the receipt's `parts` naming how many
`request_commitments` entries follow it; reasons are cut at REASON_MAX characters. The other
lists stay small by construction: model names and shard numbers (`request_planned`), a version's
components (one per shard or slice of one model), and the request ids a version, an exclusion or
a purge names (one batch of requests, each id at most 256 characters).

| entry type            | natural key                                  | logged by |
|-----------------------|----------------------------------------------|-----------|
| request_received      | request/ID                                   | receive (erasure, rectification) |
| request_commitments   | received/ID/part/N (N = 1, 2, …)             | receive (a request's commitments past the receipt's first 512) |
| request_rejected      | rejected/ID                                  | the planner (bad message, unknown model or subject), the HTTP intake |
| request_extended      | extended/ID/N (the Nth extension)            | `erasure request extend` (deadlines) |
| request_planned       | planned/ID                                   | plan |
| request_approximated  | approximated/ID/MODEL                        | approximate |
| request_excluded      | excluded/ID/MODEL                            | exclude (certified exclusion) |
| exclusion_deferred    | excluded/ID/MODEL                            | exclude (nothing left to serve) |
| request_restored      | restored/ID/MODEL/SHARD                      | restore |
| request_failed        | failed/ID                                    | a consumer, on a permanent error |
| component_trained     | component_trained/MODEL/vN/COMPONENT         | training, exclusion (APA aggregator), approximate |
| version_built         | version_built/MODEL/vN                       | training, exclusion, approximate |
| certificate_issued    | certificate/SHA256                           | publish (`ledger.certificate.log_certificate`) |
| model_registered      | model_registered/MODEL/SHA256                | publish (registry) |
| alias_moved           | alias_moved/MODEL/ALIAS/REGISTRY_VERSION     | publish (registry) |
| version_superseded    | version_superseded/MODEL/registry/VERSION    | publish (an EXACT version supersedes APPROXIMATE ones) |
| version_purged        | version_purged/MODEL/vN (local),             | purge |
|                       | version_purged/MODEL/registry/VERSION        |           |
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

RECEIPT_COMMITMENTS = 512  # per entry: 512 x 67 bytes ~ 34 KB, with request/source/deadline fields far below 64 KiB
REASON_MAX = 1000  # characters of a logged reason


def _reason(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


class Entry(NamedTuple):
    type: str
    data: dict[str, Any]
    key: str


def received_key(request_id: str) -> str:
    return f"request/{request_id}"


def commitments_key(request_id: str, part: int) -> str:
    return f"received/{request_id}/part/{part}"


def rejected_key(request_id: str) -> str:
    return f"rejected/{request_id}"


def extended_key(request_id: str, number: int) -> str:
    return f"extended/{request_id}/{number}"


def planned_key(request_id: str) -> str:
    return f"planned/{request_id}"


def approximated_key(request_id: str, model: str) -> str:
    return f"approximated/{request_id}/{model}"


def excluded_key(request_id: str, model: str) -> str:
    return f"excluded/{request_id}/{model}"


def restored_key(request_id: str, model: str, shard: int) -> str:
    return f"restored/{request_id}/{model}/{shard}"


def failed_key(request_id: str) -> str:
    return f"failed/{request_id}"


def component_trained_key(model: str, version: int, component: str) -> str:
    return f"component_trained/{model}/v{version}/{component}"


def version_built_key(model: str, version: int) -> str:
    return f"version_built/{model}/v{version}"


def certificate_key(envelope_sha256: str) -> str:
    return f"certificate/{envelope_sha256}"


def model_registered_key(model: str, envelope_sha256: str) -> str:
    return f"model_registered/{model}/{envelope_sha256}"


def read(ledger: Any, key: str) -> dict | None:
    """The entry logged under `key` (with its `at` and `index`), or None. `ledger`: a `Ledger`."""
    index = ledger.find(key)
    return None if index is None else {**json.loads(ledger.entry(index)), "index": index}


def planned_shards(ledger: Any, request_id: str) -> dict[str, list[int]]:
    """model -> the shards that held the request's records, as planned (empty: not planned)."""
    planned = read(ledger, planned_key(request_id))
    return planned["models"] if planned else {}


# requests and their stages

def request_received(request_id: str, kind: str, subject_tag: str, model: str | None, commitments: list[str],
                     source: dict, fields: list[str] | None = None, activations: int | None = None,
                     deadline: dict | None = None) -> Entry:
    """`kind`: erase_subject, erase_records or rectify_record (`fields`: what the correction changes;
    `activations`: how many cached activation rows of the commitments the request deletes;
    `deadline`: the legal deadline set at receipt and the terms it was set under).

    The entry keeps the first RECEIPT_COMMITMENTS commitments; with more, `parts` names how many
    `request_commitments` entries (`request_parts`) carry the rest, logged in the same append."""
    data = {"request_id": request_id, "kind": kind, "subject_tag": subject_tag, "model": model,
            "commitments": commitments[:RECEIPT_COMMITMENTS], "source": source}
    parts = len(request_parts(request_id, commitments))
    if parts:
        data["parts"] = parts
    if fields is not None:
        data["fields"] = fields
    if activations is not None:
        data["activations"] = activations
    if deadline is not None:
        data["deadline"] = deadline
    return Entry("request_received", data, received_key(request_id))


def request_commitments(request_id: str, part: int, commitments: list[str]) -> Entry:
    """Part `part` (1, 2, …) of a request's commitments past its receipt's."""
    return Entry("request_commitments", {"request_id": request_id, "part": part, "commitments": commitments},
                 commitments_key(request_id, part))


def request_parts(request_id: str, commitments: list[str]) -> list[Entry]:
    """The `request_commitments` entries that follow a `request_received` of `commitments`
    (none for up to RECEIPT_COMMITMENTS); append them with the receipt."""
    n = RECEIPT_COMMITMENTS
    return [request_commitments(request_id, i // n, commitments[i : i + n]) for i in range(n, len(commitments), n)]


def request_rejected(request_id: str, reason: str, kafka: dict | None = None, source: dict | None = None) -> Entry:
    """`kafka`: the message's coordinates (the planner); `source`: where else it came from (the HTTP intake)."""
    data: dict[str, Any] = {"request_id": request_id, "reason": _reason(reason)}
    if kafka is not None:
        data["kafka"] = kafka
    if source is not None:
        data["source"] = source
    return Entry("request_rejected", data, rejected_key(request_id))


def request_extended(request_id: str, number: int, deadline: str, previous: str, days: int, reason: str) -> Entry:
    """The `number`th extension of a request's deadline, from `previous` to `deadline` (ISO, UTC)."""
    return Entry("request_extended", {"request_id": request_id, "number": number, "deadline": deadline,
                                      "previous": previous, "days": days, "reason": _reason(reason)},
                 extended_key(request_id, number))


def request_planned(request_id: str, models: dict[str, list[int]]) -> Entry:
    """`models`: model -> the shards that trained on the request's records."""
    return Entry("request_planned", {"request_id": request_id, "models": models}, planned_key(request_id))


def request_approximated(request_id: str, model: str, reason: str, version: int | None = None,
                         registry_version: int | None = None, certificate_sha256: str | None = None) -> Entry:
    data = {"request_id": request_id, "model": model, "reason": _reason(reason), "version": version,
            "registry_version": registry_version, "certificate_sha256": certificate_sha256}
    return Entry("request_approximated", {k: v for k, v in data.items() if v is not None},
                 approximated_key(request_id, model))


def request_excluded(request_id: str, model: str, version: int, registry_version: int, certificate_sha256: str,
                     removed: list[str]) -> Entry:
    return Entry("request_excluded", {
        "request_id": request_id, "model": model, "version": version, "registry_version": registry_version,
        "certificate_sha256": certificate_sha256, "removed": removed,
    }, excluded_key(request_id, model))


def exclusion_deferred(request_id: str, model: str, reason: str) -> Entry:
    return Entry("exclusion_deferred", {"request_id": request_id, "model": model, "reason": _reason(reason)},
                 excluded_key(request_id, model))


def request_restored(request_id: str, model: str, shard: int, version: int, registry_version: int,
                     certificate_sha256: str, jobs: list[str], executor: str) -> Entry:
    return Entry("request_restored", {
        "request_id": request_id, "model": model, "shard": shard, "version": version,
        "registry_version": registry_version, "certificate_sha256": certificate_sha256, "jobs": jobs,
        "executor": executor,
    }, restored_key(request_id, model, shard))


def request_failed(request_id: str, model: str, reason: str) -> Entry:
    return Entry("request_failed", {"request_id": request_id, "model": model, "reason": _reason(reason)},
                 failed_key(request_id))


# model versions

def component_trained(model: str, version: int, component: str, shard: int | None, slice_: int | None,
                      parent: str | None, manifest_root: str, manifest_size: int, weights_sha256: str,
                      config_sha256: str, kind: str | None = None, from_weights_sha256: str | None = None,
                      requests: list[str] | None = None) -> Entry:
    """A component with new weights: trained, an APA aggregator rewritten by an exclusion, or
    (`kind` influence_update, `from_weights_sha256`, `requests`) moved by an approximate update."""
    data = {"model": model, "version": version, "component": component, "shard": shard, "slice": slice_,
            "parent": parent, "manifest_root": manifest_root, "manifest_size": manifest_size,
            "weights_sha256": weights_sha256, "config_sha256": config_sha256}
    extra = {"kind": kind, "from_weights_sha256": from_weights_sha256, "requests": requests}
    data.update({k: v for k, v in extra.items() if v is not None})
    return Entry("component_trained", data, component_trained_key(model, version, component))


def version_trained(model: str, version: int, method: str, config_sha256: str, base_weights_sha256: str,
                    aggregate: list[str], components: list[dict]) -> Entry:
    """`version_built` of a trained (or restored) version; `components`: id, manifest_root, weights_sha256."""
    return Entry("version_built", {
        "model": model, "version": version, "method": method, "config_sha256": config_sha256,
        "base_weights_sha256": base_weights_sha256, "aggregate": aggregate, "components": components,
    }, version_built_key(model, version))


def version_excluded(model: str, version: int, parent_version: int, removed: list[str], aggregate: list[str],
                     requests: list[str]) -> Entry:
    """`version_built` of an exclusion version (no training: components dropped or truncated)."""
    return Entry("version_built", {
        "model": model, "version": version, "kind": "exclusion", "parent_version": parent_version,
        "removed": removed, "aggregate": aggregate, "requests": requests,
    }, version_built_key(model, version))


def version_approximated(model: str, version: int, kind: str, parent_version: int, updated: list[str],
                         removed: list[str], aggregate: list[str], requests: list[str]) -> Entry:
    """`version_built` of an approximate update (`kind` influence_update)."""
    return Entry("version_built", {
        "model": model, "version": version, "kind": kind, "parent_version": parent_version, "updated": updated,
        "removed": removed, "aggregate": aggregate, "requests": requests,
    }, version_built_key(model, version))


def certificate_issued(model: str, version: int, claim: str, envelope_sha256: str, predicate_type: str) -> Entry:
    return Entry("certificate_issued", {
        "model": model, "version": version, "claim": claim, "envelope_sha256": envelope_sha256,
        "predicate_type": predicate_type,
    }, certificate_key(envelope_sha256))


def model_registered(model: str, version: int, registry_version: int, run_id: str, envelope_sha256: str) -> Entry:
    return Entry("model_registered", {
        "model": model, "version": version, "registry_version": registry_version, "run_id": run_id,
        "envelope_sha256": envelope_sha256,
    }, model_registered_key(model, envelope_sha256))


def alias_moved(model: str, alias: str, from_version: int | None, to_version: int, envelope_sha256: str) -> Entry:
    return Entry("alias_moved", {
        "model": model, "alias": alias, "from_version": from_version, "to_version": to_version,
        "envelope_sha256": envelope_sha256,
    }, f"alias_moved/{model}/{alias}/{to_version}")


def version_superseded(model: str, registry_version: int, version: int, claim: str, by_registry_version: int,
                       requests: list[str]) -> Entry:
    return Entry("version_superseded", {
        "model": model, "registry_version": registry_version, "version": version, "claim": claim,
        "by_registry_version": by_registry_version, "requests": requests,
    }, f"version_superseded/{model}/registry/{registry_version}")


def local_version_purged(model: str, version: int, request_ids: list[str]) -> Entry:
    return Entry("version_purged", {"model": model, "version": version, "request_ids": request_ids},
                 f"version_purged/{model}/v{version}")


def registered_version_purged(model: str, registry_version: int, version: int, request_ids: list[str],
                              envelope_sha256: str) -> Entry:
    return Entry("version_purged", {
        "model": model, "registry_version": registry_version, "version": version, "request_ids": request_ids,
        "envelope_sha256": envelope_sha256,
    }, f"version_purged/{model}/registry/{registry_version}")
