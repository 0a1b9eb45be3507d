"""The rendernet weights format (version 1) and the model that runs it.

A model folder holds `model.json`, the manifest, and `weights.npz`, arrays keyed
"<layer name>/<weight name>". The manifest names the format and its version, the
input, the preprocessing rule, the class names and decision threshold, the
layers in topological order (type, config, inputs, weight shapes, output shape),
the parameter and multiply-add counts, and the sha256 of the weights file.
`training/export.py` writes it; `load_model` reads it, checks everything it can,
folds BatchNormalization into the convolution before it, and returns a Model
whose `predict` runs the forward pass with NumPy alone.
"""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelError
from .layers import FOLDABLE, LAYER_TYPES, BatchNormalization

FORMAT_NAME = "rendernet-numpy"
FORMAT_VERSION = 1
MANIFEST_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
INPUT_NAME = "input"
CHUNK = 1  # images per pass: larger passes cost more per image (their intermediates spill out of the CPU caches)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Model:
    """A loaded model: `predict(batch)` -> probabilities, `classify(image_array)` -> label + probabilities."""

    def __init__(self, manifest: dict, weights: dict):
        self.manifest = manifest
        self.classes = list(manifest["classes"])
        self.threshold = manifest.get("threshold")
        self.input_shape = tuple(manifest["input"]["shape"])
        self.layers = []  # (layer, input names)
        for spec in manifest["layers"]:
            layer_type = LAYER_TYPES.get(spec["type"])
            if layer_type is None:
                raise ModelError(
                    f"layer {spec['name']!r} has type {spec['type']!r}, which the NumPy forward pass does "
                    f"not implement (supported: {', '.join(sorted(LAYER_TYPES))})"
                )
            layer_weights = {key: weights[f"{spec['name']}/{key}"] for key in spec.get("weights", {})}
            for key, shape in spec.get("weights", {}).items():
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

    def _forward_chunk(self, batch: np.ndarray):
        values = {INPUT_NAME: batch.astype(np.float32)}
        features = None
        for layer, inputs in self.layers:
            output = layer(*(values[name] for name in inputs))
            values[layer.name] = output
            if output.ndim == 4:
                features = output
        return values[self.output_name], features

    predict = forward

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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{where}: format version {manifest.get('format_version')!r} is not supported "
            f"(this rendernet reads version {FORMAT_VERSION})"
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
