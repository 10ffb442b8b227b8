"""Predictions of a model version: the method's way of combining its components
(`Method.scorer`): mean P(Yes) over the aggregated components for retrain, SISA and S3T; APA's
per-input merged adapter (its aggregator must hold predictions of exactly this version's
adapters, else VerificationFailed).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.progress import Progress

from unlearning import methods
from unlearning.operations.build import engine_for
from unlearning.versions.store import ModelVersion


class Predictor:
    def __init__(self, version: ModelVersion):
        self.version = version
        self.engine = engine_for(version.config, expected_base=version.meta.base)
        self._scorer = methods.get(version.meta.method).scorer(version, self.engine)

    def p_yes(self, prompts: Sequence[str], progress: Progress | None = None) -> list[float]:
        return self._scorer([self.engine.base.encode_prompt(p) for p in prompts], progress)
