"""The rendernet weights format (version 2; version 1 still loads) and the model that runs it.

A model folder holds `model.json`, the manifest, and `weights.npz`, arrays keyed
"<layer name>/<weight name>". `training/export.py` writes both; `load_model`
reads them, checks everything it can, folds BatchNormalization into the
convolution before it, and returns a Model whose `forward` runs with NumPy alone.

model.json, field by field (R: required; the loader reads it):

| field | type | meaning |
|---|---|---|
| format (R) | "rendernet-numpy" | the format's name |
| format_version (R) | 1 or 2 | 2 adds per-array dtypes (below); 1: every array float32 |
| name | str | the Keras model's name |
| input (R) | {"shape": [H, W, 3], "dtype": "uint8", "range": [0, 255]} | one image as `preprocess(file, H)` makes it |
| preprocessing | str | the preprocessing rule, in words |
| classes (R) | [str, ...] | class names, in output order |
| threshold | float or null | 2 classes: classes[1] when its probability >= threshold |
| layers (R) | [layer, ...] | in topological order; the last one (or `output`) gives the probabilities |
| layer.name, layer.type (R) | str | Keras layer name and class (see layers.LAYER_TYPES) |
| layer.config | dict | the Keras config options the forward pass reads (padding, strides, activation, ...) |
| layer.inputs (R) | [str, ...] | names of the layers feeding it; "input" is the image |
| layer.weights | {weight: spec} | v1: spec = shape; v2: spec = {"shape": [...], "dtype": "float32", "float16" or "int8"} |
| layer.output_shape, layer.macs | list, int | informative: output shape without the batch, multiply-adds per image |
| output | str | the layer whose output is the result (default: the last) |
| params, macs | int | parameters and multiply-adds per image |
| weights (R) | {"file", "sha256", "bytes"} | the weights file and its sha256, checked before reading it |
| metrics, credits | dict, list | informative: headline test metrics and per-source scores; credits for pretrained weights |

weights.npz: for every layer weight, "<layer>/<weight>" holds the array in its
dtype. An int8 array also has "<layer>/<weight>:scale", float32 scales shaped
to broadcast against it (one per output channel); its values are q * scale
(see weights.py). float16 arrays are widened to float32 on load.
"""

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelError
from .layers import FOLDABLE, LAYER_TYPES, BatchNormalization
from .weights import decode

