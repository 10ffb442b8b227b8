"""TALLRec evaluation: AUC and accuracy of P(Yes) on held-out subjects, beside a trivial baseline;
and the forgetting measures of an approximate update (membership inference, gap to the exact model).

The baseline scores each sample by the share of liked movies in its history. On MovieLens
that signal alone reaches an AUC around 0.8, so it is always reported next to the model's
AUC: a model is only learning something if it beats it.
"""

from __future__ import annotations

import math
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


def gap_closed(original: Sequence[float], approximate: Sequence[float], exact: Sequence[float]) -> float | None:
    """The share of the distance from the original to the exact model's P(Yes) (L2 over the
    records) that the approximate model removed: 1 = exact, 0 = no closer, < 0 = further away
    (an overshoot past the exact model counts against it). None when there is no gap."""
    gap = math.dist(original, exact)
    return None if gap == 0 else 1 - math.dist(approximate, exact) / gap


def mia_auc(member_p: Sequence[float], members: Sequence[Record], outsider_p: Sequence[float],
            outsiders: Sequence[Record]) -> float | None:
    """Loss-based membership inference: the AUC of -loss telling members from outsiders
    (0.5: members look unseen; 1: every member has the lower loss)."""
    scores = [-x for x in _losses(member_p, members) + _losses(outsider_p, outsiders)]
    return metrics([1] * len(members) + [0] * len(outsiders), scores, [None]).auc


def _losses(p_yes: Sequence[float], records: Sequence[Record]) -> list[float]:
    """-log P(answer) over {Yes, No}, per record."""
    return [-math.log(max(p if r.answer == "Yes" else 1 - p, 1e-12)) for p, r in zip(p_yes, records, strict=True)]
