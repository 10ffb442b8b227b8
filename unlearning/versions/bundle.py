"""A model version's registered bundle: what is served and certified, nothing that is not.

The bundle mirrors the version directory so the same loaders read both:

    model.json                       method, config, base, aggregation (rule, served components)
    components/ID/adapter_model.safetensors, adapter_config.json, component.json, manifest.leaves
    (any other public per-component file a method needs at inference, e.g. APA predictions)
    model.sig                        OpenSSF model-signing v1.0 signature over every file above
                                     (`ledger.model_signature`), written by certify before the certificate
    attestation/certificate.dsse.json, attestation/certificate.tlog-proof

Training state (optimizer moments, RNG) stays in the workspace: it is needed to resume, not to
serve. A component's manifest sits beside its weights, so an auditor reads each component's
claim where its files are. Nothing here imports torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ledger.errors import BadInput
from unlearning.versions.layout import MANIFEST_FILE, MODEL_JSON
from unlearning.versions.store import ModelVersion

# The checkpoint files needed only to resume training.
_PRIVATE_PREFIX = "training_state"


def write_bundle(version: ModelVersion, dest: Path) -> Path:
    """Copy the version's servable files into `dest` (which must not exist yet)."""
    if dest.exists():
        raise BadInput(f"bundle directory {dest} already exists")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "components").mkdir(parents=True)
    shutil.copy2(version.path / MODEL_JSON, tmp / MODEL_JSON)
    for component in version.components:
        target = tmp / "components" / component.id
        target.mkdir()
        for path in sorted(component.path.iterdir()):
            if path.is_file() and not path.name.startswith(_PRIVATE_PREFIX):
                shutil.copy2(path, target / path.name)
    tmp.rename(dest)
    return dest


def bundle_version(bundle: Path) -> ModelVersion:
    """Read a (verified) bundle as a model version, for prediction."""
    if not (bundle / MODEL_JSON).is_file():
        raise BadInput(f"{bundle} is not a model bundle (no {MODEL_JSON})")
    version = ModelVersion("", 0, bundle)
    return ModelVersion(version.meta.name, version.meta.version, bundle)


def manifest_file(component_id: str) -> str:
    return f"components/{component_id}/{MANIFEST_FILE}"
