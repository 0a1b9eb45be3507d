"""How well can any linear head on this backbone's features tell the user's real rooms from rendered ones?

    RENDERNET_BPY_PYTHON=~/.venvs/bpy/bin/python python bench/feature_ceiling.py

The domain of bench/adapt.py (the 22 reserved interior photographs, 60 Blender rooms of unseen seeds) through the
shipped model's frozen EfficientNet-Lite0 (ImageNet weights), read at several layers: the shipped cut
(block11_add, 112 channels) pooled by mean, by mean + standard deviation + maximum, and the deeper layers
(block15_add, block16_project, head), mean-pooled. For each, leave one out: a head fitted from zero on the 81
other images (rendernet.adapt.adapt_head, as bench/adapt.py fits its stand-in heads: classes balanced, penalty
ANCHOR times each feature's typical value, no reference set) scores the one left out. That is every other image
of the domain corrected, with no prior: an upper bound on what corrections can reach (docs/adaptation.md). Needs
the training extra (Keras).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app"), str(ROOT / "bench")]

import keras
from adapt import held_out_rooms
from independent import gather_interiors_and_icons
from rendernet import load_model, preprocess
from rendernet.adapt import adapt_head
from rendernet_train.cli import DEFAULT_CACHE
from rendernet_train.efficientnet import backbone_layers, load_pretrained

LAYERS = ("block11_add", "block15_add", "block16_project", "head")
ANCHOR = 10.0  # the fit's penalty (bench/adapt.py's stand-ins, fitted to tell every source apart, use 100)


def pooled(model, paths, size, crop) -> list:
    """Per layer: (images, channels) means; for the first also its (images, 3 * channels) mean, std, max."""
    maps = model.predict(np.stack([preprocess(path, size, crop) for path in paths]), batch_size=8, verbose=0)
    first = maps[0]
    return [first.mean((1, 2)), np.hstack([first.mean((1, 2)), first.std((1, 2)), first.max((1, 2))])] + [
        values.mean((1, 2)) for values in maps[1:]
    ]


def leave_one_out(real, render) -> tuple:
    """Recall of each class, each image scored by a head fitted from zero on all the others."""
    features, labels = np.vstack([real, render]), np.repeat([0, 1], [len(real), len(render)])
    zero = (np.zeros((2, features.shape[1]), np.float32), np.zeros(2, np.float32))
    right = []
    for index in range(len(labels)):
        others = np.arange(len(labels)) != index
        kernel_t, bias = adapt_head(*zero, features[others], labels[others], ANCHOR)[:2]
        logits = features[index] @ kernel_t.T + bias
        right.append(int(logits[1] > logits[0]) == labels[index])
    right = np.array(right)
    return float(right[labels == 0].mean()), float(right[labels == 1].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--rooms", type=int, default=60)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args()
    shipped = load_model(args.model)
    size = shipped.input_size
    inputs = keras.Input((size, size, 3))
    backbone = keras.Model(inputs, backbone_layers(inputs))
    load_pretrained(backbone, Path(args.cache))
    model = keras.Model(inputs, [backbone.get_layer(name).output for name in LAYERS])

    reserved = Path(tempfile.mkdtemp(prefix="rendernet-reserved-"))
    gather_interiors_and_icons(reserved, Path(args.cache))
    real = sorted((reserved / "real").iterdir())
    rooms = held_out_rooms(args.rooms, Path(args.cache))
    names = [f"{LAYERS[0]} mean", f"{LAYERS[0]} mean+std+max"] + [f"{name} mean" for name in LAYERS[1:]]
    columns = zip(*(pooled(model, paths, size, shipped.crop) for paths in (real, rooms)), strict=True)
    print(f"{len(real)} real rooms, {len(rooms)} rendered rooms; leave one out, anchor {ANCHOR:g}")
    print(f"{'features':28s} {'width':>5}  {'real rooms':>10}  {'rendered rooms':>14}")
    report = {}
    for name, (real_features, room_features) in zip(names, columns, strict=True):
        recall = leave_one_out(real_features, room_features)
        report[name] = {"width": real_features.shape[1], "real": recall[0], "render": recall[1]}
        print(f"{name:28s} {real_features.shape[1]:5d}  {recall[0]:10.3f}  {recall[1]:14.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
