"""The reference set: what a model knew, shipped beside it so that a user's corrections cannot undo it.

A model whose head reads pooled features (Model.head) may ship `reference.npz`: the pooled features and labels of
some of its training images, balanced over classes and sources. The adaptation (adapt.py) fits a user's
corrections together with these examples (rehearsal): a correction moves the head only as far as the reference
examples allow, so one photograph marked "real" cannot drag every rendered room toward "real".

reference.npz holds "features" float16 (count, features) and "labels" uint8 (count,); model.json's "reference"
names the file with its sha256 and count (the format table: manifest.py). At most MAX_PER_SOURCE images of one
source and MAX_EXAMPLES in all (112 features: 600 x 112 x 2 bytes = 134 kB before compression, ~100 kB gzipped).
"""

import io
import zipfile

import numpy as np

from .errors import ModelError
from .manifest import REFERENCE_FILE, check_weights, sha256_bytes, unpacked_size_check
from .version import __version__

MAX_PER_SOURCE, MAX_EXAMPLES = 40, 600


def choose_reference(labels, sources, classes: int, seed: int = 0) -> np.ndarray:
    """Indices of a reference set: each class an equal share of MAX_EXAMPLES, taken round-robin over its sources
    (at most MAX_PER_SOURCE each) in a seeded random order. Deterministic for the same inputs and seed."""
    labels, sources = np.asarray(labels), np.asarray(sources)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(classes):
        queues = [
            list(rng.permutation(np.flatnonzero((labels == label) & (sources == source)))[:MAX_PER_SOURCE])
            for source in sorted(set(sources[labels == label].tolist()))
        ]
        taken = []
        while len(taken) < MAX_EXAMPLES // classes and any(queues):
            for queue in queues:
                if queue and len(taken) < MAX_EXAMPLES // classes:
                    taken.append(queue.pop(0))
        chosen += sorted(int(index) for index in taken)
    return np.array(chosen, dtype=int)


def reference_files(features, labels, classes) -> tuple:
    """(reference.npz bytes, the manifest's "reference" entry) for these examples."""
    features, labels = np.asarray(features, np.float32), np.asarray(labels, int)
    if not np.all(np.isfinite(features)) or np.abs(features).max(initial=0) > np.finfo(np.float16).max:
        raise ModelError("reference features must be finite float16 values")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, features=features.astype(np.float16), labels=labels.astype(np.uint8))
    data = buffer.getvalue()
    counts = {name: int(np.count_nonzero(labels == index)) for index, name in enumerate(classes)}
    return data, {
        "file": REFERENCE_FILE,
        "sha256": sha256_bytes(data),
        "bytes": len(data),
        "count": len(labels),
        "per_class": counts,
    }


def read_reference(data: bytes, manifest: dict, size: int) -> tuple:
    """reference.npz's bytes -> (features (count, size) float32, labels (count,) int), checked against model.json
    (sha256 first, then keys, dtypes, shapes, finite values, labels); ModelError naming what is wrong."""
    check_weights(manifest, data, REFERENCE_FILE, "reference")
    count, classes = manifest["reference"]["count"], len(manifest["classes"])
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            unpacked_size_check(packed, REFERENCE_FILE)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if sorted(archive.files) != ["features", "labels"]:
                raise ModelError(f"{REFERENCE_FILE} must hold exactly 'features' and 'labels', found {sorted(archive.files)}")
            features, labels = archive["features"], archive["labels"]
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ModelError(f"{REFERENCE_FILE} cannot be read as .npz: {error}") from None
    if features.dtype != np.float16 or features.shape != (count, size):
        raise ModelError(
            f"{REFERENCE_FILE}: features must be float16 of shape {[count, size]}, found {features.dtype} {list(features.shape)}"
        )
    if labels.dtype != np.uint8 or labels.shape != (count,) or labels.max(initial=0) >= classes:
        raise ModelError(f"{REFERENCE_FILE}: labels must be {count} uint8 class indices below {classes}")
    if not np.all(np.isfinite(features)):
        raise ModelError(f"{REFERENCE_FILE}: features hold a value that is not a finite number")
    return features.astype(np.float32), labels.astype(int)


def write_reference(folder, manifest: dict, features, labels, sources, seed: int = 0) -> dict:
    """Choose a reference set among these examples (choose_reference), write it as folder/reference.npz, declare
    it in `manifest` (written back to folder/model.json) and return the manifest."""
    from pathlib import Path

    from .manifest import MANIFEST_FILE, check_manifest, manifest_bytes

    chosen = choose_reference(labels, sources, len(manifest["classes"]), seed)
    data, entry = reference_files(np.asarray(features)[chosen], np.asarray(labels)[chosen], manifest["classes"])
    manifest = check_manifest({**manifest, "reference": entry, "rendernet_version": __version__})
    (Path(folder) / REFERENCE_FILE).write_bytes(data)
    (Path(folder) / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    return manifest
