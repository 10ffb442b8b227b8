"""Predictions of a model version: mean P(Yes) over its aggregated components (SISA, retrain)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.progress import Progress

from ledger.errors import BadInput

from unlearning.model_store import ModelVersion
from unlearning.training import engine_for


class Predictor:
    def __init__(self, version: ModelVersion):
        rule = version.meta["aggregation"]["rule"]
        if rule != "mean_p_yes":
            raise BadInput(f"model {version.name} v{version.version}: unknown aggregation rule {rule!r}")
        self.version = version
        self.engine = engine_for(version.config, expected_base=version.meta["base"])
        self.adapters = [version.component(cid).adapter() for cid in version.aggregate]

    def p_yes(self, prompts: Sequence[str], progress: Progress | None = None) -> list[float]:
        ids = [self.engine.base.encode_prompt(p) for p in prompts]
        per_component = [
            self.engine.p_yes(adapter, ids, progress=progress, label=f"scoring {cid}")
            for cid, adapter in zip(self.version.aggregate, self.adapters, strict=True)
        ]
        return [sum(scores) / len(scores) for scores in zip(*per_component, strict=True)]
