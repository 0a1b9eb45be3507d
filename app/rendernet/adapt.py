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

A model that ships a reference set (reference.py: pooled features and labels of its training images) is adapted
with it (rehearsal): the corrections are fitted together with the reference examples, whose loss enters relative
to the base head (so they hold the head to what it answered, never pull it elsewhere), and the result is scaled
back, if it must be, until every reference example the base head answered right with a clear margin is still
answered right. A single correction then cannot swing the rest, and the corrected image itself usually ends on
the user's side (the page shows the user's label either way). The settings (REFERENCE_ANCHOR, CORRECTION_WEIGHT,
KNOWN_MARGIN) come from bench/adapt.py's leave-one-domain-out choice on the committed sample.

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
import json
import re

import numpy as np

from .errors import ModelError
from .layers import matmul, pack
from .manifest import MANIFEST_FILE, REFERENCE_FILE, WEIGHTS_FILE
from .metrics import balanced_weights
from .model import model_files, read_weights
from .report import model_description
from .version import __version__

ANCHOR = 100.0  # the penalty's weight without a reference set, chosen by bench/adapt.py's cross-validation
# With a reference set (reference.py): the penalty's weight and one correction's weight against one reference
# example, chosen by bench/adapt.py's leave-one-domain-out cross-validation on the committed sample.
REFERENCE_ANCHOR, CORRECTION_WEIGHT = 30.0, 10.0
KNOWN_MARGIN = 1.0  # in logits: a reference example the base head answers right by more is what it knew (kept);
#                    None: no guard. Chosen with the settings above.
MARGIN = 1e-3  # in logits: how far on its side a known reference example must stay (float32 rounding)
NEWTON_STEPS = 25
TOLERANCE = 1e-7  # stop when a Newton step lowers the objective by less than this
MAX_CORRECTIONS = 1000  # the most recent ones adapt the page's head (Newton's cost grows with their number)
MAX_ADDED = 20_000  # the most corrections one file may add in the page (each is checked and kept)
MAX_DOCUMENT_CHARS = 64 * 1024 * 1024  # a corrections document longer than this is refused before it is parsed
MAX_DEPTH = 16  # a corrections document nests 3 deep; one nested deeper is refused before it is parsed
JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a JSON string (skipped whole) or a bracket
CORRECTIONS_FORMAT, CORRECTIONS_VERSION = "rendernet-corrections", 1
# Two feature vectors this close (Euclidean distance over the larger norm) are one image: the page's two matrix
# products (einsum before OpenBLAS has loaded, sgemm after) and the CLI's BLAS give the same image's features
# within 3.3e-6 of each other (the sample's images), while two different sample images are at least 0.38 apart.
# JPEG decoders differ more (Pyodide's Pillow and the native wheel): the same JPEG may count twice across them.
SAME_IMAGE = 1e-3
PAIRS_AT_ONCE = 65_536  # candidate pairs compared at once by same_images (bounded memory)


def adaptable_head(model):
    """The model's Dense head when it can be adapted (it reads average-pooled features and is stored as itself,
    with no normalisation folded into it; a following softmax Activation is folded in), else ModelError."""
    dense = model.head()
    if dense is None or dense.name != model.output_name or dense.bias is None or dense.scaled:
        raise ModelError("this model cannot be adapted: its output is not a Dense layer with a bias on average-pooled features")
    return dense


# ---------------------------------------------------------------- the fit


class HeadFit(tuple):
    """adapt_head's answer: unpacks as (kernel_t, bias); `converged` is False when Newton's method reached
    NEWTON_STEPS still improving (the head is then the best it found, and the CLI and the page say so)."""

    def __new__(cls, kernel_t, bias, converged: bool = True):
        fit = super().__new__(cls, (kernel_t, bias))
        fit.converged = converged
        return fit


