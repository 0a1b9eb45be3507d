"""rendernet core: preprocessing, the weights format, the NumPy forward pass and the decision rule.

Imports NumPy, Pillow and the standard library only, so the very same files run
natively (training, tests, the `rendernet classify` command) and inside Pyodide
in the browser. Without NumPy and Pillow (build.py), only the pure-Python
modules (decision, report, manifest, errors) are usable; the page's main thread
runs MicroPython and imports only decision and errors.
"""

from .decision import Decision, decide
from .errors import ImageError, ModelError, RendernetError
from .version import __version__

try:
    from .model import Model, load_model
    from .preprocess import INPUT_SIZE, load_image, preprocess
except ImportError as error:  # no NumPy or Pillow; MicroPython's ImportError has no .name
    if getattr(error, "name", "PIL") not in ("numpy", "PIL"):
        raise

__all__ = [
    "INPUT_SIZE",
    "Decision",
    "ImageError",
    "Model",
    "ModelError",
    "RendernetError",
    "__version__",
    "decide",
    "load_image",
    "load_model",
    "preprocess",
]
