"""Predictions of a model version by its aggregation rule.

- `mean_p_yes` (retrain, SISA, S3T): mean P(Yes) over the aggregated components, one pass each;
- `apa`: per input, adapter weights from the aggregator's validation neighbours and one pass
  with the merged adapter (`unlearning.methods.apa.aggregation`); the aggregator's prediction columns
  must come from exactly this version's adapters (else VerificationFailed).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.progress import Progress

from ledger.errors import BadInput, VerificationFailed
from unlearning.operations.build import engine_for
from unlearning.versions.store import ModelVersion

RULES = ("mean_p_yes", "apa")


class Predictor:
    def __init__(self, version: ModelVersion):
        self.rule = version.meta["aggregation"]["rule"]
        if self.rule not in RULES:
            raise BadInput(f"model {version.name} v{version.version}: unknown aggregation rule {self.rule!r}")
        self.version = version
        self.engine = engine_for(version.config, expected_base=version.meta["base"])
        self.adapters = [version.component(cid).adapter() for cid in version.aggregate]
        if self.rule == "apa":
            from unlearning.methods.apa.aggregation import Aggregator

            settings = version.meta["aggregation"]
            self.aggregator = Aggregator.load(version.component(settings["aggregator"]).path)
            expected = tuple((cid, version.component(cid).weights_sha256) for cid in version.aggregate)
            if self.aggregator.adapters != expected:
                raise VerificationFailed(f"model {version.name} v{version.version}: the aggregator's predictions "
                                         "are not those of the version's adapters")

    def p_yes(self, prompts: Sequence[str], progress: Progress | None = None) -> list[float]:
        ids = [self.engine.base.encode_prompt(p) for p in prompts]
        if self.rule == "apa":
            return self._merged_p_yes(ids, progress)
        per_component = [
            self.engine.p_yes(adapter, ids, progress=progress, label=f"scoring {cid}")
            for cid, adapter in zip(self.version.aggregate, self.adapters, strict=True)
        ]
        return [sum(scores) / len(scores) for scores in zip(*per_component, strict=True)]

    def _merged_p_yes(self, ids: list[list[int]], progress: Progress | None) -> list[float]:
        from unlearning.methods.apa.aggregation import merged_p_yes
        from unlearning.training.embeddings import embed

        settings = self.version.meta["aggregation"]
        weights = self.aggregator.adapter_weights(embed(self.engine, ids), settings["tau"], settings["neighbours"])
        return merged_p_yes(self.engine, self.adapters, weights, ids, settings["merge"], progress)
