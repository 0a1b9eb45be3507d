"""The decision threshold from held-out scores: the real-estate families first, every other source a guard."""

import numpy as np
from rendernet_train.metrics import choose_guarded_threshold, choose_threshold, family_summary, selection_score


def spread(low, high, count=20):
    return np.linspace(low, high, count)


# Real rooms score high (the model calls many of them renders), so the rooms want a high cut; three wallpaper
# sources want nothing in particular, and a render source of another family scores lower and wants a low cut.
SCORED = {
    "interiors": (0, spread(0.30, 0.70), "rooms"),
    "rendered-rooms": (1, spread(0.75, 0.95), "rooms"),
    "wallpapers-a": (0, spread(0.00, 0.30), "other"),
    "wallpapers-b": (0, spread(0.05, 0.35), "other"),
    "wallpapers-c": (0, spread(0.10, 0.40), "other"),
    "povray": (1, spread(0.45, 0.95), "other"),
}
GUARDS = ("wallpapers-a", "wallpapers-b", "wallpapers-c", "povray")


def accuracy(source, threshold):
    label, scores, _ = SCORED[source]
    return np.mean((scores >= threshold) == bool(label))


def rooms(threshold):
    return (accuracy("interiors", threshold) + accuracy("rendered-rooms", threshold)) / 2


def test_without_priority_sources_it_is_the_balanced_accuracy_over_every_source():
    labels = np.concatenate([np.full(20, label) for label, _, _ in SCORED.values()])
    scores = np.concatenate([scores for _, scores, _ in SCORED.values()])
    plain = choose_threshold(labels, np.c_[1 - scores, scores], np.full(len(scores), 1 / 20))
    assert choose_guarded_threshold(SCORED, (), 0.8) == plain
    assert choose_guarded_threshold(SCORED, ("exteriors",), 0.8) == plain  # no exterior source: the same rule


def test_the_priority_families_weigh_as_much_as_every_other_source_together():
    plain = choose_guarded_threshold(SCORED, (), 0.0)
    first = choose_guarded_threshold(SCORED, ("rooms",), 0.0)
    assert rooms(first) > rooms(plain) and accuracy("interiors", first) > accuracy("interiors", plain)
    assert accuracy("povray", first) < 0.8  # what the rooms alone would cost another family


def test_every_other_source_keeps_the_guard_accuracy_where_a_cut_allows_it():
    unguarded = choose_guarded_threshold(SCORED, ("rooms",), 0.0)
    guarded = choose_guarded_threshold(SCORED, ("rooms",), 0.8)
    assert all(accuracy(name, guarded) >= 0.8 for name in GUARDS)
    assert rooms(unguarded) > rooms(guarded) > rooms(choose_guarded_threshold(SCORED, (), 0.0))

    def score(t):  # the rule's balanced accuracy: per class, the rooms' half and the other sources' half
        wallpapers = np.mean([accuracy(name, t) for name in GUARDS[:3]])
        return ((accuracy("interiors", t) + wallpapers) / 2 + (accuracy("rendered-rooms", t) + accuracy("povray", t)) / 2) / 2

    cuts = np.unique(np.concatenate([scores for _, scores, _ in SCORED.values()]))
    assert score(guarded) == max(score(t) for t in cuts if all(accuracy(name, t) >= 0.8 for name in GUARDS))


def test_a_guard_no_cut_can_keep_changes_nothing():
    """A real source that wants a cut above 0.9 and POV-Ray that wants one under 0.55 cannot both keep 0.8."""
    conflicting = {**SCORED, "photos-high": (0, spread(0.60, 0.98), "other")}
    assert choose_guarded_threshold(conflicting, ("rooms",), 0.8) == choose_guarded_threshold(conflicting, ("rooms",), 0.0)


def test_family_summary_averages_sources_and_names_the_worst():
    results = {"interiors": {"accuracy": 0.6, "family": "rooms", "label": "real"},
               "gcompris-buildings": {"accuracy": 0.9, "family": "exteriors", "label": "real"},
               "blender-exteriors": {"accuracy": 0.8, "family": "exteriors", "label": "render"},
               "blender-exteriors-2": {"accuracy": 0.6, "family": "exteriors", "label": "render"}}
    assert family_summary(results) == {
        "rooms/real": {"mean_accuracy": 0.6, "sources": 1, "worst": "interiors"},
        "exteriors/real": {"mean_accuracy": 0.9, "sources": 1, "worst": "gcompris-buildings"},
        "exteriors/render": {"mean_accuracy": 0.7, "sources": 2, "worst": "blender-exteriors-2"}}


def test_the_selection_score_is_the_threshold_rules_measure_on_the_left_out_sources():
    results = {"interiors": {"accuracy": 0.6, "family": "rooms", "label": "real"},
               "rendered-rooms": {"accuracy": 1.0, "family": "rooms", "label": "render"},
               "wallpapers": {"accuracy": 0.9, "family": "other", "label": "real"},
               "photos": {"accuracy": 0.7, "family": "other", "label": "real"},
               "povray": {"accuracy": 0.5, "family": "other", "label": "render"}}
    # real: (rooms 0.6 + others (0.9 + 0.7) / 2) / 2 = 0.7; render: (1.0 + 0.5) / 2 = 0.75
    assert selection_score(results, ["real", "render"], ("rooms", "exteriors"), 0.8) == {
        "score": 0.725, "plain": round(((0.6 + 0.9 + 0.7) / 3 + 0.75) / 2, 4), "under_guard": ["photos", "povray"]}
