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


def test_gap_closed_is_the_share_of_the_distance_to_the_exact_model_removed() -> None:
    from unlearning.evaluation import gap_closed

    original, exact = [0.8, 0.6], [0.2, 0.6]
    assert gap_closed(original, exact, exact) == 1
    assert gap_closed(original, original, exact) == 0
    assert gap_closed(original, [0.5, 0.6], exact) == pytest.approx(0.5)
    assert gap_closed(original, [-0.4, 0.6], exact) == pytest.approx(0)  # overshooting as far past it is no closer
    assert gap_closed(original, [0.8, 1.0], exact) < 0  # moving elsewhere counts against it
    assert gap_closed(exact, [0.1, 0.1], exact) is None  # no gap to close


def test_membership_inference_auc_ranks_members_by_lower_loss() -> None:
    from unlearning.data.records import Record
    from unlearning.evaluation import mia_auc

    members = [Record(f"m{i}", "s", "p", "Yes") for i in range(2)]
    outsiders = [Record(f"o{i}", "s", "p", a) for i, a in enumerate(("Yes", "No"))]
    assert mia_auc([0.9, 0.8], members, [0.5, 0.5], outsiders) == 1  # members fit better: remembered
    assert mia_auc([0.5, 0.5], members, [0.5, 0.5], outsiders) == 0.5  # indistinguishable
