"""The one decision rule: probabilities -> label, confidence and "not sure".

Pure Python that MicroPython runs too, so the page's main thread (MicroPython,
no packages) decides exactly as the CLI, the metrics and the page's worker do.

- Two classes with a threshold t (model.json "threshold"): classes[1] when its
  probability p >= t, else classes[0]. Confidence is the distance from t,
  scaled so that t maps to 0.5 and certainty (p = 0 or 1) to 1.0:
  0.5 + 0.5 * (p - t) / (1 - t) above t, 0.5 + 0.5 * (t - p) / t below.
- Otherwise the most probable class, with its probability as confidence.
- "Not sure" when the confidence is below `sure` (the page's slider, the CLI's
  --sure; SURE by default).
- An image the user corrected ("It's real") answers with the user's label,
  certain, whatever the model says (`answer`): the item someone fixed stays fixed.
"""

from collections import namedtuple

SURE = 0.6  # default: below this confidence a result is "not sure"

Decision = namedtuple("Decision", ("label", "confidence", "not_sure"))  # str, float in [0, 1], bool


def decide(probabilities, classes, threshold=None, sure: float = SURE) -> Decision:
    """`probabilities` in class order (a sequence, or a {class: p} mapping)."""
    if isinstance(probabilities, dict):
        probabilities = [probabilities[name] for name in classes]
    probabilities = [float(p) for p in probabilities]
    if len(classes) == 2 and threshold is not None:
        p, t = probabilities[1], float(threshold)
        if p >= t:
            index, confidence = 1, 0.5 + 0.5 * (p - t) / (1 - t) if t < 1 else 1.0
        else:
            index, confidence = 0, 0.5 + 0.5 * (t - p) / t
    else:
        index = max(range(len(probabilities)), key=lambda i: probabilities[i])
        confidence = probabilities[index]
    confidence = min(max(confidence, 0.0), 1.0)
    return Decision(classes[index], confidence, confidence < sure)


def answer(probabilities, classes, threshold=None, sure: float = SURE, your_label=None) -> Decision:
    """The answer shown for an image: the user's label when they gave one (confidence 1, never "not sure"), else
    the model's decision."""
    return Decision(your_label, 1.0, False) if your_label else decide(probabilities, classes, threshold, sure)
