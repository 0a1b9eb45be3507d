"""rendernet core: preprocessing, the weights format and the NumPy forward pass.

Imports NumPy, Pillow and the standard library only, so the very same files run
natively (training, tests, the `rendernet classify` command) and inside Pyodide
in the browser.
"""

from .errors import ImageError, ModelError, RendernetError
from .model import Model, load_model
from .preprocess import INPUT_SIZE, load_image, preprocess

__all__ = [
    "INPUT_SIZE",
    "ImageError",
    "Model",
    "ModelError",
    "RendernetError",
    "load_image",
    "load_model",
    "preprocess",
]
