"""Adapt a model to its user's images: re-fit only its head on corrected examples, anchored to the shipped head.

A model whose output is average pooling -> Dense (Model.head(): the default EfficientNet-Lite0 model) sees each
image as a pooled feature vector (Model.explain), and its head turns that vector into probabilities. A user's
correction ("this one is real") makes the image's vector and its class an example. `adapt_head` re-fits the
head's kernel and bias to the examples, every class weighing the same however many examples it has, while a
penalty keeps the head near the base one. The penalty measures a change in logits per typical feature value (each
feature's weight change times the root mean square of that feature over the examples, classes balanced), so no
feature is cheap to move because its values are small. Newton's method from the base head: deterministic,
converged in a few steps; no examples give the base head exactly. NumPy only: the page's worker and
`rendernet adapt` run this same code.

Corrections travel as a document (the page stores it in the browser and lets the user download it; `rendernet
adapt --examples` reads it as well as image folders):
    {"format": "rendernet-corrections", "format_version": 1,
     "base_weights_sha256": the weights.npz sha256 of the model the features came from,
     "classes": that model's classes,
     "corrections": [{"features": base64 of float32 little-endian values, the image's pooled features,
                      "label": a class name, "file": the image's file name, "time": ms since 1970}, ...]}
Never pixels: a feature vector cannot be turned back into the image.
"""

import base64
import binascii
import copy
import io
import json

import numpy as np

from .errors import ModelError
from .layers import matmul, pack
from .manifest import WEIGHTS_FILE, sha256_bytes
from .model import read_weights
from .report import model_description

ANCHOR = 100.0  # the penalty's weight, chosen by bench/adapt.py's cross-validation on domains held out of the head
NEWTON_STEPS = 25
TOLERANCE = 1e-7  # stop when a Newton step lowers the objective by less than this
MAX_CORRECTIONS = 1000  # the most recent ones adapt the page's head (Newton's cost grows with their number)
CORRECTIONS_FORMAT, CORRECTIONS_VERSION = "rendernet-corrections", 1


def adaptable_head(model):
    """The model's Dense head when it can be adapted (it reads average-pooled features and is stored as itself,
    with no normalisation folded into it), else ModelError."""
    dense = model.head()
    output = model.manifest.get("output", model.manifest["layers"][-1]["name"])
    if dense is None or dense.name != output or dense.bias is None:
        raise ModelError("this model cannot be adapted: its output is not a Dense layer with a bias on average-pooled "
                         "features")
    return dense


# ---------------------------------------------------------------- the fit

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
    stiffness = anchor * scale ** 2  # the penalty's Hessian for one class's row, diagonal
    base = np.hstack([kernel_t, bias[:, None]]).astype(np.float64)  # (classes, size + 1)
    if classes == 2:
        # The loss depends only on the difference of the two rows; the penalty is least when they move by
        # opposite halves of its change: a logistic regression on the difference, with half the stiffness.
        difference = fit_logistic(inputs, labels, weights, base[1] - base[0], stiffness / 2)
        head = base + np.outer([-0.5, 0.5], difference - (base[1] - base[0]))
    else:
        head = fit_softmax(inputs, labels, weights, base, stiffness)
    return head[:, :size].astype(np.float32), head[:, size].astype(np.float32)


def newton(objective, start: np.ndarray) -> np.ndarray:
    """Minimise a convex objective(x) -> (value, gradient, hessian) by Newton's method with backtracking."""
    x = start.copy()
    value, gradient, hessian = objective(x)
    for _ in range(NEWTON_STEPS):
        step = np.linalg.solve(hessian, -gradient)
        length = 1.0
        while True:  # a step that does not lower the objective is halved
            new = objective(x + length * step)
            if new[0] <= value or length < 1e-4:
                break
            length /= 2
        improvement = value - new[0]
        x, (value, gradient, hessian) = x + length * step, new
        if improvement < TOLERANCE:
            break
    return x


def fit_logistic(inputs, labels, weights, base, stiffness) -> np.ndarray:
    """Two classes: the logit difference's weights (size + 1,), from `base`. The Hessian's product, the costly
    part, runs in float32 through the forward pass's matmul (einsum in Pyodide, which has no BLAS): it only
    steers the steps; the gradient, in float64, decides where they end."""
    sign = np.where(labels == 1, 1.0, -1.0)
    packed = pack(np.ascontiguousarray(inputs.T, dtype=np.float32))

    def objective(row):
        margin = sign * (inputs @ row)
        change = row - base
        value = weights @ np.logaddexp(0, -margin) + 0.5 * change @ (stiffness * change)
        p_wrong = 0.5 * (1 - np.tanh(margin / 2))  # sigmoid(-margin), without overflow
        gradient = inputs.T @ (-weights * sign * p_wrong) + stiffness * change
        curvature = (inputs.T * (weights * p_wrong * (1 - p_wrong))).astype(np.float32)
        return value, gradient, matmul(curvature, packed).astype(np.float64) + np.diag(stiffness)

    return newton(objective, base)


