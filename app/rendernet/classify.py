"""Classify one image file with a model: the shared step behind `rendernet classify` and the page."""

import time

from .errors import ImageError
from .evidence import file_evidence
from .preprocess import preprocess


def classify_file(model, name: str, data, explain: bool = False):
    """Path or bytes -> (result, pixels, explanation).

    result is {"file", "label", "probabilities", "ms"} (ms: decode + preprocess +
    forward), with "evidence" when the file's metadata names a camera or a 3D tool
    (evidence.file_evidence), or {"file", "error"}; pixels is the preprocessed uint8 image or None;
    explanation, with `explain`, the same pass's Model.explain (the class activation
    map and the pooled features) or None. Any failure on this one file becomes its
    error, so a batch goes on.
    """
    started = time.perf_counter()
    try:
        pixels = preprocess(data, model.input_size, model.crop)
        explanation = model.explain(pixels) if explain else None
        probabilities = explanation.probabilities if explain else model.forward(pixels[None])[0]
        result = {"file": name, **model.describe(probabilities)}
    except ImageError as error:
        return {"file": name, "error": str(error)}, None, None
    except Exception as error:  # e.g. MemoryError: reported for this file, the batch goes on
        return {"file": name, "error": f"unexpected error: {type(error).__name__}: {error}"}, None, None
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    evidence = file_evidence(data)  # beside the answer, never part of it
    if evidence:
        result["evidence"] = evidence
    return result, pixels, explanation
