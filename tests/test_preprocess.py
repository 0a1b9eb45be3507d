"""The one preprocessing function: every Pillow mode, EXIF, alpha, animation, bad files."""

import io

import numpy as np
import pytest
from PIL import Image
from rendernet import ImageError, preprocess
from rendernet.preprocess import INPUT_SIZE, MAX_ASPECT, MAX_PIXELS


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def gradient(width=300, height=240) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


MODES = {
    "1": lambda: Image.fromarray(gradient()).convert("1"),
    "L": lambda: Image.fromarray(gradient()).convert("L"),
    "LA": lambda: Image.fromarray(gradient()).convert("LA"),
    "P": lambda: Image.fromarray(gradient()).convert("P"),
    "RGB": lambda: Image.fromarray(gradient()),
    "RGBA": lambda: Image.fromarray(gradient()).convert("RGBA"),
    "CMYK": lambda: Image.fromarray(gradient()).convert("CMYK"),
    "I;16": lambda: Image.fromarray(gradient()[..., 0].astype(np.uint16) * 257),
    "I": lambda: Image.fromarray(gradient()[..., 0].astype(np.int32) * 1000),
    "F": lambda: Image.fromarray(gradient()[..., 0].astype(np.float32) / 255),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_becomes_rgb_uint8(mode):
    image = MODES[mode]()
    assert image.mode == mode
    out = preprocess(image)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3) and out.dtype == np.uint8
    assert out.std() > 10, "the picture's content survives conversion"


@pytest.mark.parametrize(
    "mode, format",
    [("I;16", "PNG"), ("I;16", "TIFF"), ("CMYK", "TIFF"), ("CMYK", "JPEG"), ("P", "PNG"), ("LA", "PNG"), ("F", "TIFF")],
)
def test_modes_through_files(mode, format):
    out = preprocess(encode(MODES[mode](), format))
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_depth_is_scaled_by_the_whole_image_range_then_cropped(mode):
    """As the rule says: converted to 8 bits by the whole image's range, then the centre square. The centre of this
    wide ramp holds only the middle of the range, so it must stay mid-grey (not be stretched to 0-255)."""
    ramp = np.tile(np.linspace(0, 60000, 600), (200, 1))
    image = Image.fromarray(ramp.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    assert image.mode == mode
    eight_bit = Image.fromarray((ramp * (255 / 60000)).round().astype(np.uint8), "L")
    out = preprocess(encode(image, "TIFF" if mode == "F" else "PNG"))
    assert np.array_equal(out, preprocess(eight_bit))
    assert out.min() >= 80 and out.max() <= 175


def test_transparency_is_composited_on_white():
    transparent = Image.new("RGBA", (250, 250), (255, 0, 0, 0))
    assert (preprocess(encode(transparent, "PNG")) == 255).all()
    palette = Image.new("P", (250, 250), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0
    assert (preprocess(encode(palette, "PNG", transparency=0)) == 255).all()


def test_exif_orientation_is_applied():
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, :200] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = preprocess(encode(Image.fromarray(pixels), "PNG", exif=exif))
    plain = preprocess(encode(Image.fromarray(pixels), "PNG"))
    # displayed upright the white half is on top; without EXIF it is on the left
    assert rotated[:50].mean() > 200 and rotated[-50:].mean() < 50
    assert plain[:, :50].mean() > 200 and plain[:, -50:].mean() < 50


def test_rule_is_centre_square_then_scale():
    pixels = np.zeros((200, 600, 3), np.uint8)
    pixels[:, 200:400] = 255  # only the centre third is white
    assert (preprocess(Image.fromarray(pixels)) == 255).all()
    assert preprocess(Image.fromarray(np.zeros((300, 301, 3), np.uint8)), 224).shape == (224, 224, 3)


# Strips whose short-side-first resize would need gigabytes: refused from the header, before decoding.
STRIPS = {
    (20000, 1): "too small",
    (60000, 1): "too small",
    (1, 60000): "too small",
    (100_000, 2): "too small",
    (MAX_ASPECT * 16 + 1, 16): "too elongated",
    (16, 4000): "too elongated",
}


@pytest.mark.parametrize("size", STRIPS)
def test_extreme_strips_are_refused_clearly(size):
    data = encode(Image.new("RGB", size), "PNG")
    with pytest.raises(ImageError, match=STRIPS[size]):
        preprocess(data)


def test_longest_accepted_strip_is_classified_from_its_centre():
    pixels = np.zeros((16, 16 * MAX_ASPECT, 3), np.uint8)
    pixels[:, 8 * MAX_ASPECT - 8 : 8 * MAX_ASPECT + 8] = 255  # the centre square is white
    assert (preprocess(encode(Image.fromarray(pixels), "PNG"), 224) == 255).all()


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (220, 220), color) for color in ((0, 0, 0), (255, 255, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert preprocess(data).max() == 0


def test_bad_files_raise_image_error(tmp_path):
    good = encode(Image.fromarray(gradient()), "JPEG")
    cases = {
        "zero bytes": b"",
        "not an image": b"hello, this is text\n" * 20,
        "truncated": good[: len(good) // 3],
        "corrupt": good[:200] + bytes(range(256)) * 20,
    }
    for name, data in cases.items():
        with pytest.raises(ImageError):
            preprocess(data)
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError):
            preprocess(tmp_path / name)


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    bomb = encode(Image.new("1", (side, side)), "PNG")
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match="too large"):
        preprocess(bomb)


def test_same_file_same_pixels_from_path_and_bytes(tmp_path):
    data = encode(Image.fromarray(gradient(640, 480)), "JPEG", quality=90)
    (tmp_path / "x.jpg").write_bytes(data)
    assert np.array_equal(preprocess(data), preprocess(tmp_path / "x.jpg"))
