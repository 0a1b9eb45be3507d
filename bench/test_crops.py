"""Would test-time crops help? Leave-one-source-out with each held-out image scored as the mean of several views.

    python bench/test_crops.py data/full [any `rendernet train` option, e.g. --hidden 64 or --fine-tune 3]

The views, all of the image's centre square: the model's input itself (224 px of the whole square, as the page
sees it), its mirror image, and five 224 px crops (four corners and the centre) of the square at 320 px: a scale
1.4x closer to the original pixels. "centre crop alone" is one forward pass, like the input, but of a different
preprocessing (the middle half of the square's area, at the higher scale). Each fold's head is trained once, as
`rendernet train --leave-one-source-out` trains it, and scores every set of views, so the sets differ only in the
views. Prints, for each set: the selection score (rooms and exteriors first), the balanced accuracy with every
source alike, the threshold, and each priority-family source. Every extra view is one more forward pass: about
100 ms each in the page, whose budget is 150 ms per image.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]

import keras
import numpy as np
from rendernet.cache import cache_root
from rendernet.preprocess import load_image, preprocess
from rendernet_train.config import TrainConfig
from rendernet_train.data import DEFAULT_CACHE, cache_images, read_square, scan
from rendernet_train.features import PooledFeatures, in_batches
from rendernet_train.held_out import leave_one_source_out
from rendernet_train.metrics import selection_score
from rendernet_train.train import fit_settings
from rendernet_train.transfer import build_classifier

CROP_SCALE = 320  # the square the five crops are cut from
VIEW_SETS = {
    "the input alone": ("input",),
    "+ mirror": ("input", "mirror"),
    "centre crop alone": ("centre",),
    "5 crops alone": ("corners", "centre"),
    "+ 5 crops at 320 px": ("input", "corners", "centre"),
    "+ mirror + 5 crops": ("input", "mirror", "corners", "centre"),
}


def test_views(example, size: int) -> dict:
    """{view kind: uint8 images (n, size, size, 3)} of one example."""
    pixels = read_square(example.cache_file)
    square = preprocess(load_image(example.path.read_bytes(), size=CROP_SCALE), CROP_SCALE)
    far = CROP_SCALE - size
    corners = [(0, 0), (0, far), (far, 0), (far, far)]
    return {
        "input": pixels[None],
        "mirror": pixels[None, :, ::-1],
        "corners": np.stack([square[top : top + size, left : left + size] for top, left in corners]),
        "centre": square[None, far // 2 : far // 2 + size, far // 2 : far // 2 + size],
    }


class WithTestViews(PooledFeatures):
    """PooledFeatures whose probabilities are the mean over a chosen set of views; each fold's fit is kept, so every
    set is scored by the same heads."""

    def __init__(self, model, examples, train_examples, config):
        super().__init__(model, examples, train_examples, config.views, config.seed, True, None, config.features, config.fine_tune)
        extractor = keras.Model(model.input, model.get_layer(self.after or "pool").output)
        self.views = {}
        bar = keras.utils.Progbar(len(examples), unit_name="image")
        for example in examples:
            views = test_views(example, model.input_shape[1])
            outputs = np.asarray(extractor(np.concatenate(list(views.values())).astype(np.float32)))
            ends = np.cumsum([len(pixels) for pixels in views.values()])
            self.views[id(example)] = dict(zip(views, np.split(outputs, ends[:-1]), strict=True))
            bar.add(1)
        self.fitted, self.view_set = {}, VIEW_SETS["the input alone"]

    def fit(self, train_examples, validation_examples, settings):
        key = tuple(sorted(id(example) for example in train_examples))
        if key not in self.fitted:
            self.fitted[key] = super().fit(train_examples, validation_examples, settings)
        return self.fitted[key]

    def probabilities(self, part, examples) -> np.ndarray:
        """The mean of each example's views' probabilities (every view weighs the same)."""
        if not examples:
            return np.zeros((0, part.output_shape[-1]))
        inputs = np.concatenate([self.views[id(example)][kind] for example in examples for kind in self.view_set])
        probabilities = in_batches(part, inputs)
        return probabilities.reshape(len(examples), -1, probabilities.shape[-1]).mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    TrainConfig.add_arguments(parser)
    args = parser.parse_args()
    config = TrainConfig.from_args(args).resolved()
    dataset = scan(args.data)
    cache_images(dataset, DEFAULT_CACHE, config.input_size, crop_sources=True)
    splits = {name: dataset.split(name) for name in ("train", "validation", "test")}
    model = build_classifier(config.input_size, len(dataset.classes), cache_root(), config.features, config.hidden, config.dropout)
    features = WithTestViews(model, dataset.examples, splits["train"], config)
    settings = fit_settings(replace(config, verbose=0))
    rows = []
    for name, view_set in VIEW_SETS.items():
        features.view_set = view_set
        results, threshold = leave_one_source_out(
            dataset, splits, settings, features, config.priority_families, config.guard_accuracy
        )
        rows.append(
            (name, selection_score(results, dataset.classes, config.priority_families, config.guard_accuracy), threshold, results)
        )
    print(
        f"\n{args.data}: {len(dataset.examples)} images; "
        + ", ".join(
            f"{key} {value}"
            for key, value in replace(config, verbose=1).as_dict().items()
            if key in ("features", "hidden", "fine_tune", "views")
        )
    )
    priority = sorted(source for source, values in rows[0][3].items() if values["family"] in config.priority_families)
    print(f"{'views':22s} {'score':>6s} {'plain':>6s} {'cut':>6s}  " + "  ".join(priority) + "  under the guard")
    for name, selection, threshold, results in rows:
        print(
            f"{name:22s} {selection['score']:6.3f} {selection['plain']:6.3f} {threshold:6.3f}  "
            + "  ".join(f"{results[source]['accuracy']:{len(source)}.3f}" for source in priority)
            + "  "
            + ", ".join(f"{source} {results[source]['accuracy']:.2f}" for source in selection["under_guard"])
        )


if __name__ == "__main__":
    main()
