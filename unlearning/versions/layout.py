"""Model versions on disk: `$ERASURE_HOME/artifacts/models/NAME/vN/`.

    vN/model.json                      name, version, method, config, base, environment,
                                       aggregation (rule, components, APA settings or S3T
                                       order state), partition, component ids
    vN/components/ID/
        adapter_model.safetensors      LoRA weights (peft format)
        adapter_config.json            peft LoraConfig
        training_state.safetensors     optimizer moments, RNG states (the checkpoint)
        training_state.json            optimizer/scheduler structure, step count
        manifest.leaves                sorted 32-byte commitments of every record trained on
        component.json                 id, kind, shard, slice, S3T layer group, parent, manifest
                                       root+size, weights sha256, sha256 of every other file,
                                       environment
    vN/components/aggregator/          APA only: the validation pool and per-adapter predictions
        aggregator.safetensors         rows (commitments), labels, embeddings, P(Yes) per adapter
        manifest.leaves, component.json  as above; component.json names the adapters (id, sha256)

Only names live here (no imports), so every module that reads or writes these files takes
them from one place.
"""

MODEL_JSON = "model.json"
SYNCED_MARK = ".object-store"  # in vN/: this copy came from or went to the object store
BUNDLES_DIR = "bundles"  # artifacts/bundles/NAME/vN: certified bundles (unlearning.versions.bundle)
COMPONENT_JSON = "component.json"
MANIFEST_FILE = "manifest.leaves"
ADAPTER_FILE = "adapter_model.safetensors"
AGGREGATOR_FILE = "aggregator.safetensors"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
