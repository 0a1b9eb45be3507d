"""Adapt a model to its user's images: re-fit only its head on corrected examples, anchored to the shipped head.

A model whose output is average pooling -> Dense (Model.head(): the default EfficientNet-Lite0 model) sees each
image as a pooled feature vector, and its head turns that vector into probabilities. A user's correction ("this
one is real") makes the image's vector and its class an example. `adapt_head` re-fits the head's kernel and bias
to the examples, every class weighing the same however many examples it has, while a penalty keeps the head
near the base one. The penalty measures a change in logits per typical feature value (each feature's weight
change times the root mean square of that feature over the examples, classes balanced), so no feature is cheap
to move because its values are small. Newton's method from the base head: deterministic, converged in a few steps; no
examples give the base head exactly. NumPy only, as the page's worker needs; `rendernet adapt` runs it today
(build.py leaves it out of the page until the page uses it).
"""

import io
import json

import numpy as np

from .errors import ModelError
from .manifest import WEIGHTS_FILE, sha256_bytes
from .model import read_weights

ANCHOR = 1.0  # the penalty's weight; provisional (not yet chosen by cross-validation on held-out sources)
NEWTON_STEPS = 25
TOLERANCE = 1e-7  # stop when a Newton step lowers the objective by less than this


def pooled_features(model, pixels: np.ndarray) -> np.ndarray:
    """One preprocessed image -> the head's input: the last feature map's spatial mean, (features,) float32."""
    dense = adaptable_head(model)
    _, features = model.forward(pixels[None], return_features=True)
    assert features.shape[-1] == dense.kernel_t.shape[1]
    return features[0].mean(axis=(0, 1), dtype=np.float32)


def adaptable_head(model):
    """The model's Dense head when it can be adapted (it reads average-pooled features and is stored as itself,
    with no normalisation folded into it), else ModelError."""
    dense = model.head()
    output = model.manifest.get("output", model.manifest["layers"][-1]["name"])
    if dense is None or dense.name != output or dense.bias is None:
        raise ModelError("this model cannot be adapted: its output is not a Dense layer with a bias on average-pooled "
                         "features")
    return dense


def adapt_head(kernel_t: np.ndarray, bias: np.ndarray, features: np.ndarray, labels: np.ndarray,
               anchor: float = ANCHOR) -> tuple:
    """The head (kernel_t (classes, features), bias (classes,)) re-fitted to examples (features (N, F), labels
    (N,) class indices): minimises the class-balanced cross-entropy summed over the examples (so the more
    corrections, the less the anchor holds) + anchor / 2 * the scaled squared change.
    Returns (kernel_t, bias) as float32; the base arrays themselves when there are no examples."""
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return kernel_t, bias
    classes, size = kernel_t.shape
    inputs = np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(labels), 1))])  # x with a 1 for the bias
    counts = np.bincount(labels, minlength=classes)
    weights = len(labels) / (np.count_nonzero(counts) * counts[labels])  # each class present weighs the same, and
    #                                                                     all of them together as many examples
    scale = np.sqrt(weights @ inputs ** 2 / len(labels)) + 1e-6  # a feature's typical value, classes balanced
    stiffness = anchor * np.tile(scale ** 2, classes)  # the penalty's Hessian, diagonal
    base = np.hstack([kernel_t, bias[:, None]]).astype(np.float64)  # (classes, size + 1)
    target = np.eye(classes)[labels]

    def objective(head):
        logits = inputs @ head.T
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        change = (head - base).ravel()
        return -np.sum(weights * log_p[np.arange(len(labels)), labels]) + 0.5 * change @ (stiffness * change), np.exp(log_p)

    head = base.copy()
    value, p = objective(head)
    for _ in range(NEWTON_STEPS):
        gradient = ((weights[:, None] * (p - target)).T @ inputs).ravel() + stiffness * (head - base).ravel()
        hessian = np.diag(stiffness)
        for c in range(classes):
            for d in range(c, classes):
                curvature = weights * p[:, c] * ((c == d) - p[:, d])
                block = (inputs.T * curvature) @ inputs
                hessian[c * (size + 1):(c + 1) * (size + 1), d * (size + 1):(d + 1) * (size + 1)] += block
                if d != c:
                    hessian[d * (size + 1):(d + 1) * (size + 1), c * (size + 1):(c + 1) * (size + 1)] += block.T
        step = np.linalg.solve(hessian, -gradient).reshape(head.shape)
        length = 1.0
        while True:  # backtracking: a step that does not lower the objective is halved
            new_value, new_p = objective(head + length * step)
            if new_value <= value or length < 1e-4:
                break
            length /= 2
        improvement = value - new_value
        head, value, p = head + length * step, new_value, new_p
        if improvement < TOLERANCE:
            break
    return head[:, :size].astype(np.float32), head[:, size].astype(np.float32)


def adapted_model_files(model, manifest_bytes: bytes, weights_bytes: bytes, kernel_t, bias, corrections: dict,
                        anchor: float = ANCHOR) -> tuple:
    """The files of the adapted model, in the same format: (model.json bytes, weights.npz bytes). The head's
    kernel and bias are stored as float32; the manifest names the base weights' sha256 and the corrections per
    class, and drops the base model's metrics (they do not describe this model)."""
    dense = adaptable_head(model)
    manifest = json.loads(manifest_bytes)
    arrays = read_weights(weights_bytes, manifest)
    for name, values in (("kernel", np.asarray(kernel_t).T), ("bias", bias)):
        arrays.pop(f"{dense.name}/{name}:scale", None)
        arrays[f"{dense.name}/{name}"] = np.ascontiguousarray(values, dtype=np.float32)
    layer = next(spec for spec in manifest["layers"] if spec["name"] == dense.name)
    for name, spec in layer["weights"].items():
        layer["weights"][name] = {"shape": spec["shape"], "dtype": "float32"} if isinstance(spec, dict) else spec
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    weights = buffer.getvalue()
    manifest.pop("metrics", None)
    manifest["adapted"] = {"base_weights_sha256": manifest["weights"]["sha256"], "corrections": corrections,
                           "anchor": anchor}
    manifest["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(weights), "bytes": len(weights)}
    return json.dumps(manifest, indent=1).encode(), weights
