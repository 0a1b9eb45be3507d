"""The page's worker: decode, preprocess and classify images off the main thread, with the core package.

PyScript runs this file in a web worker with NumPy and Pillow (main.py starts
it). It touches no `window` or `document`, so it needs no SharedArrayBuffer and
no COOP/COEP headers: the main thread awaits the functions in __export__, and
every answer is a JSON string. Decoding, the forward pass, the thumbnail and
the heatmap all happen here, so the page keeps painting and Cancel answers
during a batch.

It also holds the adaptation (rendernet.adapt.Adaptation): the pooled features
of every classified image, by the page's row id, and the user's corrections,
which it keeps in the browser's IndexedDB under the base model's weights
sha256 (feature vectors, classes, file names and times; never pixels).
"""

import asyncio
import base64
import io
import json
import sys
import time
import zipfile

import js
import numpy as np
from PIL import Image
from pyodide.ffi import create_proxy
from pyodide.http import pyfetch
from rendernet.adapt import Adaptation, adapted_model_files, decode_features, encode_features, parse_document
from rendernet.calls import WORKER_CALLS
from rendernet.classify import classify_file
from rendernet.errors import ModelError
from rendernet.manifest import MANIFEST_FILE, MODEL_FILES, REFERENCE_FILE, WEIGHTS_FILE, check_metrics, read_manifest
from rendernet.model import model_from_bytes
from rendernet.report import results_csv

THUMBNAIL = 96  # px, the side of the thumbnail and heatmap the page shows
DATABASE, STORE = "rendernet", "corrections"  # IndexedDB: key "corrections:<sha256>" -> the corrections document
state = {"model": None, "files": None, "last_pixels": None, "adaptation": None, "database": None}


async def fetch_bytes(url: str) -> bytes:
    response = await pyfetch(url)
    if not response.ok:
        raise ModelError(f"{url.rsplit('/', 1)[-1]}: HTTP {response.status}")
    return await response.bytes()


async def load(model_url: str) -> str:
    """Load model.json and weights.npz from `model_url` (a folder URL ending in /); answer what the page shows."""
    try:
        files = {name: await fetch_bytes(model_url + name) for name in (MANIFEST_FILE, WEIGHTS_FILE)}
        if "reference" in read_manifest(files[MANIFEST_FILE]):
            files[REFERENCE_FILE] = await fetch_bytes(model_url + REFERENCE_FILE)
        model = model_from_bytes(*(files.get(name) for name in MODEL_FILES))
    except ModelError as error:
        return json.dumps({"error": str(error)})
    weights = files[WEIGHTS_FILE]
    answer = {"metrics": {}}
    if "metrics" in model.manifest:  # models exported by `rendernet train` ship metrics.json
        try:
            answer["metrics"] = check_metrics(json.loads(await fetch_bytes(model_url + "metrics.json")))
        except (ModelError, ValueError) as error:
            answer["metrics_error"] = str(error)
    state["model"], state["files"] = model, files  # the base model's files, for adapted_model
    try:
        state["adaptation"] = Adaptation(model)
    except ModelError as error:
        answer["not_adaptable"] = str(error)
    shown = {key: value for key, value in model.manifest.items() if key != "layers"}
    return json.dumps(
        {
            **answer,
            "manifest": shown,
            "layers": len(model.manifest["layers"]),
            "weights_bytes": len(weights),
            "heatmaps": model.head() is not None,
            "python": sys.version.split()[0],
        }
    )


