"""Training's costly step on a Dask cluster (`rendernet train --scheduler tcp://HOST:8786`): the frozen backbone's
pass over every image and its augmented views.

The client saves the feature extractor (the backbone up to `pool`) as a .keras file and sends its bytes to every
worker once; each worker loads it once and runs batches of views, the same batches as a local run, whose random
draws depend only on (seed, image, view): the features are the local run's. Workers need the `train` and
`cluster` extras and must read the preprocessed cache files at the same paths as the client (shared storage).
"""

import hashlib
import tempfile
from pathlib import Path

import keras
from rendernet.cluster import submitted_in_order

from .views import chunk_features

BATCHES_IN_FLIGHT_PER_THREAD = 2
_extractors = {}  # on a worker: the .keras bytes' sha256 -> the loaded extractor


def model_files(data: bytes) -> bytes:
    return data


def extractor_on_worker(model_bytes: bytes):
    key = hashlib.sha256(model_bytes).hexdigest()
    if key not in _extractors:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "extractor.keras"
            path.write_bytes(model_bytes)
            _extractors[key] = keras.saving.load_model(path, compile=False)
    return _extractors[key]


def batch_on_worker(model_bytes: bytes, chunk, size: int, seed: int):
    return chunk_features(extractor_on_worker(model_bytes), chunk, size, seed)


def features_on_cluster(client, extractor, chunks, size: int, seed: int):
    """Yield each chunk's features (views.chunk_features), in order, computed on the client's workers."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "extractor.keras"
        extractor.save(path)
        shared = client.submit(model_files, path.read_bytes(), pure=False)  # recomputable if its holders die
    calls = ((batch_on_worker, shared, chunk, size, seed) for chunk in chunks)
    for _, future in submitted_in_order(client, calls, BATCHES_IN_FLIGHT_PER_THREAD):
        yield future.result()
