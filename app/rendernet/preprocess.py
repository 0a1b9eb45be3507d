"""The one preprocessing function: any image file -> uint8 array (size, size, 3), size from the model.

Training, evaluation, the tests, the `rendernet classify` command and the browser
all call `preprocess`, so the network always sees pixels made the same way.

The rule (also written into every model manifest, see preprocessing_rule):
1. decode with Pillow (a large JPEG at a reduced scale, short side still
   >= 400 px); animated images use their first frame;
2. apply the EXIF orientation;
3. convert to RGB; transparency is composited on white; 16-bit and float images
   are scaled to 8 bits by the value range of the whole image;
4. crop the centre square (side = the short side; a converted model may ask
   for the top-left square instead, model.json "crop"), then scale it to
   `size` x `size` px (the model's input, model.json input.shape; 200 for the
   small network, 224 for EfficientNet-Lite0) with the bilinear filter.
   The code crops before it converts (only the range is read from the whole
   image): memory and time are then bounded by the square for any aspect ratio;
   images thinner than MIN_SIDE px or longer than MAX_ASPECT:1 are refused.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .manifest import CROPS

INPUT_SIZE = 200
MAX_PIXELS = 60_000_000
MAX_ASPECT = 20  # a 20:1 strip's centre square is 5 % of it: beyond that, the crop says nothing of the image
MIN_SIDE = 16
RULE_VERSION = 3  # caches of preprocessed pixels are keyed by it; 1 scaled the whole image, then cropped; 2 scaled
#                   16-bit images by the centre square's range
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
RESIZE_FILTER = Image.Resampling.BILINEAR  # the rule's filter; training's random crops scale with it too


def preprocessing_rule(size: int = INPUT_SIZE, crop: str = CROPS[0]) -> str:
    """The rule in words, as written into every model manifest."""
    return (
        f"Pillow decode (first frame; JPEG DCT-scaled to short side >= {2 * size}), EXIF transpose, {crop} square "
        f"crop, RGB with alpha on white, scaled to {size}x{size} (bilinear), uint8"
    )


def load_image(source, reduce: bool = True, size: int = INPUT_SIZE) -> Image.Image:
    """Open a path, bytes or file object as a Pillow image, raising ImageError on bad input.

    With `reduce`, a large JPEG is decoded at a reduced scale (still >= 2x the
    input `size`) by libjpeg's DCT scaling: much faster, and part of the rule.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    if byte_size(source) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(source)
        check_dimensions(*image.size)
        image.seek(0)
        if reduce:
            image.draft("RGB", (2 * size, 2 * size))
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large: {error}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image: {error}") from None
    return image


def byte_size(source) -> int | None:
    """The size of a path, bytes buffer or open file, when it can be told without reading it."""
    if isinstance(source, io.BytesIO):
        return source.getbuffer().nbytes
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source) if os.path.isfile(source) else None
    if hasattr(source, "fileno"):
        return os.fstat(source.fileno()).st_size
    return None


def check_dimensions(width: int, height: int) -> None:
    """ImageError for images too large, too thin or too elongated to classify."""
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height / 1e6:.0f} megapixels (limit {MAX_PIXELS / 1e6:.0f})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"image too small: {width}x{height} (each side needs at least {MIN_SIDE} px)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image too elongated: {width}x{height} (at most {MAX_ASPECT}:1; crop it first)")


def square(image: Image.Image, crop: str = CROPS[0]) -> Image.Image:
    """The image's centre square, or with crop="top-left" its top-left one (side = the short side)."""
    width, height = image.size
    side = min(width, height)
    left, top = ((width - side) // 2, (height - side) // 2) if crop == CROPS[0] else (0, 0)
    return image.crop((left, top, left + side, top + side))


def to_rgb(image: Image.Image, value_range=None) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on white; a 16-bit or float image is scaled from
    `value_range` (low, high), by default its own, to 0-255."""
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = map(float, value_range or image.getextrema())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((values - low) * scale).round().astype(np.uint8), "L")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(source, size: int = INPUT_SIZE, crop: str = CROPS[0]) -> np.ndarray:
    """Decode `source` (path, bytes, file object or PIL image) to a uint8 (size, size, 3) array.

    `size` is the model's input size (training also keeps a larger square to cut random crops from); `crop` the
    model's square (model.json "crop")."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, not {crop!r}")
    loaded = not isinstance(source, Image.Image)  # then it is ours to change in place: one full-size copy fewer
    image = load_image(source, size=size) if loaded else source
    try:
        check_dimensions(*image.size)
        if loaded:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)
        value_range = image.getextrema() if image.mode in HIGH_DEPTH_MODES else None
        image = to_rgb(square(image, crop), value_range)
        return np.asarray(image.resize((size, size), RESIZE_FILTER), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image: {error}") from None
