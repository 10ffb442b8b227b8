"""Record store, partitioning, LoRA training engine, unlearning methods and evaluation.

Importing the package is cheap: torch, transformers and peft are imported only by the
modules that train or score (`models`, `engine`, `training`, `inference`, `evaluation`).
"""


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # `unlearning.load_certified` without importing the registry (and mlflow) at package import
    if name == "load_certified":
        from unlearning.registry.verify import load_certified

        return load_certified
    raise AttributeError(name)