def data_url(image: Image.Image, format: str, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def heatmap(maps: np.ndarray, classes: list, label: str, size: int = THUMBNAIL) -> Image.Image:
    """An RGBA overlay of the class activation map: orange where the map speaks for the shown class
    (classes[1] for two classes, else the predicted one), blue where it speaks against it."""
    target = 1 if len(classes) == 2 else classes.index(label)
    others = np.delete(maps, target, axis=-1).mean(axis=-1)
    evidence = maps[..., target] - others
    strength = evidence / max(float(np.abs(evidence).max()), 1e-6)
    rgba = np.zeros((*strength.shape, 4), np.uint8)
    rgba[..., :3] = np.where(strength[..., None] > 0, [230, 120, 20], [30, 100, 220])
    rgba[..., 3] = (np.abs(strength) * 190).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").resize((size, size), Image.Resampling.BILINEAR)


def classify(name: str, data, row: int = -1) -> str:
    """One file's bytes (a JS Uint8Array) -> {"result", "thumbnail", "heatmap", "features", "shipped", "memory"} as
    JSON. With the adaptation, its features are kept for row `row` and sent along (base64, for a new worker, see
    remember), and "shipped" is the shipped head's probabilities. memory: this worker's WebAssembly memory in
    bytes, which never shrinks (the page replaces a worker that grew too large)."""
    return json.dumps(classify_bytes(str(name), data.to_bytes(), int(row)))


def classify_bytes(name: str, data: bytes, row: int = -1) -> dict:
    model, adaptation = state["model"], state["adaptation"]
    result, pixels, explanation = classify_file(model, name, data, explain=True)
    answer = {"result": result, "memory": memory()}
    if pixels is not None:
        state["last_pixels"] = pixels
        thumbnail = Image.fromarray(pixels).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
        answer["thumbnail"] = data_url(thumbnail, "JPEG", quality=80)
    if explanation is not None and explanation.maps is not None:
        answer["heatmap"] = data_url(heatmap(explanation.maps, model.classes, result["label"]), "PNG")
    if explanation is not None and adaptation is not None and row >= 0:
        adaptation.remember(row, explanation.pooled)
        answer["features"] = encode_features(explanation.pooled)
        answer["shipped"] = adaptation.shipped(explanation.pooled)
    return answer


def view(name: str, data) -> str:
    """One file, large: {"image": the model's input as a PNG data URL, "heatmap": the same with its class
    activation map over it, "label"} as JSON (the page's viewer); {"error"} when it cannot be read."""
    model = state["model"]
    result, pixels, explanation = classify_file(model, str(name), data.to_bytes(), explain=True)
    if pixels is None:
        return json.dumps({"error": result.get("error", "no image")})
    image = Image.fromarray(pixels).convert("RGBA")
    answer = {"image": data_url(image.convert("RGB"), "PNG"), "label": result["label"]}
    if explanation is not None and explanation.maps is not None:
        overlay = heatmap(explanation.maps, model.classes, result["label"], model.input_size)
        answer["heatmap"] = data_url(Image.alpha_composite(image, overlay).convert("RGB"), "PNG")
    return json.dumps(answer)


async def warm_up() -> None:
    """Load Pyodide's OpenBLAS for the forward pass's matrix products (layers.use_blas; loadPackage checks the file
    against the lock's sha256, after the integrity gate), then classify a small JPEG and a small WebP, as a file
    would be: the first image of a visit otherwise pays for NumPy's and the decoders' first use (about twice a warm
    one). The page runs it right after ready, without waiting: a file chosen meanwhile runs without BLAS. Why
    OpenBLAS could not be used, if it could not, is kept for `matmul` (the pass then keeps NumPy's own loops)."""
    import pyodide_js
    from rendernet.layers import use_blas

    try:
        await pyodide_js.loadPackage("openblas")
        use_blas()
    except Exception as error:  # a page without the library still classifies, at NumPy's speed
        state["no_blas"] = str(error)
    for format in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), (128, 128, 128)).save(buffer, format)
        classify_bytes("warm-up", buffer.getvalue())


def to_csv(results: str, sure: float) -> str:
    """The page's results (a JSON list, each with its "row") as spreadsheet-safe CSV, decided at the page's `sure`
    level, with the model that answered and the user's corrections."""
    model, adaptation = state["model"], state["adaptation"]
    rows = json.loads(results)
    for result in rows:
        if adaptation is not None and "error" not in result:
            result["model"] = adaptation.description()
            result["your_label"] = adaptation.label_of(result.get("row"))
    return results_csv(rows, model.classes, model.threshold, float(sure))


# ---------------------------------------------------------------- adaptation


def adaptation_answer(**extra) -> str:
    """What the page shows after a change: the adaptation's summary, every row's probabilities, and the head (for
    the pool's other workers), with `extra` (a notice that the corrections could not be kept, ...)."""
    adaptation = state["adaptation"]
    return json.dumps({**extra, **adaptation.summary(), "probabilities": adaptation.probabilities(), "head": head()})


def rescore() -> str:
    """What the page shows after a change, asked again: every row's probabilities with the current head."""
    return adaptation_answer()


def head() -> str:
    """The current head (adapted or shipped) as JSON: kernel_t and bias, each base64 float32 (encode_features)."""
    dense = state["model"].head()
    return json.dumps({"kernel_t": encode_features(dense.kernel_t.ravel()), "bias": encode_features(dense.bias)})


