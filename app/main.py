"""The rendernet page: classify the user's images with the project's own Python modules.

Runs in PyScript on Pyodide, on the page's main thread. Each image is decoded
and preprocessed by rendernet.preprocess and classified by rendernet.model, the
same files training and the tests use. The work runs one image at a time with a
yield to the browser between images, so the page stays responsive and a batch
can be cancelled. Nothing is sent anywhere: files are read in the page.
"""

import asyncio
import base64
import contextlib
import csv
import io
import json
import sys
import time

import js
from PIL import Image
from pyodide.ffi import create_proxy, to_js
from pyodide.http import pyfetch
from pyscript import document, window
from rendernet.classify import classify_file
from rendernet.errors import ModelError
from rendernet.model import model_from_bytes

MODEL_DIR = "./model"
state = {"model": None, "last_pixels": None, "task": None, "queue": [], "running": False, "cancel": False,
         "results": [], "done": 0, "total": 0}


def element(element_id):
    return document.getElementById(element_id)


def set_loading(step: int, text: str, failed: bool = False) -> None:
    element("load-progress").value = step
    element("load-status").textContent = text
    if failed:
        element("loading").classList.add("failed")


# ---------------------------------------------------------------- model and "About"

async def fetch_bytes(url: str) -> bytes:
    response = await pyfetch(url)
    if not response.ok:
        raise ModelError(f"{url}: HTTP {response.status}")
    return await response.bytes()


async def load_model():
    manifest_bytes = await fetch_bytes(f"{MODEL_DIR}/model.json")
    weights_bytes = await fetch_bytes(f"{MODEL_DIR}/weights.npz")
    model = model_from_bytes(manifest_bytes, weights_bytes)
    metrics = {}
    if "metrics" in model.manifest:  # models exported by `rendernet train` ship metrics.json
        with contextlib.suppress(ModelError, ValueError):
            metrics = json.loads(await fetch_bytes(f"{MODEL_DIR}/metrics.json"))
    show_about(model, metrics, len(weights_bytes))
    return model


