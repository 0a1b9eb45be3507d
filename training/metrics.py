"""Training's own evaluation helpers: the decision threshold and the plots (NumPy + matplotlib, no TensorFlow).

The scores themselves (evaluate, roc_auc) are the core's: rendernet.metrics."""

import numpy as np


def family_balanced_accuracy(accuracy: np.ndarray, labels: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """The real-estate families first: per class, the mean of two halves, the `priority` sources' mean accuracy
    and the other sources' (a class with only one kind is that kind's mean); then the mean over the classes.
    `accuracy`: (rows, sources), e.g. one row per candidate threshold; `labels`, `priority`: one per source.
    With every source priority (or none) this is the balanced accuracy with each source weighing the same."""
    recalls = []
    for c in (0, 1):
        means = [
            accuracy[:, group & (labels == c)].mean(axis=1) for group in (priority, ~priority) if np.any(group & (labels == c))
        ]
        if means:
            recalls.append(np.mean(means, axis=0))
    return np.mean(recalls, axis=0)


def choose_threshold(scored: dict, priority_families=(), guard: float = 0.0) -> float:
    """The one threshold rule: the class-1 probability cut from scores grouped by source.

    `scored`: {source: (label, class-1 probabilities of its images, family)}, one label per source. Every score
    and 0.5 is a candidate; they are ranked by, in order:
    1. whether every source outside `priority_families` keeps `guard` accuracy (guard 0: all do);
    2. family_balanced_accuracy with `priority_families` first (the rooms and exteriors count as much as every
       other source together, each source weighing the same within its half);
    3. the balanced accuracy with every source weighing the same (family_balanced_accuracy with no priority);
    4. nearness to 0.5.
    With no priority families and guard 0, 2 and 3 are the same measure: the cut with the best balanced accuracy,
    each source weighing the same (one source per class: the plain balanced accuracy), ties to the cut nearest 0.5."""
    names = sorted(scored)
    labels = np.array([scored[name][0] for name in names])
    priority = np.array([scored[name][2] in priority_families for name in names])
    candidates = np.unique(np.concatenate([np.concatenate([scored[name][1] for name in names]), [0.5]]))
    # accuracy of every source at every candidate: an image is right when its side of the cut matches its label
    accuracy = np.array(
        [[np.mean((scored[name][1] >= threshold) == bool(scored[name][0])) for name in names] for threshold in candidates]
    )
    guarded = np.all(accuracy[:, ~priority] >= guard, axis=1)
    rank = np.lexsort(
        (
            -np.abs(candidates - 0.5),
            family_balanced_accuracy(accuracy, labels, np.ones(len(names), bool)),
            family_balanced_accuracy(accuracy, labels, priority),
            guarded,
        )
    )
    return float(candidates[rank[-1]])  # not rounded: a rounded cut can pass the score it was chosen at


def scored_by_source(examples, probabilities: np.ndarray, families=None) -> dict:
    """choose_threshold's input from examples (with .label and .source) and their probabilities (N, 2): grouped by
    source and label (a source holding both classes counts as two)."""
    scored = {}
    for example, score in zip(examples, probabilities[:, 1], strict=True):
        key = f"{example.source}/{example.label}"
        family = (families or {}).get(example.source, "other")
        scored.setdefault(key, (example.label, [], family))[1].append(score)
    return {key: (label, np.array(scores), family) for key, (label, scores, family) in scored.items()}


def selection_score(results: dict, classes, priority_families, guard: float) -> dict:
    """How to compare two trained models: their leave-one-source-out results (each source scored at the threshold
    chosen without it), by the threshold rule's own measure. `score` is family_balanced_accuracy, `plain` the
    balanced accuracy with every source weighing the same, `under_guard` the other sources under `guard`."""
    names = sorted(results)
    accuracy = np.array([[results[name]["accuracy"] for name in names]])
    labels = np.array([classes.index(results[name]["label"]) for name in names])
    priority = np.array([results[name]["family"] in priority_families for name in names])
    return {
        "score": round(float(family_balanced_accuracy(accuracy, labels, priority)[0]), 4),
        "plain": round(float(family_balanced_accuracy(accuracy, labels, np.ones(len(names), bool))[0]), 4),
        "under_guard": [
            name for name, kept, first in zip(names, accuracy[0] >= guard, priority, strict=True) if not kept and not first
        ],
    }


def family_summary(results: dict) -> dict:
    """Held-out accuracy per family and class: the mean over its sources (each source weighs the same), and the
    worst source. `results`: {source: {"accuracy", "family", "label", ...}}."""
    summary = {}
    for source, values in sorted(results.items()):
        key = f"{values['family']}/{values['label']}"
        summary.setdefault(key, []).append((values["accuracy"], source))
    return {
        key: {"mean_accuracy": round(float(np.mean([a for a, _ in items])), 4), "sources": len(items), "worst": min(items)[1]}
        for key, items in summary.items()
    }


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
        axis.text(column, row, str(value), ha="center", va="center", color="white" if value > confusion.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