def check_examples(features, count: int, size: int) -> np.ndarray:
    """The examples' features as (count, size) float64; ModelError naming the first correction that has the wrong
    number of values or a value that is not a finite number (one such value would make the whole head NaN)."""
    rows = [np.asarray(row, dtype=np.float64).ravel() for row in features] if count else []
    for index, row in enumerate(rows):
        if row.size != size:
            raise ModelError(f"correction {index + 1}: features hold {row.size} values, the model's head reads {size}")
        if not np.all(np.isfinite(row)):
            raise ModelError(f"correction {index + 1}: features hold a value that is not a finite number")
    if len(rows) != count:
        raise ModelError(f"{len(rows)} feature vectors for {count} labels")
    return np.array(rows).reshape(count, size)


def adapt_head(
    kernel_t: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    anchor=None,
    reference=None,
    threshold=None,
    correction_weight=CORRECTION_WEIGHT,
    known_margin=KNOWN_MARGIN,
) -> tuple:
    """The head (kernel_t (classes, features), bias (classes,)) re-fitted to examples (features (N, F), labels
    (N,) class indices): minimises the weighted cross-entropy summed over the examples (so the more corrections,
    the less the anchor holds) + anchor / 2 * the scaled squared change.
    Without `reference`: the corrections alone, classes balanced, anchor ANCHOR.
    With `reference` ((features, labels), the model's reference set): each correction weighs `correction_weight`,
    the reference examples together as many as they are (classes balanced), anchor REFERENCE_ANCHOR; with two
    classes and the model's `threshold`, the loss is centred on the threshold, where the decision rule cuts. The
    reference examples' loss enters less its slope at the base head (a Bregman divergence): it holds the head
    to what it answered on them, and never pulls it toward a better fit of them, so no correction = the base
    head, and a correction moves it only as far as the reference examples' answers allow.
    Returns a HeadFit, (kernel_t, bias) as float32; the base arrays themselves when there are no examples.
    ModelError names a correction whose features are not `features` finite numbers."""
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return HeadFit(kernel_t, bias)
    classes, size = kernel_t.shape
    features = check_examples(features, len(labels), size)
    corrections = len(labels)
    if reference is None:
        anchor = ANCHOR if anchor is None else anchor
        weights, offset = balanced_weights(labels, classes), 0.0
    else:
        anchor = REFERENCE_ANCHOR if anchor is None else anchor
        reference_features, reference_labels = reference
        weights = np.concatenate([np.full(len(labels), correction_weight), balanced_weights(reference_labels, classes)])
        features, labels = np.vstack([features, reference_features]), np.concatenate([labels, reference_labels])
        offset = float(np.log(threshold / (1 - threshold))) if classes == 2 and threshold and 0 < threshold < 1 else 0.0
    inputs = np.hstack([features, np.ones((len(labels), 1))])  # x with a 1 for the bias
    scale = np.sqrt(weights @ inputs**2 / weights.sum()) + 1e-6  # a feature's typical value, as weighted
    stiffness = anchor * scale**2  # the penalty's Hessian for one class's row, diagonal
    base = np.hstack([kernel_t, bias[:, None]]).astype(np.float64)  # (classes, size + 1)
    rehearsed = np.arange(len(labels)) >= corrections  # the reference examples' rows
    if classes == 2:
        # The loss depends only on the difference of the two rows; the penalty is least when they move by
        # opposite halves of its change: a logistic regression on the difference, with half the stiffness.
        difference, converged = fit_logistic(inputs, labels, weights, base[1] - base[0], stiffness / 2, offset, rehearsed)
        head = base + np.outer([-0.5, 0.5], difference - (base[1] - base[0]))
    else:
        head, converged = fit_softmax(inputs, labels, weights, base, stiffness, rehearsed)
    if reference is not None and known_margin is not None:
        head = keep_what_it_knew(base, head, inputs[rehearsed], labels[rehearsed], offset, known_margin)
    return HeadFit(head[:, :size].astype(np.float32), head[:, size].astype(np.float32), converged)


