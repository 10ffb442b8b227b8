"""Unlearning: records (`data`), the LoRA engine (`training`), methods (`methods`), model
versions on disk (`versions`), the certified operations shared by the CLI and the pipeline
(`operations`), the MLflow registry and verification (`registry`), and benchmarks (`bench`).

Importing the package is cheap: torch, transformers and peft are imported only by the modules
that train or score (`training.engine`, `training.base_models`, `operations.build`, `inference`,
`evaluation`, `methods.apa.aggregation`, `methods.influence.solver`).
"""


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # `unlearning.load_certified` without importing the registry (and mlflow) at package import
    if name == "load_certified":
        from unlearning.registry.verify import load_certified

        return load_certified
    raise AttributeError(name)
