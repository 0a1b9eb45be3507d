"""The one preprocessing function: any image file -> uint8 array (size, size, 3), size from the model.

Training, evaluation, the tests, the `rendernet classify` command and the browser
all call `preprocess`, so the network always sees pixels made the same way.

The rule (also written into every model manifest, see preprocessing_rule):
1. decode with Pillow (a large JPEG at a reduced scale, short side still
   >= 400 px); animated images use their first frame;
2. apply the EXIF orientation;
3. convert to RGB; transparency is composited on white; 16-bit and float images
   are scaled to 8 bits by their own value range;
4. scale so the short side is `size` px (the model's input, model.json
   input.shape; 200 for the small network, 224 for EfficientNet-Lite0) with the
   bilinear filter, then crop the centre size x size.
"""

import io

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

INPUT_SIZE = 200
MAX_PIXELS = 60_000_000


def preprocessing_rule(size: int = INPUT_SIZE) -> str:
    """The rule in words, as written into every model manifest."""
    return (f"Pillow decode (first frame; JPEG DCT-scaled to short side >= {2 * size}), EXIF transpose, RGB with alpha "
            f"on white, short side to {size} px (bilinear), centre crop {size}x{size}, uint8")


def load_image(source, reduce: bool = True, size: int = INPUT_SIZE) -> Image.Image:
    """Open a path, bytes or file object as a Pillow image, raising ImageError on bad input.

    With `reduce`, a large JPEG is decoded at a reduced scale (still >= 2x the
    input `size`) by libjpeg's DCT scaling: much faster, and part of the rule.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file (0 bytes)")
        source = io.BytesIO(bytes(source))
    try:
        image = Image.open(source)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"image too large: {width}x{height} = {width * height / 1e6:.0f} megapixels "
                f"(limit {MAX_PIXELS / 1e6:.0f})"
            )
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((values - low) * scale).round().astype(np.uint8), "L")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(source, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode `source` (path, bytes, file object or PIL image) to a uint8 (size, size, 3) array.

    `size` is the model's input size; training also keeps a larger square to cut random crops from."""
    image = source if isinstance(source, Image.Image) else load_image(source, size=size)
    try:
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        width, height = image.size
        scale = size / min(width, height)
        new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR)
        left = (new_size[0] - size) // 2
        top = (new_size[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image: {error}") from None