def set_head(text: str) -> None:
    """Classify with another worker's head (the pool's workers follow slot 0's adaptation)."""
    dense, encoded = state["model"].head(), json.loads(str(text))
    classes, size = dense.kernel_t.shape
    state["model"].set_head(
        decode_features(encoded["kernel_t"], classes * size).reshape(classes, size), decode_features(encoded["bias"], classes)
    )


async def correct(row: int, label, file: str) -> str:
    """Row `row`'s image is of class `label` (None: withdraw its correction): re-fit, re-score, keep."""
    state["adaptation"].correct(int(row), None if label is None else str(label), str(file), time.time() * 1000)
    return adaptation_answer(**await saved())


async def undo() -> str:
    state["adaptation"].undo()
    return adaptation_answer(**await saved())


async def reset() -> str:
    state["adaptation"].reset()
    return adaptation_answer(**await saved())


async def add_corrections(name: str, text: str) -> str:
    """Merge a corrections file (a colleague's download) into this browser's corrections: re-fit, re-score, keep.
    A file that cannot be used changes nothing and says why ("added_problem")."""
    name, text = str(name), str(text)
    try:
        added = state["adaptation"].add(parse_document(text))
    except ModelError as error:
        return adaptation_answer(added_problem=f"{name} could not be added: {error}")
    return adaptation_answer(added={**added, "file": name}, **await saved())


def corrections_text() -> str:
    """This browser's corrections as a document (JSON): what a colleague adds with "Add corrections from a file"
    or `rendernet adapt --examples`."""
    return json.dumps(state["adaptation"].document(), indent=1)


def forget_rows() -> None:
    state["adaptation"].forget_rows()


def remember(row: int, features: str) -> None:
    """Give a new worker the features of a row an earlier worker classified."""
    state["adaptation"].remember_encoded(int(row), str(features))


def adapted_model() -> str:
    """The adapted model as a zip (model.json, weights.npz and the reference set, in a folder), base64."""
    model, adaptation = state["model"], state["adaptation"]
    dense = model.head()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in adapted_model_files(model, state["files"], dense.kernel_t, dense.bias, adaptation.counts()).items():
            archive.writestr(f"rendernet-adapted/{name}", data)
    return base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------- keeping the corrections (IndexedDB)


class StoreError(Exception):
    pass


def settled(request, success: str = "onsuccess", failure: str = "onerror") -> asyncio.Future:
    """A future of an IndexedDB request's result (or of a transaction's end, success="oncomplete"). Its handlers
    are set at once: a transaction ends at the first await that leaves it no request pending."""
    future = asyncio.get_running_loop().create_future()

    def succeeded(event):
        if not future.done():
            future.set_result(getattr(request, "result", None))

    def failed(event):
        if not future.done():
            future.set_exception(StoreError(str(getattr(request, "error", None) or "failed")))

    handlers = [create_proxy(succeeded), create_proxy(failed)]
    setattr(request, success, handlers[0])
    setattr(request, failure, handlers[1])
    future.add_done_callback(lambda _: [handler.destroy() for handler in handlers])
    return future


async def store(mode: str = "readonly"):
    """(transaction, object store) of the corrections database, opened (and created) once."""
    if state["database"] is None:
        if not hasattr(js, "indexedDB") or js.indexedDB is None:
            raise StoreError("this browser offers no IndexedDB here")
        request = js.indexedDB.open(DATABASE, 1)
        create = create_proxy(lambda event: request.result.createObjectStore(STORE))
        request.onupgradeneeded = create
        try:
            state["database"] = await settled(request)
        finally:
            create.destroy()
    transaction = state["database"].transaction(STORE, mode)
    return transaction, transaction.objectStore(STORE)


def key_of(sha256: str) -> str:
    return "corrections:" + sha256


def not_kept(error) -> dict:
    return {"not_kept": f"your corrections cannot be kept in this browser ({error})"}


async def saved() -> dict:
    """Write the corrections to IndexedDB: {} or, when that failed, not_kept's notice."""
    try:
        transaction, objects = await store("readwrite")
        objects.put(json.dumps(state["adaptation"].document()), key_of(state["model"].manifest["weights"]["sha256"]))
        await settled(transaction, "oncomplete", "onabort")
    except Exception as error:  # a full disk, storage switched off: the adaptation lasts for this visit
        return not_kept(error)
    return {}


