"""Classify one image file with a model: the shared step behind `rendernet classify` and the page."""

import time

from .errors import ImageError
from .preprocess import preprocess


def classify_file(model, name: str, data, with_map: bool = False):
    """Path or bytes -> (result, pixels, maps).

    result is {"file", "label", "probabilities", "ms"} (ms: decode + preprocess +
    forward) or {"file", "error"}; pixels is the preprocessed uint8 image or None;
    maps, with `with_map`, the class activation map of the same pass (Model.explain)
    or None. Any failure on this one file becomes its error, so a batch goes on.
    """
    started = time.perf_counter()
    try:
        pixels = preprocess(data, model.input_size)
        probabilities, maps = model.explain(pixels) if with_map else (model.forward(pixels[None])[0], None)
        result = {"file": name, **model.describe(probabilities)}
    except ImageError as error:
        return {"file": name, "error": str(error)}, None, None
    except Exception as error:  # e.g. MemoryError: reported for this file, the batch goes on
        return {"file": name, "error": f"unexpected error: {type(error).__name__}: {error}"}, None, None
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result, pixels, maps
