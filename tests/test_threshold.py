"""The decision threshold from held-out scores: the real-estate families first, every other source a guard."""

import numpy as np
from rendernet_train.metrics import choose_threshold, family_summary, scored_by_source, selection_score


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


def test_without_priority_or_guard_it_is_the_best_balanced_accuracy_over_sources_nearest_one_half():
    """Pinned by brute force: every source weighing the same, per class, then the classes; ties to 0.5."""
    rng = np.random.default_rng(0)
    for _ in range(20):  # random sources of random sizes
        scored = {
            f"s{index}": (index % 2, rng.beta(2 + index % 2 * 2, 3, rng.integers(3, 30)), "other")
            for index in range(rng.integers(2, 7))
        }

        def balanced(t, scored=scored):
            per_class = [
                np.mean([np.mean((scores >= t) == bool(label)) for label, scores, _ in scored.values() if label == c])
                for c in (0, 1)
            ]
            return np.mean(per_class)

        cuts = np.unique(np.concatenate([scores for _, scores, _ in scored.values()] + [[0.5]]))
        best = max(balanced(t) for t in cuts)
        expected = min((t for t in cuts if balanced(t) == best), key=lambda t: abs(t - 0.5))
        assert choose_threshold(scored) == expected
        assert choose_threshold(scored, ("exteriors",), 0.0) == expected  # no exterior source: the same rule


def test_the_validation_split_is_scored_by_source_and_label():
    class Example:
        def __init__(self, source, label):
            self.source, self.label = source, label

    examples = [Example("a", 0), Example("a", 0), Example("b", 1), Example("a", 1)]
    scored = scored_by_source(examples, np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]))
    assert sorted(scored) == ["a/0", "a/1", "b/1"] and list(scored["a/0"][1]) == [0.1, 0.2]
    assert choose_threshold(scored) == 0.5  # 0.2 < cut <= 0.6 separate them all: the nearest 0.5 wins


def test_the_priority_families_weigh_as_much_as_every_other_source_together():
    plain = choose_threshold(SCORED, (), 0.0)
    first = choose_threshold(SCORED, ("rooms",), 0.0)
    assert rooms(first) > rooms(plain) and accuracy("interiors", first) > accuracy("interiors", plain)
    assert accuracy("povray", first) < 0.8  # what the rooms alone would cost another family


def test_every_other_source_keeps_the_guard_accuracy_where_a_cut_allows_it():
    unguarded = choose_threshold(SCORED, ("rooms",), 0.0)
    guarded = choose_threshold(SCORED, ("rooms",), 0.8)
    assert all(accuracy(name, guarded) >= 0.8 for name in GUARDS)
    assert rooms(unguarded) > rooms(guarded) > rooms(choose_threshold(SCORED, (), 0.0))

    def score(t):  # the rule's balanced accuracy: per class, the rooms' half and the other sources' half
        wallpapers = np.mean([accuracy(name, t) for name in GUARDS[:3]])
        return ((accuracy("interiors", t) + wallpapers) / 2 + (accuracy("rendered-rooms", t) + accuracy("povray", t)) / 2) / 2

    cuts = np.unique(np.concatenate([scores for _, scores, _ in SCORED.values()]))
    assert score(guarded) == max(score(t) for t in cuts if all(accuracy(name, t) >= 0.8 for name in GUARDS))


def test_a_guard_no_cut_can_keep_changes_nothing():
    """A real source that wants a cut above 0.9 and POV-Ray that wants one under 0.55 cannot both keep 0.8."""
    conflicting = {**SCORED, "photos-high": (0, spread(0.60, 0.98), "other")}
    assert choose_threshold(conflicting, ("rooms",), 0.8) == choose_threshold(conflicting, ("rooms",), 0.0)


def test_family_summary_averages_sources_and_names_the_worst():
    results = {
        "interiors": {"accuracy": 0.6, "family": "rooms", "label": "real"},
        "gcompris-buildings": {"accuracy": 0.9, "family": "exteriors", "label": "real"},
        "blender-exteriors": {"accuracy": 0.8, "family": "exteriors", "label": "render"},
        "blender-exteriors-2": {"accuracy": 0.6, "family": "exteriors", "label": "render"},
    }
    assert family_summary(results) == {
        "rooms/real": {"mean_accuracy": 0.6, "sources": 1, "worst": "interiors"},
        "exteriors/real": {"mean_accuracy": 0.9, "sources": 1, "worst": "gcompris-buildings"},
        "exteriors/render": {"mean_accuracy": 0.7, "sources": 2, "worst": "blender-exteriors-2"},
    }


def test_the_selection_score_is_the_threshold_rules_measure_on_the_left_out_sources():
    results = {
        "interiors": {"accuracy": 0.6, "family": "rooms", "label": "real"},
        "rendered-rooms": {"accuracy": 1.0, "family": "rooms", "label": "render"},
        "wallpapers": {"accuracy": 0.9, "family": "other", "label": "real"},
        "photos": {"accuracy": 0.7, "family": "other", "label": "real"},
        "povray": {"accuracy": 0.5, "family": "other", "label": "render"},
    }
    # real: (rooms 0.6 + others (0.9 + 0.7) / 2) / 2 = 0.7; render: (1.0 + 0.5) / 2 = 0.75
    assert selection_score(results, ["real", "render"], ("rooms", "exteriors"), 0.8) == {
        "score": 0.725,
        "plain": round(((0.6 + 0.9 + 0.7) / 3 + 0.75) / 2, 4),
        "under_guard": ["photos", "povray"],
    }