def keep_what_it_knew(base, head, inputs, labels, offset: float, known_margin: float, steps: int = 30):
    """The fitted head, or the part of its change from `base` that answers every reference example the base head
    answered right by more than `known_margin` still right (bisection on the fraction of the change): no
    correction tilts the head against what the model knew. An answer's margin is the decision rule's: two
    classes, the logit difference less `offset` (the threshold's logit), signed by the label; more, the label's
    logit less the largest other one. A known answer keeps a margin of MARGIN (its own when smaller), so float32
    rounding cannot turn it."""

    def margins(candidate):
        logits = inputs @ candidate.T
        if len(candidate) == 2:
            return np.where(labels == 1, 1.0, -1.0) * (logits[:, 1] - logits[:, 0] - offset)
        own = logits[np.arange(len(labels)), labels]
        logits[np.arange(len(labels)), labels] = -np.inf
        return own - logits.max(axis=1)

    before = margins(base)
    known = before > known_margin
    floor = np.minimum(before[known], MARGIN)

    def keeps(fraction):
        return bool(np.all(margins(base + fraction * (head - base))[known] >= floor))

    if keeps(1.0):
        return head
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if keeps(middle) else (low, middle)
    return base + low * (head - base)


def newton(objective, start: np.ndarray, rehearsed=None) -> tuple:
    """Minimise a convex objective(x) -> (value, gradient, solve) by Newton's method with backtracking; solve(rhs)
    gives the Hessian's inverse times rhs, the costly part, computed only for the points a step starts from. With
    `rehearsed` (a mask of the examples; objective(x, mask) gives their loss alone), the objective is tilted by
    that loss's slope at `start`, so that start is the minimum while no other example pulls.
    Returns (x, converged). A step that does not lower the objective is halved, and never taken when even a
    small part of it does not: the search ends there (x is then as low as the arithmetic allows). converged is
    False when NEWTON_STEPS steps all still improved."""
    if rehearsed is not None and rehearsed.any():
        slope, untilted = objective(start, rehearsed)[1], objective

        def objective(x):
            value, gradient, solve = untilted(x)
            return value - slope @ (x - start), gradient - slope, solve

    x = start.copy()
    value, gradient, solve = objective(x)
    for _ in range(NEWTON_STEPS):
        step = solve(-gradient)
        length, new = 1.0, objective(x + step)
        while not new[0] <= value:  # also when it is NaN
            length /= 2
            if length < 1e-4:
                return x, True
            new = objective(x + length * step)
        improvement = value - new[0]
        x, (value, gradient, solve) = x + length * step, new
        if improvement < TOLERANCE:
            return x, True
    return x, False


