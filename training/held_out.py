"""Sources a model never saw: a source's report, and leave-one-source-out (a model, or a head, trained without each
source in turn), whose scores choose the decision threshold."""

import numpy as np
from rendernet.metrics import predict_labels, roc_auc

from .metrics import choose_threshold
from .model import fit, predict


def unseen_source_report(probabilities: np.ndarray, label: int, other_probabilities: np.ndarray, threshold) -> dict:
    """How a model did on one source it never saw: accuracy by the one decision rule, and the ROC AUC of that
    source against images of the other class(es) it never saw (P(last class) ranks them; two classes only)."""
    accuracy = float(np.mean(predict_labels(probabilities, threshold) == label))
    labels = np.r_[np.full(len(probabilities), label), np.full(len(other_probabilities), 1 - label)]
    two_classes = probabilities.shape[1] == 2
    return {
        "accuracy": round(accuracy, 4),
        "count": len(probabilities),
        "roc_auc": roc_auc(labels, np.r_[probabilities[:, -1], other_probabilities[:, -1]]) if two_classes else None,
    }


def leave_one_source_out(dataset, splits, settings, features=None, priority_families=(), guard_accuracy=0.8) -> tuple:
    """For each source: train without it, score every image of that source (all splits), and rank them
    against the test images of the other class. Returns ({source: report}, threshold).

    The decision threshold is chosen by how it does on sources the model never saw (each image scored by the
    model trained without its source): metrics.choose_threshold, the `priority_families` weighing as much
    as every other source together, and every other source kept at `guard_accuracy` where a cut allows it; within
    those halves each source weighs the same, so a large source cannot outvote the small ones. Each
    source's accuracy is reported at the threshold chosen the same way from the other sources' scores, so
    no source helps choose the threshold it is scored with. With `features` (the pretrained model's pooled
    features) only the head is retrained per source."""
    scored = {}
    sources = sorted({example.source for example in dataset.examples})
    for number, source in enumerate(sources, start=1):
        held_out = [example for example in dataset.examples if example.source == source]
        train_examples = [example for example in splits["train"] if example.source != source]
        validation_examples = [example for example in splits["validation"] if example.source != source]
        label = held_out[0].label
        others = [example for example in splits["test"] if example.label != label]
        print(f"leave-one-source-out [{number}/{len(sources)}]: {source} ({len(held_out)} images)", flush=True)
        if features is not None:
            head, _ = features.fit(train_examples, validation_examples, {**settings, "verbose": 0})
            probabilities = [features.probabilities(head, group) for group in (held_out, others)]
        else:
            model, _ = fit(dataset.classes, train_examples, validation_examples, **{**settings, "verbose": 0})
            probabilities = [predict(model, group, len(dataset.classes), settings["batch_size"]) for group in (held_out, others)]
        scored[source] = (label, *probabilities)

    def threshold_from(chosen):
        """The threshold from these sources' held-out scores (metrics.choose_threshold, the one rule)."""
        if len(dataset.classes) != 2:
            return None
        return choose_threshold(
            {name: (scored[name][0], scored[name][1][:, 1], families[name]) for name in chosen}, priority_families, guard_accuracy
        )

    families = {example.source: example.family for example in dataset.examples}
    results = {}
    for source, (label, held_out, others) in scored.items():
        threshold = threshold_from([name for name in scored if name != source])
        results[source] = {
            **unseen_source_report(held_out, label, others, threshold),
            "threshold": threshold,
            "family": families[source],
            "label": dataset.classes[label],
        }
    return results, threshold_from(list(scored))
