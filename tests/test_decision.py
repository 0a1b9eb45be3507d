"""The one decision rule (rendernet.decision) and the spreadsheet-safe CSV built on it (rendernet.report)."""

import csv
import io

import numpy as np
import pytest
from rendernet.decision import decide
from rendernet.report import results_csv

CLASSES = ["real", "render"]


@pytest.mark.parametrize(
    "p_render, label, confidence",
    [
        (0.472, "render", 0.5),
        (1.0, "render", 1.0),
        (0.0, "real", 1.0),
        (0.236, "real", 0.75),
        (0.736, "render", 0.75),
    ],
)
def test_threshold_rule_and_confidence(p_render, label, confidence):
    decision = decide([1 - p_render, p_render], CLASSES, threshold=0.472)
    assert decision.label == label and decision.confidence == pytest.approx(confidence)


def test_not_sure_band_follows_the_sure_level():
    probabilities = {"real": 0.4, "render": 0.6}  # confidence 0.5 + 0.5 * 0.128 / 0.528 = 0.621
    assert not decide(probabilities, CLASSES, 0.472, sure=0.6).not_sure
    assert decide(probabilities, CLASSES, 0.472, sure=0.65).not_sure


def test_argmax_without_threshold():
    decision = decide([0.2, 0.5, 0.3], ["a", "b", "c"])
    assert decision == ("b", 0.5, True)


def test_model_label_and_metrics_use_the_same_rule():
    from conftest import DEFAULT_MODEL
    from rendernet import load_model
    from rendernet.metrics import predict_labels

    default_model = load_model(DEFAULT_MODEL)
    rows = np.random.default_rng(0).dirichlet([1, 1], size=200).astype(np.float32)
    by_model = [default_model.label(row) for row in rows]
    by_metrics = [default_model.classes[index] for index in predict_labels(rows, default_model.threshold)]
    by_rule = [decide(row, default_model.classes, default_model.threshold).label for row in rows]
    assert by_model == by_metrics == by_rule


def test_csv_neutralises_formulas_and_agrees_with_the_rule():
    hostile = ['=HYPERLINK("http://x")', "+cmd", "-1+1", "@SUM(1)", "\tx", "\rx", 'plain, "quoted"\nname']
    results = [{"file": name, "probabilities": {"real": 0.3, "render": 0.7}, "ms": 5.0} for name in hostile]
    results.append({"file": "=bad.png", "error": "=not an image"})
    rows = list(csv.DictReader(io.StringIO(results_csv(results, CLASSES, 0.472, sure=0.8))))
    assert [row["file"] for row in rows[:-1]] == ["'" + name for name in hostile[:-1]] + [hostile[-1]]
    assert rows[-1]["file"] == "'=bad.png" and rows[-1]["error"] == "'=not an image"
    decision = decide([0.3, 0.7], CLASSES, 0.472, sure=0.8)
    assert all(row["label"] == decision.label and row["not_sure"] == str(decision.not_sure) for row in rows[:-1])


def test_roc_auc_counts_ties_half_in_linear_memory():
    from rendernet.metrics import roc_auc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) + 0.3 * labels, 1)  # many ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = (positives[:, None] > negatives).sum() + 0.5 * (positives[:, None] == negatives).sum()
    assert roc_auc(labels, scores) == round(pairs / (len(positives) * len(negatives)), 4)
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    many = 400_000  # the pairwise matrix would be 40 GB
    labels = np.arange(many) % 2
    assert roc_auc(labels, labels + rng.random(many) * 0.5) == 1.0
