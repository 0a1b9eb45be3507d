"""The page's worker: decode, preprocess and classify images off the main thread, with the core package.

PyScript runs this file in a web worker with NumPy and Pillow (main.py starts
it). It touches no `window` or `document`, so it needs no SharedArrayBuffer and
no COOP/COEP headers: the main thread awaits the functions in __export__, and
every answer is a JSON string. Decoding, the forward pass, the thumbnail and
the heatmap all happen here, so the page keeps painting and Cancel answers
during a batch.
"""

import base64
import io
import json
import sys

import numpy as np
from PIL import Image
from pyodide.http import pyfetch
from rendernet.classify import classify_file
from rendernet.errors import ModelError
from rendernet.manifest import check_metrics
from rendernet.model import model_from_bytes
from rendernet.report import results_csv

THUMBNAIL = 96  # px, the side of the thumbnail and heatmap the page shows
state = {"model": None, "last_pixels": None}


async def fetch_bytes(url: str) -> bytes:
    response = await pyfetch(url)
    if not response.ok:
        raise ModelError(f"{url.rsplit('/', 1)[-1]}: HTTP {response.status}")
    return await response.bytes()


async def load(model_url: str) -> str:
    """Load model.json and weights.npz from `model_url` (a folder URL ending in /); answer what the page shows."""
    try:
        weights = await fetch_bytes(model_url + "weights.npz")
        model = model_from_bytes(await fetch_bytes(model_url + "model.json"), weights)
    except ModelError as error:
        return json.dumps({"error": str(error)})
    answer = {"metrics": {}}
    if "metrics" in model.manifest:  # models exported by `rendernet train` ship metrics.json
        try:
            answer["metrics"] = check_metrics(json.loads(await fetch_bytes(model_url + "metrics.json")))
        except (ModelError, ValueError) as error:
            answer["metrics_error"] = str(error)
    state["model"] = model
    manifest = {key: value for key, value in model.manifest.items() if key != "layers"}
    return json.dumps({**answer, "manifest": manifest, "layers": len(model.manifest["layers"]),
                       "weights_bytes": len(weights), "heatmaps": model.head() is not None,
                       "python": sys.version.split()[0]})


def data_url(image: Image.Image, format: str, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def heatmap(maps: np.ndarray, classes: list, label: str) -> Image.Image:
    """An RGBA overlay of the class activation map: orange where the map speaks for the shown class
    (classes[1] for two classes, else the predicted one), blue where it speaks against it."""
    target = 1 if len(classes) == 2 else classes.index(label)
    others = np.delete(maps, target, axis=-1).mean(axis=-1)
    evidence = maps[..., target] - others
    strength = evidence / max(float(np.abs(evidence).max()), 1e-6)
    rgba = np.zeros((*strength.shape, 4), np.uint8)
    rgba[..., :3] = np.where(strength[..., None] > 0, [230, 120, 20], [30, 100, 220])
    rgba[..., 3] = (np.abs(strength) * 190).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)


def classify(name: str, data) -> str:
    """One file's bytes (a JS Uint8Array) -> {"result", "thumbnail", "heatmap", "memory"} as JSON; memory: this
    worker's WebAssembly memory in bytes, which never shrinks (the page replaces a worker that grew too large)."""
    return json.dumps(classify_bytes(str(name), data.to_bytes()))


def classify_bytes(name: str, data: bytes) -> dict:
    model = state["model"]
    result, pixels, maps = classify_file(model, name, data, with_map=True)
    answer = {"result": result, "memory": memory()}
    if pixels is not None:
        state["last_pixels"] = pixels
        thumbnail = Image.fromarray(pixels).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
        answer["thumbnail"] = data_url(thumbnail, "JPEG", quality=80)
    if maps is not None:
        answer["heatmap"] = data_url(heatmap(maps, model.classes, result["label"]), "PNG")
    return answer


def warm_up() -> None:
    """Classify a small JPEG and a small WebP, as a file would be: the first image of a visit otherwise pays for
    NumPy's and the decoders' first use (about twice a warm one). The page runs it right after ready."""
    for format in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), (128, 128, 128)).save(buffer, format)
        classify_bytes("warm-up", buffer.getvalue())


def to_csv(results: str, sure: float) -> str:
    """The page's results (a JSON list) as spreadsheet-safe CSV, decided at the page's `sure` level."""
    model = state["model"]
    return results_csv(json.loads(results), model.classes, model.threshold, float(sure))


def time_forward(repeats: int = 30) -> str:
    """Milliseconds of each of `repeats` forward passes (batch 1) on the last classified image (bench/browser.py)."""
    import time

    pixels = state["last_pixels"][None]
    state["model"].forward(pixels)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        state["model"].forward(pixels)
        times.append((time.perf_counter() - started) * 1000)
    return json.dumps(times)


def memory() -> int:
    """The WebAssembly memory's size in bytes: it only grows, so it is this worker's peak."""
    import pyodide_js

    return pyodide_js._module.HEAP8.length


def profile(repeats: int = 5) -> str:
    """Milliseconds per layer type on the last classified image, and the worker's memory (bench/browser.py)."""
    return json.dumps({**state["model"].profile(state["last_pixels"][None], repeats),
                       "wasm_memory_bytes": memory()})


def ping() -> str:
    return "pong"


def crash() -> None:
    """Stop this worker as a crash would, with no answer to anything (the site tests' ?debug hook)."""
    import js

    js.close()


def modules() -> str:
    """Every file this worker has imported, relative to the standard library zip or site-packages: what
    app/page_modules.txt must list, since build.py ships only those (tests/test_site.py checks). A module
    build.py shipped as bytecode is named by its source."""
    roots = ("/lib/python312.zip/", "/site-packages/")
    paths = [(getattr(module, "__file__", None) or "").removesuffix("c") for module in list(sys.modules.values())]
    return json.dumps(sorted({path.split(root, 1)[1] for path in paths for root in roots if root in path}))


__export__ = ["load", "warm_up", "classify", "to_csv", "time_forward", "profile", "modules", "ping", "memory", "crash"]
