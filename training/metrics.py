"""Evaluation numbers and plots for a trained model (NumPy + matplotlib, no TensorFlow)."""

import numpy as np
from rendernet.decision import decide


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray, weights=None) -> float:
    """The class-1 probability cut that maximises balanced accuracy (each class's recall weighted by
    `weights`, e.g. so that every source counts the same)."""
    scores = probabilities[:, 1]
    weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    best, best_threshold = -1.0, 0.5
    for threshold in np.unique(np.concatenate([scores, [0.5]])):
        predicted = scores >= threshold
        recalls = [np.average(predicted[labels == c] == bool(c), weights=weights[labels == c])
                   for c in (0, 1) if np.any(labels == c)]
        balanced = float(np.mean(recalls))
        if balanced > best or (balanced == best and abs(threshold - 0.5) < abs(best_threshold - 0.5)):
            best, best_threshold = balanced, float(threshold)
    return round(best_threshold, 6)


def roc_auc(labels: np.ndarray, scores: np.ndarray):
    """Area under the ROC curve by the rank-sum formula (ties count half); None with one class."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    greater = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return round(float(greater / (len(positives) * len(negatives))), 4)


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
    result = {"count": len(labels), "accuracy": round(float(np.mean(predicted == labels)), 4),
              "per_class": per_class, "confusion": confusion.tolist()}
    if len(classes) == 2:
        result["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    if sources is not None:
        sources = np.array(sources)
        result["per_source"] = {
            str(source): {"accuracy": round(float(np.mean(predicted[sources == source] == labels[sources == source])), 4),
                          "count": int(np.sum(sources == source))}
            for source in np.unique(sources)
        }
    return result


def plot_history(history: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key in zip(axes, ("loss", "accuracy"), strict=False):
        axis.plot(history[key], label="train")
        axis.plot(history[f"val_{key}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(confusion, classes, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    figure, axis = plt.subplots(figsize=(3.5 + 0.4 * len(classes), 3 + 0.4 * len(classes)))
    axis.imshow(confusion, cmap="Blues")
    for (row, column), value in np.ndenumerate(confusion):
        axis.text(column, row, str(value), ha="center", va="center",
                  color="white" if value > confusion.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