def solve_dense(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """system^-1 rhs; the least-squares solution when the system is singular."""
    try:
        return np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(system, rhs, rcond=None)[0]


def fit_logistic(inputs, labels, weights, base, stiffness, offset: float = 0.0, rehearsed=None) -> tuple:
    """Two classes: (the logit difference's weights (size + 1,), converged), from `base`; an example's margin is measured from
    `offset` (the threshold's logit); the `rehearsed` examples' loss is tilted (newton). The Hessian is
    diag(stiffness) + X^T C X (X: the N examples' inputs, C their curvatures): with fewer examples than
    weights (a wide head, few corrections) its inverse is taken through the N x N system of the Woodbury
    identity, else through the full one. Its products, the costly part, run in float32 through the forward pass's
    matmul: they only steer the steps; the gradient, in float64, decides where they end."""
    sign = np.where(labels == 1, 1.0, -1.0)
    wide = len(inputs) < inputs.shape[1]  # fewer examples than weights: the Woodbury identity's N x N system
    packed = pack(np.ascontiguousarray(inputs if wide else inputs.T, dtype=np.float32))
    if wide:  # the same at every step: X D^-1 and X D^-1 X^T
        scaled = inputs / stiffness
        gram = matmul(scaled.astype(np.float32), packed).astype(np.float64)

    def objective(row, only=None):  # only: a mask of the examples whose loss alone is wanted (no penalty)
        margin = sign * (inputs @ row - offset)
        change = row - base
        weighted = weights if only is None else np.where(only, weights, 0.0)
        penalty = stiffness if only is None else np.zeros_like(stiffness)
        value = weighted @ np.logaddexp(0, -margin) + 0.5 * change @ (penalty * change)
        p_wrong = 0.5 * (1 - np.tanh(margin / 2))  # sigmoid(-margin), without overflow
        gradient = inputs.T @ (-weighted * sign * p_wrong) + penalty * change
        if only is not None:
            return value, gradient, None

        curvature = weights * p_wrong * (1 - p_wrong)

        def solve(rhs):
            if not wide:
                hessian = matmul((inputs.T * curvature).astype(np.float32), packed).astype(np.float64)
                return solve_dense(hessian + np.diag(stiffness), rhs)
            y = rhs / stiffness
            return y - scaled.T @ solve_dense(np.eye(len(inputs)) + curvature[:, None] * gram, curvature * (inputs @ y))

        return value, gradient, solve

    return newton(objective, base, rehearsed)


def fit_softmax(inputs, labels, weights, base, stiffness, rehearsed=None) -> tuple:
    """Any number of classes: (the whole head (classes, size + 1), converged), from `base`; the `rehearsed` examples' loss is
    tilted (newton)."""
    classes, width = base.shape
    target = np.eye(classes)[labels]
    stiffness = np.tile(stiffness, classes)

    def objective(flat, only=None):
        head = flat.reshape(base.shape)
        logits = inputs @ head.T
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        p, change = np.exp(log_p), flat - base.ravel()
        weighted = weights if only is None else np.where(only, weights, 0.0)
        penalty = stiffness if only is None else np.zeros_like(stiffness)
        value = -np.sum(weighted * log_p[np.arange(len(labels)), labels]) + 0.5 * change @ (penalty * change)
        gradient = ((weighted[:, None] * (p - target)).T @ inputs).ravel() + penalty * change
        if only is not None:
            return value, gradient, None

        def solve(rhs):
            blocks = np.diag(penalty)
            for c in range(classes):
                for d in range(c, classes):
                    block = (inputs.T * (weights * p[:, c] * ((c == d) - p[:, d]))) @ inputs
                    blocks[c * width : (c + 1) * width, d * width : (d + 1) * width] += block
                    if d != c:
                        blocks[d * width : (d + 1) * width, c * width : (c + 1) * width] += block.T
            return solve_dense(blocks, rhs)

        return value, gradient, solve

    flat, converged = newton(objective, base.ravel(), rehearsed)
    return flat.reshape(base.shape), converged


# ---------------------------------------------------------------- corrections


def parse_document(text) -> object:
    """The JSON of a corrections document (str or bytes), parsed within bounds; ModelError saying why not: longer
    than MAX_DOCUMENT_CHARS, nested deeper than MAX_DEPTH, or not JSON. The depth is measured before parsing,
    since Pyodide's parser exhausts the WebAssembly stack on deep nesting ("Maximum call stack size exceeded")
    instead of raising RecursionError."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ModelError(f"it is {len(text) / 1e6:.0f} MB; a corrections document is at most {MAX_DOCUMENT_CHARS / 1e6:.0f} MB")
    depth = 0
    for token in JSON_NESTING.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ModelError(f"it is nested more than {MAX_DEPTH} deep; a corrections document nests 3 deep")
        elif bracket in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ModelError(f"it is not a corrections file (JSON): {str(error)[:200]}") from None


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
    return {
        "format": CORRECTIONS_FORMAT,
        "format_version": CORRECTIONS_VERSION,
        "base_weights_sha256": weights_sha256,
        "classes": list(classes),
        "corrections": corrections,
    }


def read_corrections(document, model) -> tuple:
    """A corrections document made with `model` -> (features (N, F) float32, labels (N,) class indices); ModelError
    naming what is wrong (another format or model, a bad entry)."""
    if not isinstance(document, dict) or document.get("format") != CORRECTIONS_FORMAT:
        raise ModelError(f"not a {CORRECTIONS_FORMAT} document")
    if document.get("format_version") != CORRECTIONS_VERSION:
        raise ModelError(
            f"corrections format_version {document.get('format_version')!r} is not supported "
            f"(this version reads {CORRECTIONS_VERSION})"
        )
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


def same_images(features) -> np.ndarray:
    """For each of N feature vectors (N, F), the index of the first one showing the same image (within SAME_IMAGE):
    itself when none before it does. Candidates are the pairs whose norms are within SAME_IMAGE (sorted by norm), so
    the cost grows with N times the vectors of nearly equal norm, not N squared."""
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    norms = np.linalg.norm(features, axis=1)
    order = np.argsort(norms, kind="stable")
    ends = np.searchsorted(norms[order], norms[order] * (1 + SAME_IMAGE) + 1e-12, side="right")
    counts = ends - np.arange(len(order)) - 1  # the vectors after each one (in norm order) that may be the same
    first = np.arange(len(features))
    starts = np.cumsum(counts) - counts
    for begin in range(0, int(counts.sum()), PAIRS_AT_ONCE):
        pair = np.arange(begin, min(begin + PAIRS_AT_ONCE, int(counts.sum())))
        left = np.searchsorted(starts + counts, pair, side="right")  # the sorted position each pair starts from
        a, b = order[left], order[left + 1 + pair - starts[left]]
        close = np.linalg.norm(features[a] - features[b], axis=1) <= SAME_IMAGE * np.maximum(norms[a], norms[b])
        for i, j in zip(a[close], b[close], strict=True):  # join the two groups under their first index
            i, j = _root(first, i), _root(first, j)
            first[max(i, j)] = min(i, j)
    return np.array([_root(first, index) for index in range(len(first))], dtype=int)


def _root(first: np.ndarray, index: int) -> int:
    while first[index] != index:
        index = first[index]
    return int(index)


def entry_features(entries) -> np.ndarray:
    """The feature vectors of checked corrections entries (read_corrections), as (N, F)."""
    return np.array([np.frombuffer(base64.b64decode(entry["features"]), dtype="<f4") for entry in entries], dtype=np.float32)


def merge_corrections(*lists) -> tuple:
    """Several people's corrections (lists of checked document entries) as one list: an image counts once (its
    features the same within SAME_IMAGE, whichever matrix product computed them); when two entries label it
    differently, the newest (largest "time") is kept. Returns (entries, conflicts), conflicts a list of (kept
    entry, dropped entry) with different labels. Order: first seen, so a merge is deterministic."""
    entries = [entry for items in lists for entry in items]
    merged, conflicts = {}, []
    for entry, image in zip(entries, same_images(entry_features(entries)) if entries else [], strict=True):
        kept = merged.get(image)
        if kept is None:
            merged[image] = entry
            continue
        newer, older = (entry, kept) if float(entry.get("time", 0)) > float(kept.get("time", 0)) else (kept, entry)
        if newer["label"] != older["label"]:
            conflicts.append((newer, older))
        merged[image] = newer
    return list(merged.values()), conflicts


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
        self.converged = True  # the last re-fit's (HeadFit.converged)

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
        """Take the corrections of a stored document (read_corrections checks it; ModelError changes nothing): at
        the start of a visit, or when another tab of the site changed them."""
        features, _ = read_corrections(document, self.model)
        self.corrections, self.corrected, self.history = list(document["corrections"]), {}, []
        self.decoded = {entry["features"]: values for entry, values in zip(self.corrections, features, strict=True)}
        self._mark_rows()
        self.refit()

    def _mark_rows(self) -> None:
        """Rows of this visit whose image has a correction are marked corrected (the stored or added ones): the
        same image within SAME_IMAGE, as merge_corrections counts it."""
        rows = list(self.rows)
        if not rows or not self.corrections:
            self.corrected = {}
            return
        features = np.vstack([entry_features(self.corrections), np.array([self.rows[row] for row in rows])])
        images = same_images(features)
        self.corrected = {
            row: self.corrections[image]
            for row, image in zip(rows, images[len(self.corrections) :], strict=True)
            if image < len(self.corrections)
        }

    def add(self, document) -> dict:
        """Merge the corrections of another document made with this model (a colleague's download): an image
        counted once, the newest label kept where two differ; rows of this visit showing one of its images are
        marked corrected. ModelError (nothing changed) when the document cannot be used. Undo takes it back.
        Returns {"added": new corrections, "conflicts": images whose label changed or stayed against another}."""
        entries = document.get("corrections") if isinstance(document, dict) else None
        if isinstance(entries, list) and len(entries) > MAX_ADDED:
            raise ModelError(f"the file holds {len(entries):,} corrections; at most {MAX_ADDED:,} can be added at once")
        read_corrections(document, self.model)  # every entry checked before anything changes
        merged, conflicts = merge_corrections(self.corrections, document["corrections"])
        self._save_history()
        added = len(merged) - len(self.corrections)
        self.corrections = merged
        self._mark_rows()
        self.refit()
        return {"added": added, "conflicts": len(conflicts)}

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
        fit = adapt_head(*self.base, features, labels, reference=self.model.reference, threshold=self.model.threshold)
        self.model.set_head(*fit)
        self.converged = fit.converged

    def counts(self) -> dict:
        return correction_counts([self.model.classes.index(entry["label"]) for entry in self.used()], self.model.classes)

    def description(self) -> str:
        return model_description(self.counts())

    def label_of(self, row) -> str:
        entry = self.corrected.get(row)
        return entry["label"] if entry else ""

    def summary(self) -> dict:
        return {
            "description": self.description(),
            "counts": self.counts(),
            "total": len(self.corrections),
            "used": len(self.used()),
            "can_undo": bool(self.history or self.corrections),
            "corrected": {str(row): entry["label"] for row, entry in self.corrected.items()},
            "reference_examples": 0 if self.model.reference is None else len(self.model.reference[1]),
            "base_weights_sha256": self.model.manifest["weights"]["sha256"],
            "converged": self.converged,
        }

    def probabilities(self) -> dict:
        """{row id: probabilities in class order} of every remembered row, with the current head."""
        rows = list(self.rows)
        scores = self.model.score_pooled(np.array([self.rows[row] for row in rows])) if rows else []
        return {row: [float(p) for p in score] for row, score in zip(rows, scores, strict=True)}

    def document(self, corrections=None) -> dict:
        return corrections_document(
            self.model.manifest["weights"]["sha256"], self.model.classes, self.corrections if corrections is None else corrections
        )


# ---------------------------------------------------------------- the adapted model's files


def adapted_model_files(model, files: dict, kernel_t, bias, corrections: dict) -> dict:
    """The files of the adapted model, in the same format, from the base model's `files` ({name: bytes}, as
    read_model_files gives them): {name: bytes}. The head's kernel and bias are stored as float32; the manifest
    names the base weights' sha256, the corrections per class and the anchor, and drops the base model's metrics
    (they do not describe this model); the reference set, if any, is the base model's, unchanged."""
    dense = adaptable_head(model)
    manifest = json.loads(files[MANIFEST_FILE])
    arrays = read_weights(files[WEIGHTS_FILE], manifest)
    for name, values in (("kernel", np.asarray(kernel_t).T), ("bias", bias)):
        arrays.pop(f"{dense.name}/{name}:scale", None)
        arrays[f"{dense.name}/{name}"] = np.ascontiguousarray(values, dtype=np.float32)
    layer = next(spec for spec in manifest["layers"] if spec["name"] == dense.name)
    for name, spec in layer["weights"].items():
        layer["weights"][name] = {"shape": spec["shape"], "dtype": "float32"} if isinstance(spec, dict) else spec
    manifest.pop("metrics", None)
    manifest["adapted"] = {
        "base_weights_sha256": manifest["weights"]["sha256"],
        "corrections": corrections,
        "anchor": ANCHOR if model.reference is None else REFERENCE_ANCHOR,
        "reference_examples": 0 if model.reference is None else len(model.reference[1]),
    }
    manifest["rendernet_version"] = __version__
    adapted = model_files(manifest, arrays)
    if REFERENCE_FILE in files and "reference" in manifest:
        adapted[REFERENCE_FILE] = files[REFERENCE_FILE]
    return adapted
