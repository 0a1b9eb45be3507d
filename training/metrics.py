"""Training's own evaluation helpers: the decision threshold and the plots (NumPy + matplotlib, no TensorFlow).

The scores themselves (evaluate, roc_auc) are the core's: rendernet.metrics."""

import numpy as np


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
