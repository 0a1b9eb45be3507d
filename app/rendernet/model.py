"""The rendernet weights format (version 2; version 1 still loads) and the model that runs it.

A model folder holds `model.json`, the manifest, and `weights.npz`, arrays keyed
"<layer name>/<weight name>". `training/export.py` writes both; `load_model`
reads them, checks everything it can, folds BatchNormalization into the
convolution before it, and returns a Model whose `forward` runs with NumPy alone.

The format, field by field, and the checks every manifest passes: manifest.py.
"""

import io
import time
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np

from .decision import decide
from .errors import ModelError
from .layers import FOLDABLE, LAYER_TYPES, Activation, BatchNormalization, Dense, Dropout, GlobalAveragePooling2D, ReLU
from .manifest import (
    CROPS,
    INPUT_NAME,
    MANIFEST_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    check_weights,
    default_model,
    manifest_bytes,
    read_manifest,
    read_model_files,
    sha256_bytes,
    unpacked_size_check,
)
from .reference import read_reference
from .weights import decode

Explanation = namedtuple("Explanation", ("probabilities", "maps", "pooled"))  # Model.explain


class Model:
    """A loaded model: `forward(batch)` -> probabilities, `classify(image_array)` -> label + probabilities."""

    def __init__(self, manifest: dict, weights: dict):
        self.manifest = manifest
        self.classes = list(manifest["classes"])
        self.threshold = manifest.get("threshold")
        self.input_shape = tuple(manifest["input"]["shape"])
        self.input_size = self.input_shape[0]  # what preprocess(file, size, crop) must make
        self.crop = manifest.get("crop", CROPS[0])
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
                        f"weights.npz: {spec['name']}/{key} has shape {list(layer_weights[key].shape)}, model.json expects {shape}"
                    )
            self.layers.append((layer_type(spec["name"], spec.get("config", {}), layer_weights), spec["inputs"]))
        self.output_name = manifest.get("output", self.layers[-1][0].name)
        self._fold_into_linear()
        outputs = self._output_size()
        if outputs is not None and outputs != len(self.classes):
            raise ModelError(f"model.json: classes names {len(self.classes)} classes, the network outputs {outputs}")
        self._head = self._find_head()
        self.reference = None  # (features, labels) of reference.npz, set by model_from_bytes

    def _layer(self, name: str):
        return next(((layer, inputs) for layer, inputs in self.layers if layer.name == name), (None, []))

    def _output_size(self):
        """How many values the output layer gives, from the last weighted layer before it (None if unknown)."""
        layer, inputs = self._layer(self.output_name)
        while layer is not None and getattr(layer, "kernel_t", None) is None and len(inputs) == 1:
            layer, inputs = self._layer(inputs[0])
        return None if getattr(layer, "kernel_t", None) is None else layer.kernel_t.shape[0]

    def head(self):
        """The Dense output layer when it reads globally average-pooled features (through Dropout only), else
        None: for such a head, the logits are the spatial mean of a per-location map (see explain)."""
        return self._head

    def _find_head(self):
        layer, inputs = self._layer(self.output_name)
        if not isinstance(layer, Dense) or layer.config.get("activation") not in ("softmax", "linear"):
            return None
        dense = layer
        while isinstance(layer, (Dense, Dropout)) and len(inputs) == 1:
            layer, inputs = self._layer(inputs[0])
        return dense if isinstance(layer, GlobalAveragePooling2D) else None

    def _fold_into_linear(self) -> None:
        """Fold each BatchNormalization, then an activation (a ReLU or Activation layer), into the linear
        conv/dense that feeds only it and has no activation yet: one pass over memory fewer each (Keras's
        applications write conv, batch norm and ReLU as three layers)."""
        consumers = {}
        for _, inputs in self.layers:
            for name in inputs:
                consumers[name] = consumers.get(name, 0) + 1
        by_name = {layer.name: layer for layer, _ in self.layers}
        kept, renamed = [], {}
        for layer, inputs in self.layers:
            inputs = [renamed.get(name, name) for name in inputs]
            source = by_name.get(inputs[0]) if len(inputs) == 1 else None
            activation = layer.activation_name() if isinstance(layer, (ReLU, Activation)) else None
            if (
                (isinstance(layer, BatchNormalization) or activation is not None)
                and isinstance(source, FOLDABLE)
                and consumers.get(source.name) == 1
                and source.config.get("activation", "linear") == "linear"
            ):
                if activation is None:
                    source.scale_outputs(layer.scale, layer.shift)
                else:
                    source.set_activation(activation)
                consumers[source.name] = consumers.get(layer.name, 0)
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
        Runs one image at a time: larger passes cost more per image (their
        intermediates spill out of the CPU caches).
        """
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[1:] != self.input_shape:
            raise ModelError(f"input has shape {batch.shape[1:]}, the model expects {self.input_shape}")
        parts = [self._forward_pass(batch[index : index + 1]) for index in range(len(batch))]
        probabilities = np.concatenate([part[0] for part in parts]) if parts else np.zeros((0, len(self.classes)))
        if not return_features:
            return probabilities
        return probabilities, np.concatenate([part[1] for part in parts]) if parts else None

    def _forward_pass(self, batch: np.ndarray, spent: dict | None = None):
        """The output and last spatial feature map of one pass; with `spent`, add each layer type's
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

    def explain(self, pixels: np.ndarray) -> "Explanation":
        """One preprocessed image -> Explanation(probabilities, maps, pooled). maps (h, w, classes) is the class
        activation map: each location's features through the head's kernel and bias, so that the maps' spatial
        mean is the logits (softmax of it gives the probabilities); pooled (features,) is the head's input, the
        last feature map's spatial mean, which score_pooled turns back into these probabilities. maps and
        pooled are None when the head is not average pooling + Dense (see head)."""
        dense = self.head()
        probabilities, features = self.forward(pixels[None], return_features=True)
        if dense is None or features is None:
            return Explanation(probabilities[0], None, None)
        maps = features[0] @ dense.kernel_t.T
        if dense.bias is not None:
            maps += dense.bias
        return Explanation(probabilities[0], maps, features[0].mean(axis=(0, 1), dtype=np.float32))

    def score_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled feature vectors (N, features) -> probabilities (N, classes) through the head alone: what
        forward gives for the same images, without decoding or the backbone (a head's Dropout is the identity)."""
        return self.head()(np.asarray(pooled, dtype=np.float32).reshape(-1, self.head().kernel_t.shape[1]))

    def set_head(self, kernel_t: np.ndarray, bias: np.ndarray) -> None:
        """Give the head another kernel (classes, features) and bias (an adapted head, rendernet.adapt)."""
        dense = self.head()
        if kernel_t.shape != dense.kernel_t.shape or bias.shape != dense.bias.shape:
            raise ModelError(f"a head of shape {kernel_t.shape} does not fit this model's {dense.kernel_t.shape}")
        dense.replace_weights(kernel_t, bias)

    def profile(self, batch: np.ndarray, repeats: int = 5) -> dict:
        """Median milliseconds spent in each layer type over `repeats` forward passes of `batch`."""
        runs = [{} for _ in range(repeats)]
        for spent in runs:
            self._forward_pass(np.asarray(batch), spent)
        return {
            kind: round(float(np.median([run[kind] for run in runs])), 2)
            for kind in sorted(runs[0], key=lambda kind: -runs[0][kind])
        }

    def label(self, probabilities) -> str:
        """The predicted class, by the one decision rule (decision.decide)."""
        return decide(probabilities, self.classes, self.threshold).label

    def describe(self, probabilities) -> dict:
        """Probabilities in class order -> {"label", "probabilities": {class: p}}."""
        return {
            "label": self.label(probabilities),
            "probabilities": {name: float(p) for name, p in zip(self.classes, probabilities, strict=True)},
        }

    def classify(self, pixels: np.ndarray) -> dict:
        """One preprocessed image -> {"label", "probabilities": {class: p}}."""
        return self.describe(self.forward(pixels[None])[0])


def read_weights(weights_bytes: bytes, manifest: dict, where: str = WEIGHTS_FILE) -> dict:
    """Check the weights file's sha256 against the manifest, then read its arrays."""
    check_weights(manifest, weights_bytes, where)
    try:
        with zipfile.ZipFile(io.BytesIO(weights_bytes)) as packed:
            unpacked_size_check(packed, where)
        with np.load(io.BytesIO(weights_bytes), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ModelError(f"{where} cannot be read as .npz: {error}") from None
    for key, values in arrays.items():
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise ModelError(f"{where}: {key} holds a value that is not a finite number (NaN or infinity)")
    return arrays


def model_files(manifest: dict, arrays: dict) -> dict:
    """{model.json: bytes, weights.npz: bytes} of `arrays` ({"<layer>/<weight>": array}) under `manifest`, whose
    "weights" entry (file, sha256, bytes) is filled in: the writer read_weights and model_from_bytes read back."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # uncompressed: it is small, and the server's gzip does better
    weights = buffer.getvalue()
    manifest["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(weights), "bytes": len(weights)}
    return {MANIFEST_FILE: manifest_bytes(manifest), WEIGHTS_FILE: weights}


def model_from_bytes(manifest_text: bytes, weights_bytes: bytes, reference_bytes: bytes | None = None) -> Model:
    """Build a Model from its files' contents (the browser fetches them as bytes). reference.npz is required when
    model.json declares it, and becomes model.reference: (features, labels) for the adaptation, else None."""
    manifest = read_manifest(manifest_text)
    weights = read_weights(weights_bytes, manifest)
    try:
        model = Model(manifest, weights)
    except KeyError as error:
        raise ModelError(f"model.json and weights.npz disagree: missing {error}") from None
    if "reference" in manifest:
        if reference_bytes is None:
            raise ModelError(f"model.json declares {REFERENCE_FILE}, which is missing")
        if model.head() is None:
            raise ModelError(f"model.json declares {REFERENCE_FILE}, but the model's head does not read pooled features")
        model.reference = read_reference(reference_bytes, manifest, model.head().kernel_t.shape[1])
    return model


def load_model(path) -> Model:
    """Load a model folder holding model.json and weights.npz (and reference.npz when it declares one), or a .zip
    of one. An adapted model whose base is the shipped model is checked against it (check_adapted_base)."""
    files = read_model_files(path)
    missing = [name for name in (MANIFEST_FILE, WEIGHTS_FILE) if name not in files]
    if missing:
        raise ModelError(f"{path} has no {' or '.join(missing)}" if Path(path).exists() else f"{path} does not exist")
    return model_from_files(files)


def model_from_files(files: dict) -> Model:
    """A Model from its files ({name: bytes}, as read_model_files gives them), with load_model's checks: an adapted
    model whose base is the shipped model is checked against it."""
    model = model_from_bytes(files[MANIFEST_FILE], files[WEIGHTS_FILE], files.get(REFERENCE_FILE))
    check_adapted_base(model, files[WEIGHTS_FILE], default_model())
    return model


def check_adapted_base(model: Model, weights_bytes: bytes, base) -> None:
    """ModelError when `model` says it was adapted from the model folder `base` (model.json's
    adapted.base_weights_sha256 is that model's weights sha256) but holds other weights than the base's anywhere
    but in its head: an adaptation re-fits the head only. Nothing to check when the base is another model."""
    claimed = model.manifest.get("adapted", {}).get("base_weights_sha256")
    base_files = read_model_files(base, (MANIFEST_FILE, WEIGHTS_FILE)) if claimed and Path(base).exists() else {}
    base_manifest = read_manifest(base_files[MANIFEST_FILE]) if base_files else None
    if base_manifest is None or base_manifest["weights"]["sha256"] != claimed:
        return
    base_arrays = read_weights(base_files[WEIGHTS_FILE], base_manifest)
    arrays = read_weights(weights_bytes, model.manifest)
    head = model.head().name if model.head() is not None else None
    for key, values in base_arrays.items():
        if key.rsplit("/", 1)[0] != head and not (key in arrays and np.array_equal(arrays[key], values)):
            raise ModelError(
                f"model.json says it was adapted from the shipped model ({claimed[:12]}…), but its {key} is not that "
                "model's: an adaptation changes the head only; the file is altered or mislabelled"
            )
