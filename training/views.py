"""The views of a training image that the frozen backbone sees: its cached input, or an augmented copy whose random
draws depend only on (seed, image, view), so a view is the same in any process or on any machine. Used by
features.pooled_features locally and by cluster.py on a Dask cluster's workers."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from . import data as data_module


def augmented_view(crop_source_file, size: int, rng: np.random.Generator) -> np.ndarray:
    """One random training view of an example (its cached crop source), uint8 (size, size, 3)."""
    square = data_module.read_square(Path(crop_source_file))
    side = int(rng.integers(size, square.shape[0] + 1))
    left, top = rng.integers(0, square.shape[0] - side + 1, size=2)
    pixels = data_module.random_resized_crop(square, side, left, top, size)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "JPEG", quality=int(rng.integers(70, 99)))
        pixels = np.asarray(Image.open(buffer).convert("RGB"))
    return np.ascontiguousarray(pixels)


def chunk_features(extractor, chunk, size: int, seed: int) -> np.ndarray:
    """Pooled features of one batch of views, each (index, view, cache file, crop source file): view 0 is the
    cached input, view v > 0 an augmented view whose random draws come from (seed, index, v) alone, so a view is
    the same whichever process or machine makes it."""
    pixels = np.stack(
        [
            data_module.read_square(Path(cache_file))
            if view == 0
            else augmented_view(crop_source, size, np.random.default_rng([seed, index, view]))
            for index, view, cache_file, crop_source in chunk
        ]
    )
    return np.asarray(extractor(pixels.astype(np.float32), training=False))