def kept_document(value) -> dict:
    """A value kept in IndexedDB as the corrections document it should be; ModelError saying why it is not (not
    text, or what parse_document refuses)."""
    if not isinstance(value, str):
        raise ModelError(f"the kept corrections are not text but {getattr(value, 'typeof', type(value).__name__)}")
    try:
        return parse_document(value)
    except ModelError as error:
        raise ModelError(f"the kept corrections: {error}") from None


async def restore() -> str:
    """Bring back the corrections kept for this model, and list the kept ones it cannot use: made with another
    model, or damaged (set aside under their own key, the original value as it was, never deleted)."""
    adaptation, sha256 = state["adaptation"], state["model"].manifest["weights"]["sha256"]
    answer = {"others": []}
    try:
        transaction, objects = await store()
        keys, values = settled(objects.getAllKeys()), settled(objects.getAll())  # both asked before any await
        keys, values = await keys, await values
        keys = [str(key) for key in keys.to_py()]
        if key_of(sha256) in keys:
            original = values[keys.index(key_of(sha256))]  # a string, or the JS value itself (never converted)
            try:
                adaptation.restore(kept_document(original))
            except (ValueError, TypeError, ModelError) as error:
                answer["problem"] = str(error)
                aside = f"set-aside:{sha256}:{time.strftime('%Y-%m-%dT%H-%M-%S')}"
                transaction, objects = await store("readwrite")
                objects.put(original, aside)
                objects.delete(key_of(sha256))
                await settled(transaction, "oncomplete", "onabort")
                keys[keys.index(key_of(sha256))] = aside
        for key in sorted(keys):
            if key != key_of(sha256):
                answer["others"].append({"key": key, "damaged": key.startswith("set-aside:")})
    except Exception as error:
        answer.update(not_kept(error))
    return adaptation_answer(**answer)


async def kept(key: str) -> str:
    """The text kept under `key` (for the page's "Download" of corrections it cannot use)."""
    _, objects = await store()
    value = await settled(objects.get(str(key)))
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return str(js.JSON.stringify(value))  # a value that is not text, kept as it was found
    except Exception:
        return str(value)


def matmul() -> str:
    """What the forward pass's matrix products run on: "openblas" once warm_up has loaded it, else "einsum" (and
    why, when loading it failed)."""
    from rendernet.layers import BLAS

    return "openblas" if BLAS else "einsum" + (f" (OpenBLAS could not be loaded: {state['no_blas']})" if "no_blas" in state else "")


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


def time_adaptation(rows: int = 500, corrections: int = 6, repeats: int = 5) -> str:
    """Milliseconds (each of `repeats`) to re-fit the head on `corrections` and re-score `rows` rows, on random
    features, as a correction does (bench/browser.py); the page's own adaptation is put back afterwards."""
    scratch = Adaptation(state["model"])
    scratch.base = state["adaptation"].base
    size = scratch.base[0].shape[1]
    features = ((np.arange((int(rows) + int(corrections)) * size) * 0.6180339887) % 1.0).reshape(-1, size)  # spread
    for row in range(int(rows)):
        scratch.remember(row, features[row])
    scratch.corrections = [
        {"features": encode_features(features[rows + i]), "label": state["model"].classes[i % 2], "file": "x", "time": 0}
        for i in range(int(corrections))
    ]
    times = []
    for _ in range(int(repeats)):
        started = time.perf_counter()
        scratch.refit()
        scratch.probabilities()
        times.append((time.perf_counter() - started) * 1000)
    state["adaptation"].refit()
    return json.dumps(times)


def memory() -> int:
    """The WebAssembly memory's size in bytes: it only grows, so it is this worker's peak."""
    import pyodide_js

    return pyodide_js._module.HEAP8.length


def profile(repeats: int = 5) -> str:
    """Milliseconds per layer type on the last classified image, and the worker's memory (bench/browser.py)."""
    return json.dumps({**state["model"].profile(state["last_pixels"][None], repeats), "wasm_memory_bytes": memory()})


def ping() -> str:
    return "pong"


def hold(name: str) -> None:
    """Hold the Web Lock `name` for as long as this worker lives: the browser releases it when the worker ends,
    which is how the page notices at once that it died (index.html's rendernetWatchLife)."""
    forever = create_proxy(lambda resolve, reject: None)  # a promise never settled: the lock is never given back
    js.navigator.locks.request(name, create_proxy(lambda lock: js.Promise.new(forever)))


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


__export__ = list(WORKER_CALLS)