FORMAT_NAME = "rendernet-numpy"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
INPUT_NAME = "input"
CHUNK = 1  # images per pass: larger passes cost more per image (their intermediates spill out of the CPU caches)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Model:
    """A loaded model: `forward(batch)` -> probabilities, `classify(image_array)` -> label + probabilities."""

    def __init__(self, manifest: dict, weights: dict):
        self.manifest = manifest
        self.classes = list(manifest["classes"])
        self.threshold = manifest.get("threshold")
        self.input_shape = tuple(manifest["input"]["shape"])
        self.input_size = self.input_shape[0]  # what preprocess(file, size) must make
        self.layers = []  # (layer, input names)
        for spec in manifest["layers"]:
            layer_type = LAYER_TYPES.get(spec["type"])
            if layer_type is None:
                raise ModelError(
                    f"layer {spec['name']!r} has type {spec['type']!r}, which the NumPy forward pass does "
                    f"not implement (supported: {', '.join(sorted(LAYER_TYPES))})"
                )
            layer_weights = {}
            for key, stored in spec.get("weights", {}).items():
                shape, dtype = (stored["shape"], stored["dtype"]) if isinstance(stored, dict) else (stored, "float32")
                layer_weights[key] = decode(weights, f"{spec['name']}/{key}", dtype)
                if list(layer_weights[key].shape) != list(shape):
                    raise ModelError(
                        f"weights.npz: {spec['name']}/{key} has shape {list(layer_weights[key].shape)}, "
                        f"model.json expects {shape}"
                    )
            self.layers.append((layer_type(spec["name"], spec.get("config", {}), layer_weights), spec["inputs"]))
        self.output_name = manifest.get("output", self.layers[-1][0].name)
        self._fold_batch_norms()

    def _fold_batch_norms(self) -> None:
        """Fold each BatchNormalization into a linear conv/dense that feeds only it."""
        consumers = {}
        for _, inputs in self.layers:
            for name in inputs:
                consumers[name] = consumers.get(name, 0) + 1
        by_name = {layer.name: layer for layer, _ in self.layers}
        kept, renamed = [], {}
        for layer, inputs in self.layers:
            inputs = [renamed.get(name, name) for name in inputs]
            source = by_name.get(inputs[0]) if len(inputs) == 1 else None
            if (
                isinstance(layer, BatchNormalization)
                and isinstance(source, FOLDABLE)
                and consumers.get(source.name) == 1
                and source.config.get("activation", "linear") == "linear"
            ):
                source.scale_outputs(layer.scale, layer.shift)
                renamed[layer.name] = source.name
                if self.output_name == layer.name:
                    self.output_name = source.name
                continue
            kept.append((layer, inputs))
        self.layers = kept

    def forward(self, batch: np.ndarray, return_features: bool = False):
        """Run the network on (N, H, W, 3) uint8 or float32 pixels in 0..255.

        Returns the output probabilities (N, classes), and with `return_features`
        also the last spatial feature map (N, h, w, channels), for heatmaps.
        Runs CHUNK images at a time: natively, 16 sample images in one pass took
        3.3 ms per image, one at a time 0.65 ms.
        """
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[1:] != self.input_shape:
            raise ModelError(f"input has shape {batch.shape[1:]}, the model expects {self.input_shape}")
        parts = [self._forward_chunk(batch[start : start + CHUNK]) for start in range(0, len(batch), CHUNK)]
        probabilities = np.concatenate([part[0] for part in parts]) if parts else np.zeros((0, len(self.classes)))
        if not return_features:
            return probabilities
        return probabilities, np.concatenate([part[1] for part in parts]) if parts else None

    def _forward_chunk(self, batch: np.ndarray, spent: dict | None = None):
        """The output and last spatial feature map of one chunk; with `spent`, add each layer type's
        milliseconds to it (for the benchmarks)."""
        values = {INPUT_NAME: batch.astype(np.float32)}
        features = None
        for layer, inputs in self.layers:
            started = time.perf_counter() if spent is not None else 0.0
            output = layer(*(values[name] for name in inputs))
            if spent is not None:
                kind = type(layer).__name__
                spent[kind] = spent.get(kind, 0.0) + (time.perf_counter() - started) * 1000
            values[layer.name] = output
            if output.ndim == 4:
                features = output
        return values[self.output_name], features

    def profile(self, batch: np.ndarray, repeats: int = 5) -> dict:
        """Median milliseconds spent in each layer type over `repeats` forward passes of `batch`."""
        runs = [{} for _ in range(repeats)]
        for spent in runs:
            self._forward_chunk(np.asarray(batch), spent)
        return {kind: round(float(np.median([run[kind] for run in runs])), 2)
                for kind in sorted(runs[0], key=lambda kind: -runs[0][kind])}

    def label(self, probabilities: np.ndarray) -> str:
        """The predicted class: with 2 classes, classes[1] when its probability >= the threshold."""
        if len(self.classes) == 2 and self.threshold is not None:
            return self.classes[1] if probabilities[1] >= self.threshold else self.classes[0]
        return self.classes[int(np.argmax(probabilities))]

    def classify(self, pixels: np.ndarray) -> dict:
        """One preprocessed image -> {"label", "probabilities": {class: p}}."""
        probabilities = self.forward(pixels[None])[0]
        return {
            "label": self.label(probabilities),
            "probabilities": {name: float(p) for name, p in zip(self.classes, probabilities, strict=False)},
        }


def read_manifest(manifest_bytes: bytes, where: str = MANIFEST_FILE) -> dict:
    """Parse and check the manifest's format name and version."""
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{where}: expected format {FORMAT_NAME!r}, found {found!r}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ModelError(
            f"{where}: format version {manifest.get('format_version')!r} is not supported "
            f"(this rendernet reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    for key in ("classes", "layers", "input", "weights"):
        if key not in manifest:
            raise ModelError(f"{where}: required key {key!r} is missing")
    return manifest


def read_weights(weights_bytes: bytes, manifest: dict, where: str = WEIGHTS_FILE) -> dict:
    """Check the weights file's sha256 against the manifest, then read its arrays."""
    expected = manifest["weights"].get("sha256")
    found = sha256_bytes(weights_bytes)
    if found != expected:
        raise ModelError(
            f"{where} does not match model.json: sha256 expected {expected}, found {found} "
            f"({len(weights_bytes)} bytes); the file is altered, truncated or from another model"
        )
    try:
        with np.load(io.BytesIO(weights_bytes), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ModelError(f"{where} cannot be read as .npz: {error}") from None


def model_from_bytes(manifest_bytes: bytes, weights_bytes: bytes) -> Model:
    """Build a Model from the two files' contents (the browser fetches them as bytes)."""
    manifest = read_manifest(manifest_bytes)
    weights = read_weights(weights_bytes, manifest)
    try:
        return Model(manifest, weights)
    except KeyError as error:
        raise ModelError(f"model.json and weights.npz disagree: missing {error}") from None


def load_model(folder) -> Model:
    """Load a model folder holding model.json and weights.npz."""
    folder = Path(folder)
    files = {}
    for name in (MANIFEST_FILE, WEIGHTS_FILE):
        try:
            files[name] = (folder / name).read_bytes()
        except OSError as error:
            raise ModelError(f"cannot read {folder / name}: {error.strerror or error}") from None
    return model_from_bytes(files[MANIFEST_FILE], files[WEIGHTS_FILE])
