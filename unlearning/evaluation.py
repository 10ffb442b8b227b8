"""TALLRec evaluation: AUC and accuracy of P(Yes) on held-out subjects, beside a trivial baseline.

The baseline scores each sample by the share of liked movies in its history. On MovieLens
that signal alone reaches an AUC around 0.8, so it is always reported next to the model's
AUC: a model is only learning something if it beats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rich.progress import Progress

from unlearning.data.movielens import history_positivity
from unlearning.data.records import Record
from unlearning.versions.store import ModelVersion


@dataclass(frozen=True)
class Evaluation:
    auc: float | None  # None when the labels hold only one class
    accuracy: float | None
    baseline_auc: float | None  # None unless every prompt has a MovieLens-style history
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def metrics(labels: Sequence[int], p_yes: Sequence[float], baseline: Sequence[float | None]) -> Evaluation:
    """AUC and accuracy (threshold 0.5) of P(Yes), and the AUC of the baseline scores."""
    if not labels:
        return Evaluation(None, None, None, 0)
    accuracy = sum((p >= 0.5) == bool(y) for y, p in zip(labels, p_yes, strict=True)) / len(labels)
    complete = all(b is not None for b in baseline)
    return Evaluation(_auc(labels, p_yes), accuracy, _auc(labels, baseline) if complete else None, len(labels))


def evaluate(version: ModelVersion, records: Sequence[Record], progress: Progress | None = None) -> Evaluation:
    """Evaluate on the records whose answer is "Yes" or "No"."""
    from unlearning.inference import Predictor

    scored = [r for r in records if r.answer in ("Yes", "No")]
    p_yes = Predictor(version).p_yes([r.prompt for r in scored], progress) if scored else []
    labels = [int(r.answer == "Yes") for r in scored]
    return metrics(labels, p_yes, [history_positivity(r.prompt) for r in scored])
