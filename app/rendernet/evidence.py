"""Evidence from the file itself: what its metadata says made the image, shown beside the model's answer.

A photograph's EXIF usually names its camera (Make, Model) and exposure; a render's Software tag (EXIF, or a
PNG text chunk) often names the renderer or 3D tool. `file_evidence` reads only that and returns short texts
("Camera: Canon EOS 80D, 1/60 s, f/4, ISO 400"). It never changes the model's probability: metadata can be
stripped by any editor and written by anyone, so it is a hint for the reader, not an input of the decision.
"""

import io
import re

from PIL import Image

RENDERERS = (
    "Blender",
    "Cycles",
    "V-Ray",
    "VRay",
    "Corona",
    "Lumion",
    "Enscape",
    "Twinmotion",
    "D5 Render",
    "SketchUp",
    "3ds Max",
    "3dsmax",
    "Cinema 4D",
    "Unreal Engine",
    "KeyShot",
    "Octane",
    "Redshift",
    "Arnold",
    "Maya",
    "Houdini",
    "POV-Ray",
    "Sweet Home 3D",
    "Chaos",
    "Revit",
    "Rhino",
    "Unity",
    "Lightwave",
    "Modo",
)
MAKE, MODEL, SOFTWARE, EXIF_IFD = 0x010F, 0x0110, 0x0131, 0x8769
EXPOSURE_TIME, F_NUMBER, ISO = 0x829A, 0x829D, 0x8827
LONGEST = 60  # characters kept of any one tag


def clean(value) -> str:
    """A tag as short printable text: bytes decoded, control characters dropped, at most LONGEST characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).strip()
    return text[:LONGEST]


def exposure(exif_ifd) -> str:
    parts = []
    seconds = exif_ifd.get(EXPOSURE_TIME)
    if seconds:
        seconds = float(seconds)
        parts.append(f"1/{round(1 / seconds)} s" if 0 < seconds < 1 else f"{seconds:g} s")
    if exif_ifd.get(F_NUMBER):
        parts.append(f"f/{float(exif_ifd[F_NUMBER]):g}")
    if exif_ifd.get(ISO):
        iso = exif_ifd[ISO]
        parts.append(f"ISO {iso[0] if isinstance(iso, tuple) else iso}")
    return ", ".join(parts)


def file_evidence(source) -> dict:
    """A path or bytes -> {"camera": text} and/or {"renderer": text} from the file's metadata; {} when it names
    neither (or cannot be read: the image's own errors are preprocess's to report)."""
    try:
        with Image.open(io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source) as image:
            exif = image.getexif()
            exif_ifd = exif.get_ifd(EXIF_IFD)
            software = [clean(exif.get(SOFTWARE, ""))] + [
                clean(value) for key, value in image.info.items() if str(key).lower() in ("software", "creator tool", "tool")
            ]
            make, model = clean(exif.get(MAKE, "")), clean(exif.get(MODEL, ""))
            settings = exposure(exif_ifd)
    except Exception:  # anything odd in a file's metadata: no evidence, never an error
        return {}
    evidence = {}
    if make or model:
        camera = model if make and model.lower().startswith(make.lower().split()[0]) else f"{make} {model}".strip()
        evidence["camera"] = f"Camera: {camera}" + (f", {settings}" if settings else "")
    named = next((text for text in software if text and any(name.lower() in text.lower() for name in RENDERERS)), None)
    if named:
        evidence["renderer"] = f"Made with {named} (a 3D tool)"
    return evidence


def evidence_text(evidence: dict) -> str:
    """The evidence as one line, as the CSV and the page show it ("" when there is none)."""
    return "; ".join(evidence[key] for key in ("camera", "renderer") if key in evidence)
