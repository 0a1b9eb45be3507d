"""The decision threshold from held-out scores: the real-estate families first, every other source a guard."""

import numpy as np
from rendernet_train.metrics import choose_guarded_threshold, choose_threshold, family_summary


def spread(low, high, count=20):
    return np.linspace(low, high, count)


# Real rooms score high (the model calls many of them renders), so the rooms want a high cut; a render source
# of another family scores lower and wants a low one.
SCORED = {
    "interiors": (0, spread(0.30, 0.70), "rooms"),
    "rendered-rooms": (1, spread(0.75, 0.95), "rooms"),
    "wallpapers": (0, spread(0.00, 0.30), "other"),
    "povray": (1, spread(0.50, 0.90), "other"),
}
CANDIDATES = np.unique(np.concatenate([scores for _, scores, _ in SCORED.values()]))


def accuracy(source, threshold):
    label, scores, _ = SCORED[source]
    return np.mean((scores >= threshold) == bool(label))


def rooms(threshold):
    return (accuracy("interiors", threshold) + accuracy("rendered-rooms", threshold)) / 2


def below_guard(threshold, guard):
    return sum(accuracy(name, threshold) < guard for name in ("wallpapers", "povray"))


def test_without_priority_sources_it_is_the_balanced_accuracy_over_every_source():
    labels = np.concatenate([np.full(20, label) for label, _, _ in SCORED.values()])
    scores = np.concatenate([scores for _, scores, _ in SCORED.values()])
    plain = choose_threshold(labels, np.c_[1 - scores, scores], np.full(len(scores), 1 / 20))
    assert choose_guarded_threshold(SCORED, (), 0.8) == plain
    assert choose_guarded_threshold(SCORED, ("exteriors",), 0.8) == plain  # no exterior source: the same rule


def test_the_priority_families_come_first_while_every_guard_source_keeps_its_accuracy():
    unguarded = choose_guarded_threshold(SCORED, ("rooms",), 0.0)
    guarded = choose_guarded_threshold(SCORED, ("rooms",), 0.8)
    assert rooms(unguarded) == max(rooms(t) for t in CANDIDATES) and accuracy("povray", unguarded) < 0.8
    assert below_guard(guarded, 0.8) == 0
    assert rooms(guarded) == max(rooms(t) for t in CANDIDATES if below_guard(t, 0.8) == 0) < rooms(unguarded)


def test_when_no_cut_keeps_every_guard_the_fewest_fall_below_it():
    strict = choose_guarded_threshold(SCORED, ("rooms",), 0.99)
    fewest = min(below_guard(t, 0.99) for t in CANDIDATES)
    assert below_guard(strict, 0.99) == fewest
    assert rooms(strict) == max(rooms(t) for t in CANDIDATES if below_guard(t, 0.99) == fewest)


def test_family_summary_averages_sources_and_names_the_worst():
    results = {"interiors": {"accuracy": 0.6, "family": "rooms", "label": "real"},
               "gcompris-buildings": {"accuracy": 0.9, "family": "exteriors", "label": "real"},
               "blender-exteriors": {"accuracy": 0.8, "family": "exteriors", "label": "render"},
               "blender-exteriors-2": {"accuracy": 0.6, "family": "exteriors", "label": "render"}}
    assert family_summary(results) == {
        "rooms/real": {"mean_accuracy": 0.6, "sources": 1, "worst": "interiors"},
        "exteriors/real": {"mean_accuracy": 0.9, "sources": 1, "worst": "gcompris-buildings"},
        "exteriors/render": {"mean_accuracy": 0.7, "sources": 2, "worst": "blender-exteriors-2"}}
