"""TALLRec metrics: AUC, accuracy and the history-positivity baseline beside them."""

from __future__ import annotations

import pytest

from unlearning.evaluation import metrics


def test_metrics_against_hand_computed_values():
    labels = [1, 1, 0, 0, 1]
    p_yes = [0.9, 0.4, 0.3, 0.6, 0.8]
    baseline = [0.7, 0.6, 0.1, 0.2, 0.5]
    result = metrics(labels, p_yes, baseline)
    # Positive/negative pairs ranked correctly: (0.9, 0.8 beat both negatives; 0.4 beats 0.3 only) = 5/6.
    assert result.auc == pytest.approx(5 / 6)
    assert result.accuracy == pytest.approx(3 / 5)  # 0.9, 0.3, 0.8 right; 0.4 and 0.6 wrong
    assert result.baseline_auc == pytest.approx(1.0)
    assert result.n == 5


def test_undefined_metrics_are_none():
    assert metrics([1, 1], [0.2, 0.9], [0.5, 0.5]).auc is None  # one class only
    assert metrics([1, 0], [0.2, 0.9], [None, 0.5]).baseline_auc is None  # not MovieLens prompts
    assert metrics([], [], []).n == 0
