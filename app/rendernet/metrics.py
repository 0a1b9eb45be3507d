"""Scores of a model's predictions: accuracy, per-class precision and recall, confusion, ROC AUC; and the
examples' balanced weights that training and the adaptation fit with. NumPy only.

Used by `rendernet evaluate` and by training's reports; labels come from the one
decision rule (decision.decide).
"""

from collections import Counter

import numpy as np

from .decision import decide


def balanced_weights(labels, classes: int, groups=None) -> np.ndarray:
    """A weight per example: every class present weighs the same and, with `groups` (e.g. each example's source),
    every group within its class too; the weights average 1. Training's heads and class weights and the
    adaptation (rendernet.adapt) all weigh their examples with this."""
    labels = np.asarray(labels, dtype=int)
    keys = list(zip(labels.tolist(), groups if groups is not None else [None] * len(labels), strict=True))
    rows_of = Counter(keys)
    groups_in_class = Counter(label for label, _ in rows_of)
    present = np.count_nonzero(np.bincount(labels, minlength=classes))
    return np.array([len(labels) / (present * groups_in_class[label] * rows_of[label, group]) for label, group in keys])


def roc_auc(labels: np.ndarray, scores: np.ndarray):
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, tied scores sharing their average rank (a
    tie counts half); None with one class. O(n log n) time, O(n) memory."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    count_positive, count_negative = int(positive.sum()), int((~positive).sum())
    if count_positive == 0 or count_negative == 0:
        return None
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, averaged over ties
    wins = ranks[positive].sum() - count_positive * (count_positive + 1) / 2
    return round(float(wins / (count_positive * count_negative)), 4)


def predict_labels(probabilities: np.ndarray, threshold) -> np.ndarray:
    """Class indices by the one decision rule (rendernet.decision.decide)."""
    indices = list(range(probabilities.shape[1]))
    return np.array([decide(row, indices, threshold).label for row in probabilities], dtype=int)


def evaluate(labels, probabilities, classes, threshold=None, sources=None) -> dict:
    """Accuracy, per-class precision/recall, confusion matrix, ROC AUC (2 classes), per-source accuracy."""
    if len(labels) == 0:
        return {"count": 0}
    predicted = predict_labels(probabilities, threshold)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(classes):
        predicted_here, actual_here = confusion[:, index].sum(), confusion[index].sum()
        per_class[name] = {
            "precision": round(float(confusion[index, index] / predicted_here), 4) if predicted_here else None,
            "recall": round(float(confusion[index, index] / actual_here), 4) if actual_here else None,
            "count": int(actual_here),
        }
    result = {
        "count": len(labels),
        "accuracy": round(float(np.mean(predicted == labels)), 4),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
    if len(classes) == 2:
        result["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    if sources is not None:
        sources = np.array(sources)
        result["per_source"] = {
            str(source): {
                "accuracy": round(float(np.mean(predicted[sources == source] == labels[sources == source])), 4),
                "count": int(np.sum(sources == source)),
            }
            for source in np.unique(sources)
        }
    return result