def fit_softmax(inputs, labels, weights, base, stiffness) -> np.ndarray:
    """Any number of classes: the whole head (classes, size + 1), from `base`."""
    classes, width = base.shape
    target = np.eye(classes)[labels]
    penalty = np.tile(stiffness, classes)

    def objective(flat):
        head = flat.reshape(base.shape)
        logits = inputs @ head.T
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        p, change = np.exp(log_p), flat - base.ravel()
        value = -np.sum(weights * log_p[np.arange(len(labels)), labels]) + 0.5 * change @ (penalty * change)
        gradient = ((weights[:, None] * (p - target)).T @ inputs).ravel() + penalty * change
        hessian = np.diag(penalty)
        for c in range(classes):
            for d in range(c, classes):
                block = (inputs.T * (weights * p[:, c] * ((c == d) - p[:, d]))) @ inputs
                hessian[c * width:(c + 1) * width, d * width:(d + 1) * width] += block
                if d != c:
                    hessian[d * width:(d + 1) * width, c * width:(c + 1) * width] += block.T
        return value, gradient, hessian

    return newton(objective, base.ravel()).reshape(base.shape)


# ---------------------------------------------------------------- corrections

def encode_features(vector: np.ndarray) -> str:
    """A pooled feature vector as the corrections document stores it: base64 of float32 little-endian."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_features(text, size: int) -> np.ndarray:
    """The inverse of encode_features; ModelError unless it holds `size` finite values."""
    try:
        values = np.frombuffer(base64.b64decode(str(text), validate=True), dtype="<f4")
    except (binascii.Error, ValueError):
        raise ModelError("features are not base64 of float32 values") from None
    if values.shape != (size,):
        raise ModelError(f"features hold {values.size} values, the model's head reads {size}")
    if not np.all(np.isfinite(values)):
        raise ModelError("features hold a value that is not a finite number")
    return values.astype(np.float32)


def corrections_document(weights_sha256: str, classes, corrections: list) -> dict:
    return {"format": CORRECTIONS_FORMAT, "format_version": CORRECTIONS_VERSION,
            "base_weights_sha256": weights_sha256, "classes": list(classes), "corrections": corrections}


def read_corrections(document, model) -> tuple:
    """A corrections document made with `model` -> (features (N, F) float32, labels (N,) class indices); ModelError
    naming what is wrong (another format or model, a bad entry)."""
    if not isinstance(document, dict) or document.get("format") != CORRECTIONS_FORMAT:
        raise ModelError(f"not a {CORRECTIONS_FORMAT} document")
    if document.get("format_version") != CORRECTIONS_VERSION:
        raise ModelError(f"corrections format_version {document.get('format_version')!r} is not supported "
                         f"(this version reads {CORRECTIONS_VERSION})")
    if document.get("base_weights_sha256") != model.manifest["weights"]["sha256"]:
        raise ModelError("the corrections were made with another model (its weights' sha256 differs)")
    entries = document.get("corrections")
    if not isinstance(entries, list):
        raise ModelError("corrections must be a list")
    size = model.head().kernel_t.shape[1]
    features, labels = np.zeros((len(entries), size), np.float32), np.zeros(len(entries), int)
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict) or entry.get("label") not in model.classes:
                raise ModelError(f"its label must be one of {', '.join(model.classes)}")
            features[index], labels[index] = decode_features(entry.get("features"), size), model.classes.index(entry["label"])
        except ModelError as error:
            raise ModelError(f"correction {index + 1}: {error}") from None
    return features, labels


def correction_counts(labels, classes) -> dict:
    """{class: number of corrections}, as the adapted manifest and the page state them."""
    return {name: int(np.count_nonzero(np.asarray(labels) == index)) for index, name in enumerate(classes)}


# ---------------------------------------------------------------- a session of corrections

class Adaptation:
    """The page's adaptation: the pooled features of every image it classified (by row id), the user's
    corrections, the head fitted to the most recent MAX_CORRECTIONS of them, and an undo history. The model's head
    is set to the adapted one, so later images are classified with it too."""

    def __init__(self, model):
        dense = adaptable_head(model)
        self.model, self.base = model, (dense.kernel_t.copy(), dense.bias.copy())
        self.shipped_head = copy.copy(dense)  # keeps the base arrays: set_head gives the model's layer new ones
        self.rows = {}  # row id -> pooled features
        self.corrections = []  # document entries, oldest first
        self.corrected = {}  # row id -> its entry in corrections (this visit's rows only)
        self.history = []  # earlier (corrections, corrected), for undo
        self.decoded = {}  # a correction's features text -> its values (checked once, by decode_features)

    def remember(self, row, features: np.ndarray) -> None:
        self.rows[row] = np.asarray(features, np.float32)

    def remember_encoded(self, row, text: str) -> None:
        self.remember(row, decode_features(text, self.base[0].shape[1]))

    def shipped(self, features: np.ndarray) -> list:
        """One image's probabilities by the shipped head, whatever the corrections."""
        return [float(p) for p in self.shipped_head(np.asarray(features, np.float32)[None])[0]]

    def forget_rows(self) -> None:
        self.rows.clear()
        self.corrected.clear()

    def correct(self, row, label, file: str, time: float) -> None:
        """Say row's image is of class `label`; None withdraws its correction. Re-fits the head."""
        if row not in self.rows:
            raise ModelError("there is no classified image to correct in that row")
        if label is not None and label not in self.model.classes:
            raise ModelError(f"{label!r} is not one of the model's classes")
        self._save_history()
        previous = self.corrected.pop(row, None)
        if previous is not None:
            self.corrections = [entry for entry in self.corrections if entry is not previous]
        if label is not None:
            entry = {"features": encode_features(self.rows[row]), "label": label, "file": str(file), "time": time}
            self.corrections.append(entry)
            self.corrected[row] = entry
        self.refit()

    def undo(self) -> None:
        """Undo this visit's last change; with none (after a reload), withdraw the most recent correction."""
        if self.history:
            self.corrections, self.corrected = self.history.pop()
        elif self.corrections:
            withdrawn = self.corrections.pop()
            self.corrected = {row: entry for row, entry in self.corrected.items() if entry is not withdrawn}
        self.refit()

    def reset(self) -> None:
        """Back to the shipped model (undo brings the corrections back)."""
        self._save_history()
        self.corrections, self.corrected = [], {}
        self.refit()

    def restore(self, document) -> None:
        """Take the corrections of a stored document (read_corrections checks it; ModelError changes nothing)."""
        features, _ = read_corrections(document, self.model)
        self.corrections, self.corrected, self.history = list(document["corrections"]), {}, []
        self.decoded = {entry["features"]: values for entry, values in zip(self.corrections, features, strict=True)}
        self.refit()

    def _save_history(self) -> None:
        self.history.append((list(self.corrections), dict(self.corrected)))

    def used(self) -> list:
        return self.corrections[-MAX_CORRECTIONS:]

    def refit(self) -> None:
        used, size = self.used(), self.base[0].shape[1]
        self.decoded = {entry["features"]: self.decoded.get(entry["features"]) for entry in used}
        for text, values in self.decoded.items():
            if values is None:
                self.decoded[text] = decode_features(text, size)
        features = np.array([self.decoded[entry["features"]] for entry in used]).reshape(len(used), size)
        labels = np.array([self.model.classes.index(entry["label"]) for entry in used], dtype=int)
        self.model.set_head(*adapt_head(*self.base, features, labels))

    def counts(self) -> dict:
        return correction_counts([self.model.classes.index(entry["label"]) for entry in self.used()], self.model.classes)

    def description(self) -> str:
        return model_description(self.counts())

    def label_of(self, row) -> str:
        entry = self.corrected.get(row)
        return entry["label"] if entry else ""

    def summary(self) -> dict:
        return {"description": self.description(), "counts": self.counts(), "total": len(self.corrections),
                "used": len(self.used()), "can_undo": bool(self.history or self.corrections),
                "corrected": {str(row): entry["label"] for row, entry in self.corrected.items()}}

    def probabilities(self) -> dict:
        """{row id: probabilities in class order} of every remembered row, with the current head."""
        rows = list(self.rows)
        scores = self.model.score_pooled(np.array([self.rows[row] for row in rows])) if rows else []
        return {row: [float(p) for p in score] for row, score in zip(rows, scores, strict=True)}

    def document(self, corrections=None) -> dict:
        return corrections_document(self.model.manifest["weights"]["sha256"], self.model.classes,
                                    self.corrections if corrections is None else corrections)


# ---------------------------------------------------------------- the adapted model's files

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
