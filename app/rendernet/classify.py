"""Classify one image file with a model: the shared step behind `rendernet classify` and the page."""

import time

from .errors import ImageError
from .preprocess import preprocess


def classify_file(model, name: str, data):
    """Path or bytes -> (result, pixels).

    result is {"file", "label", "probabilities", "ms"} (ms: decode + preprocess +
    forward) or {"file", "error"}; pixels is the preprocessed uint8 image or None.
    """
    started = time.perf_counter()
    try:
        pixels = preprocess(data, model.input_size)
    except ImageError as error:
        return {"file": name, "error": str(error)}, None
    result = {"file": name, **model.classify(pixels)}
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result, pixels