def html_escape(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def show_about(model, metrics: dict, weights_size: int) -> None:
    manifest = model.manifest
    test = metrics.get("test", {})
    rows = [
        ("Classes", ", ".join(model.classes)),
        ("Test accuracy", test.get("accuracy", "n/a")),
        ("Test ROC AUC", test.get("roc_auc", "n/a")),
        ("Test images", test.get("count", "n/a")),
        *[(f"Unseen source “{source}”", f"accuracy {scores['accuracy']}, ROC AUC {scores.get('roc_auc', 'n/a')} "
           f"on {scores['count']} images, with the source left out of training")
          for source, scores in {**metrics.get("held_out", {}), **metrics.get("leave_one_source_out", {})}.items()],
        ("Decision threshold", f"{model.threshold} (probability of “{model.classes[-1]}”)" if model.threshold else "argmax"),
        ("Parameters", f"{manifest.get('params', 0):,}"),
        ("Multiply-adds per image", f"{manifest.get('macs', 0):,}"),
        ("Weights size", f"{weights_size / 1024:.1f} kB"),
        ("Layers", len(manifest["layers"])),
        ("Preprocessing", manifest.get("preprocessing", "")),
        *[("Credits", credit) for credit in manifest.get("credits", [])],
    ]
    parts = ["<table>"] + [f"<tr><th scope='row'>{name}</th><td>{html_escape(value)}</td></tr>" for name, value in rows]
    parts.append("</table>")
    confusion = test.get("confusion")
    if confusion:
        parts.append("<p>Confusion matrix on the test split (rows: actual, columns: predicted)</p><table><tr><th></th>")
        parts += [f"<th scope='col'>{html_escape(name)}</th>" for name in model.classes] + ["</tr>"]
        for name, row in zip(model.classes, confusion, strict=False):
            parts.append(f"<tr><th scope='row'>{html_escape(name)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    element("about-body").innerHTML = "".join(parts)


# ---------------------------------------------------------------- results

def sure_threshold() -> float:
    return int(element("sure-threshold").value) / 100


def thumbnail(pixels) -> str:
    """A small JPEG data URL of exactly what the model saw (the preprocessed crop)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((96, 96), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def add_row(result: dict, image_url) -> None:
    row = document.createElement("tr")
    row.dataset.result = json.dumps(result)
    name = html_escape(result["file"])
    if "error" in result:
        row.className = "failed"
        row.innerHTML = (f"<td></td><td class='file'>{name}</td><td><span class='label error'>Could not read: "
                         f"{html_escape(result['error'])}</span></td><td></td><td></td>")
    else:
        top = max(result["probabilities"].values())
        unsure = top < sure_threshold()
        label = f"Not sure (maybe {result['label']})" if unsure else result["label"]
        percent = round(100 * result["probabilities"][result["label"]])
        row.innerHTML = (
            f"<td><img src='{image_url}' alt='preprocessed {name}'></td><td class='file'>{name}</td>"
            f"<td><span class='label{' unsure' if unsure else ''}'>{html_escape(label)}</span></td>"
            f"<td><div class='bar' role='img' aria-label='{percent}% {html_escape(result['label'])}'>"
            f"<span style='width:{percent}%'></span></div>{percent}% {html_escape(result['label'])}</td>"
            f"<td>{result['ms']:.0f} ms</td>")
    element("results").tBodies[0].appendChild(row)
    for button in ("download-csv", "clear"):
        element(button).disabled = False


def classify_one(name: str, data: bytes) -> None:
    result, pixels = classify_file(state["model"], name, data)
    image_url = None
    if pixels is not None:
        state["last_pixels"] = pixels
        image_url = thumbnail(pixels)
    state["results"].append(result)
    add_row(result, image_url)


def update_batch() -> None:
    element("batch").hidden = state["total"] == 0
    element("batch-progress").max = max(state["total"], 1)
    element("batch-progress").value = state["done"]
    element("batch-status").textContent = (
        f"{state['done']} of {state['total']} classified" + (" — cancelled" if state["cancel"] else ""))


async def run_queue() -> None:
    """Classify queued files one at a time, yielding to the browser between them."""
    if state["running"]:
        return
    state["running"], state["cancel"] = True, False
    element("cancel").disabled = False
    try:
        while state["queue"] and not state["cancel"]:
            file = state["queue"].pop(0)
            try:
                buffer = await file.arrayBuffer()
                data = js.Uint8Array.new(buffer).to_bytes()
            except Exception as error:  # the browser could not read the file at all
                result = {"file": file.name, "error": f"the browser could not read the file ({error})"}
                state["results"].append(result)
                add_row(result, None)
            else:
                classify_one(file.name, data)
            state["done"] += 1
            update_batch()
            await asyncio.sleep(0)
    finally:
        state["queue"].clear()
        state["running"] = False
        element("cancel").disabled = True
        update_batch()


def enqueue(files) -> None:
    files = [files.item(index) for index in range(files.length)]
    if not files or state["model"] is None:
        return
    if not state["running"]:
        state["done"], state["total"] = 0, 0
    state["queue"] += files
    state["total"] += len(files)
    update_batch()
    state["task"] = asyncio.ensure_future(run_queue())


# ---------------------------------------------------------------- events

def on_files_chosen(event):
    enqueue(event.target.files)
    event.target.value = ""


def on_drop(event):
    event.preventDefault()
    element("drop-zone").classList.remove("dragging")
    enqueue(event.dataTransfer.files)


def on_drag_over(event):
    event.preventDefault()
    element("drop-zone").classList.add("dragging")


def on_drag_leave(event):
    element("drop-zone").classList.remove("dragging")


def on_paste(event):
    if event.clipboardData and event.clipboardData.files.length:
        event.preventDefault()
        enqueue(event.clipboardData.files)


def on_drop_zone_key(event):
    if event.key in ("Enter", " "):
        event.preventDefault()
        element("file-input").click()


def on_cancel(event):
    state["cancel"] = True
    state["queue"].clear()
    update_batch()


def on_threshold(event):
    element("sure-value").textContent = element("sure-threshold").value


def on_clear(event):
    state["results"].clear()
    element("results").tBodies[0].innerHTML = ""
    state["done"], state["total"] = 0, 0
    update_batch()
    for button in ("download-csv", "clear"):
        element(button).disabled = True


def results_csv() -> str:
    classes = state["model"].classes
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "label", "not_sure", *[f"p_{name}" for name in classes], "ms", "error"])
    for result in state["results"]:
        probabilities = result.get("probabilities", {})
        top = max(probabilities.values()) if probabilities else None
        writer.writerow([result["file"], result.get("label", ""), "" if top is None else top < sure_threshold(),
                         *[probabilities.get(name, "") for name in classes], result.get("ms", ""),
                         result.get("error", "")])
    return out.getvalue()


def on_download(event):
    blob = js.Blob.new(to_js([results_csv()]), to_js({"type": "text/csv"}, dict_converter=js.Object.fromEntries))
    link = document.createElement("a")
    link.href = js.URL.createObjectURL(blob)
    link.download = "rendernet-results.csv"
    link.click()
    js.setTimeout(create_proxy(lambda: js.URL.revokeObjectURL(link.href)), 1000)


def connect() -> None:
    handlers = [("file-input", "change", on_files_chosen), ("drop-zone", "drop", on_drop),
                ("drop-zone", "dragover", on_drag_over), ("drop-zone", "dragleave", on_drag_leave),
                ("drop-zone", "keydown", on_drop_zone_key), ("cancel", "click", on_cancel),
                ("sure-threshold", "input", on_threshold), ("clear", "click", on_clear),
                ("download-csv", "click", on_download)]
    for element_id, event_name, handler in handlers:
        element(element_id).addEventListener(event_name, create_proxy(handler))
    document.addEventListener("paste", create_proxy(on_paste))
    window.rendernet_csv = create_proxy(results_csv)
    window.rendernet_time_forward = create_proxy(time_forward)
    window.rendernet_profile = create_proxy(profile_layers)


def time_forward(repeats: int = 30):
    """Milliseconds of each of `repeats` forward passes (batch 1) on the last classified image (bench/browser.py)."""
    pixels = state["last_pixels"][None]
    state["model"].forward(pixels)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        state["model"].forward(pixels)
        times.append((time.perf_counter() - started) * 1000)
    return to_js(times)


def profile_layers(repeats: int = 5):
    """Milliseconds per layer type on the last classified image, and the WebAssembly memory size in bytes,
    which only grows, so it is the page's peak (bench/browser.py)."""
    result = dict(state["model"].profile(state["last_pixels"][None], repeats))
    with contextlib.suppress(ImportError, AttributeError):
        import pyodide_js

        result["wasm_memory_bytes"] = pyodide_js._module.HEAP8.length
    return to_js(result, dict_converter=js.Object.fromEntries)


# ---------------------------------------------------------------- start

async def start() -> None:
    timings = {"python_started": js.performance.now()}  # ms since navigation, read by bench/browser.py
    element("python-version").textContent = sys.version.split()[0]
    set_loading(2, "Loading the model…")
    try:
        state["model"] = await load_model()
    except ModelError as error:
        set_loading(2, f"The model could not be loaded: {error}", failed=True)
        return
    timings["model_loaded"] = js.performance.now()
    set_loading(3, "Preparing offline use…")
    await window.rendernetEnableOffline()
    connect()
    element("file-input").disabled = False
    set_loading(4, f"Ready: choose images to classify as {' or '.join(state['model'].classes)}.")
    element("loading").classList.add("ready")
    timings["ready"] = js.performance.now()
    window.rendernet_timings = to_js(timings, dict_converter=js.Object.fromEntries)
    document.body.dataset.state = "ready"


await start()
