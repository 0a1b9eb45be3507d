"""The rendernet page: the user interface, on the main thread; the work runs in worker.py.

PyScript runs this file on the page's main thread in MicroPython, which starts
in a few milliseconds and leaves the CPU to the worker's Pyodide (NumPy, Pillow
and the core package); the code keeps to what MicroPython and CPython share (no
`[*a, b]`, `{**a}`, quotes with a colon inside an f-string's braces, `typing`).
It hands the workers one file at a time each and draws the answers in the
order the files were added: slot 0, the page's worker, and for a batch of
more than one file up to pool_size - 1 more, started when a batch first needs
them (each its own Pyodide with the model and the current head). Everything is
built from DOM nodes with `textContent` and attributes, never from HTML
strings, so a file name, a class name or a metric can hold any characters.
Labels, "not sure" and the summary come from rendernet.decision with the
slider's current value; the worker writes the CSV with the same rule and
value. Nothing is sent anywhere: files are read in the page and classified in
its worker. A correction ("it's real") goes to the worker, which adapts the
model's head (rendernet.adapt), keeps the corrections in the browser and
re-scores every row; the page redraws the rows and marks those that changed.
"""

import asyncio
import json

import js
from pyscript import document, when, window
from pyscript.ffi import create_proxy, to_js
from rendernet.decision import answer, decide

PARAMETERS = js.URLSearchParams.new(js.location.search)
DEBUG = PARAMETERS.has("debug")  # ?debug exposes test and benchmark hooks (and &file_seconds=N, &workers=N)
WORKER_SECONDS = 120  # deadlines: the worker's start (Pyodide, NumPy, Pillow, the core),
MODEL_SECONDS = 30  # loading the model,
FILE_SECONDS = int(PARAMETERS.get("file_seconds") or 120) if DEBUG else 120  # one file (a 60-megapixel PNG: ~10 s),
PING_SECONDS = 10  # and the worker's answer to a ping after a call failed
MAX_WORKERS = 4  # the most workers a batch uses (index.html's rendernetPoolSize also weighs cores and memory)
RECYCLE_BYTES = 400 * 1024 * 1024  # a worker whose memory grew past this (a huge image) is replaced after the file


class Page:
    """The page's state: the model's description, the queue, and the results in the order they came."""

    def __init__(self):
        self.worker = None  # slot 0: it also holds the adaptation (every row's features, the corrections)
        self.workers = [None] * MAX_WORKERS  # by slot; None: not started, or could not be restarted
        self.restart_problem = ""  # why a worker could not be restarted, the last time one could not
        self.pool_size, self.peak_memory = 1, {}
        self.model_url = None
        self.classes, self.threshold = [], None
        self.queue, self.running, self.cancelled, self.task = [], False, False, None  # queue: (file, row id)
        self.helpers = {}  # slot -> its task in this batch
        self.arrived, self.shown = {}, 0  # answers by row id, not yet shown; the next row id to show
        self.rows = []  # (result, table row), in the order added; result["row"] is the row's id in the worker
        self.next_row = 0
        self.files = {}  # row id -> its File (for the viewer)
        self.done = self.total = 0
        self.adaptable = False
        self.adapted = None  # the model's manifest "adapted": a site built with an adapted model
        self.base_model = "The shipped model"  # what answers without corrections
        self.changes, self.adapting = [], False  # changes of the corrections, applied one at a time
        self.channel = None  # a BroadcastChannel to the site's other tabs (their corrections are kept in one place)
        self.head, self.head_version = None, 0  # the head last shown, and how many times it changed
        self.rescoring, self.rescore_wanted, self.rescore_task = False, False, None  # rescore_all's state

    def sure(self) -> float:
        return int(element("sure-threshold").value) / 100

    def decision(self, result: dict):
        """The row's answer: the user's label when they corrected it, else the model's decision."""
        return answer(result["probabilities"], self.classes, self.threshold, self.sure(), result.get("your_label"))

    def model_decision(self, result: dict):
        return decide(result["probabilities"], self.classes, self.threshold, self.sure())


page = Page()


# ---------------------------------------------------------------- DOM helpers


def element(element_id):
    return document.getElementById(element_id)


def node(tag: str, text=None, **attributes):
    """A new element; `text` becomes its textContent, attributes are set as attributes (class_ -> class)."""
    created = document.createElement(tag)
    if text is not None:
        created.textContent = str(text)
    for name, value in attributes.items():
        created.setAttribute(name.rstrip("_").replace("_", "-"), str(value))
    return created


def append(parent, *children):
    for child in children:
        parent.appendChild(child)
    return parent


def set_loading(step: int, text: str, seconds=None) -> None:
    """Show a start-up step; with `seconds`, the page fails (index.html's watchdog) unless the next step comes first."""
    if window.rendernetFailed():
        return
    element("load-progress").value = step
    element("load-status").textContent = text
    window.rendernetWatch(text.rstrip("…") if seconds else None, seconds or 0)


def fail(text: str) -> None:
    """The failed state: what failed and what to do (index.html's rendernetFail)."""
    window.rendernetFail(text)


def notice(text: str) -> None:
    element("notice").textContent = text
    element("notice").hidden = False


# ---------------------------------------------------------------- the model and "About"


def table(rows, caption=None, header=None):
    """A table of text cells; the first cell of each row is its header."""
    built = node("table")
    if caption:
        append(built, node("caption", caption))
    if header:
        append(built, append(node("tr"), *[node("th", name, scope="col") for name in header]))
    for name, *values in rows:
        append(built, append(node("tr"), node("th", name, scope="row"), *[node("td", value) for value in values]))
    return built


def text(value) -> str:
    """A value as shown: floats to 6 significant digits (MicroPython reads 0.962 as 0.9619999999999999)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def show_about(info: dict) -> None:
    manifest, metrics = info["manifest"], info["metrics"]
    test = metrics.get("test", {})
    unseen = dict(metrics.get("held_out", {}))
    unseen.update(metrics.get("leave_one_source_out", {}))
    rows = (
        [
            ("Classes", ", ".join(page.classes)),
            ("Test accuracy", text(test.get("accuracy", "n/a"))),
            ("Test ROC AUC", text(test.get("roc_auc", "n/a"))),
            ("Test images", test.get("count", "n/a")),
        ]
        + [
            (
                f"Unseen source “{source}”",
                f"accuracy {text(scores.get('accuracy'))}, ROC AUC {text(scores.get('roc_auc', 'n/a'))} "
                f"on {scores.get('count')} images, with the source left out of training",
            )
            for source, scores in unseen.items()
            if isinstance(scores, dict)
        ]
        + [
            (
                "Decision threshold",
                f"{text(page.threshold)} (probability of “{page.classes[-1]}”)"
                if page.threshold is not None
                else "most probable class",
            ),
            ("Parameters", f"{manifest.get('params', 0):,}"),
            ("Multiply-adds per image", f"{manifest.get('macs', 0):,}"),
            ("Weights size", f"{info['weights_bytes'] / 1024:.1f} kB"),
            ("Layers", info["layers"]),
            ("Preprocessing", manifest.get("preprocessing", "")),
        ]
        + converted_from(manifest.get("source"))
        + [
            ("Heatmaps and corrections", not_offered(info) or "offered"),
            (
                "Evidence from the file",
                "a camera or a 3D tool named in an image's metadata is shown beside the answer; "
                "it never changes the model's answer (metadata can be stripped or forged)",
            ),
            (
                "Workers",
                f"up to {page.pool_size} for a batch (this device has {window.navigator.hardwareConcurrency} cores; "
                "one is left to the page)",
            ),
        ]
        + [("Credits", credit) for credit in manifest.get("credits", [])]
    )
    body = element("about-body")
    body.replaceChildren(table(rows))
    confusion = test.get("confusion")
    if isinstance(confusion, list):
        append(
            body,
            table(
                [[name] + list(row) for name, row in zip(page.classes, confusion)],
                caption="Confusion matrix on the test split (rows: actual, columns: predicted)",
                header=[""] + page.classes,
            ),
        )
    append(body, node("div", id="about-adaptation"))


SOURCE_FORMATS = {"keras": "a Keras .keras file", "h5": "a Keras .h5 file", "kerasjs": "a Keras.js folder"}


def converted_from(source) -> list:
    """About's rows for a model `rendernet convert` made: what it read, and the pixels the network is given."""
    if not source:
        return []
    return [
        ("Converted from", f"{SOURCE_FORMATS.get(source['format'], source['format'])}, “{source['file']}”, by rendernet convert"),
        ("Input range", f"the network is given pixels as “{source.get('input_range', 'raw')}”"),
    ]


def not_offered(info: dict) -> str:
    """What this model does not offer, and why: heatmaps and corrections need a Dense head (with a bias, for
    corrections) on average-pooled features; "" when it offers both."""
    if "not_adaptable" not in info:
        return ""
    what = "Corrections are" if info["heatmaps"] else "Heatmaps and corrections are"
    reason = info["not_adaptable"].split(": ", 1)[-1]  # after "this model cannot be adapted: "
    return f"{what} not offered: {reason}."


async def call(promise, seconds: int, what: str, slot: int = 0):
    """A call to a worker with a deadline: RuntimeError when it fails, the worker dies or does not answer in time."""
    outcome = await window.rendernetCall(promise, seconds, what, slot)
    if not outcome.ok:
        raise RuntimeError(outcome.error)
    return outcome.value


async def load_model(worker, timings=None, slot: int = 0) -> dict:
    """Start using a worker once its Python is ready: load the model into it; its description (or {"error"})."""
    await call(worker.ready, WORKER_SECONDS, "Starting the worker", slot)
    window.rendernetWatchLife(slot)  # not awaited: it takes a few ms beside the model's load
    if timings is not None:
        timings["worker_ready"] = js.performance.now()
    info = json.loads(await call(worker.sync.load(page.model_url), MODEL_SECONDS, "Loading the model", slot))
    page.workers[slot] = worker.sync  # only now: a new head sent to a worker without its model would fail there
    if slot == 0:
        page.worker = worker.sync
    return info


async def start_worker(slot: int, why=None) -> None:
    """A new worker with the model in `slot`: one more for a batch, or one replacing a worker that died or grew
    too large (WebAssembly memory never shrinks). It gets the current head; slot 0 also the corrections and the
    rows' features. RuntimeError when it cannot start."""
    if why:
        element("batch-status").textContent = f"{why}: starting a new worker…"
    page.workers[slot] = None
    info = await load_model(await window.rendernetNewWorker(slot), None, slot)
    if "error" in info:
        raise RuntimeError(info["error"])
    page.workers[slot].warm_up()  # not awaited: OpenBLAS, then the decoders' first use
    if not page.adaptable:
        return
    if slot == 0:  # the corrections are kept in the browser; the rows' features in the page
        for result, row in page.rows:
            if row.hasAttribute("data-features"):  # an error row has none (MicroPython: no attribute, not undefined)
                page.worker.remember(result["row"], row.getAttribute("data-features"))
        show_adaptation(json.loads(await call(page.worker.restore(), MODEL_SECONDS, "Restoring your corrections")))
    else:
        page.workers[slot].set_head(await call(page.worker.head(), MODEL_SECONDS, "Reading the adapted head"))


async def worker_alive(slot: int) -> bool:
    if window.rendernetGone(slot):  # it ended: no need to wait for a ping
        return False
    try:
        await call(page.workers[slot].ping(), PING_SECONDS, "The worker", slot)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------- results


def label_cell(cell, result: dict) -> None:
    """The result text of one row, from the one decision rule at the slider's current value."""
    if "error" in result:
        cell.replaceChildren(node("span", f"Could not read: {result['error']}", class_="label error"))
        return
    decision = page.decision(result)
    if result.get("your_label"):
        model = page.model_decision(result)
        percent = round(100 * result["probabilities"][model.label])
        cell.replaceChildren(node("span", f"{decision.label} — your label", class_="label yours"))
        append(
            cell,
            node(
                "span",
                f"the model now says {percent}% {model.label}"
                if model.label == decision.label
                else f"kept as your label; the model still disagrees ({percent}% {model.label})",
                class_="model-says",
            ),
        )
    else:
        text = f"Not sure (maybe {decision.label})" if decision.not_sure else decision.label
        cell.replaceChildren(node("span", text, class_="label unsure" if decision.not_sure else "label"))
    for text in (result.get("evidence") or {}).values():  # beside the answer, never part of it
        append(cell, node("span", text + ", from the file", class_="evidence"))
    if "shipped" in result:
        shipped = decide(result["shipped"], page.classes, page.threshold, page.sure())
        if (shipped.label, shipped.not_sure) != (decision.label, decision.not_sure):
            shown = f"not sure (maybe {shipped.label})" if shipped.not_sure else shipped.label
            append(cell, node("span", f"shipped model: {shown}", class_="was"))


def confidence_cell(cell, result: dict) -> None:
    if "error" in result:
        cell.replaceChildren()
        return
    decision = page.model_decision(result)  # the model's own confidence, also for a row the user labelled
    percent = round(100 * decision.confidence)
    bar = append(
        node("div", class_="bar", role="img", aria_label=f"{percent}% confidence: {decision.label}"),
        node("span", style=f"width:{percent}%"),
    )
    cell.replaceChildren(bar, document.createTextNode(f"{percent}% {decision.label}"))


def add_row(answer: dict) -> None:
    result = answer["result"]
    row = node("tr", class_="failed" if "error" in result else "result")
    row.dataset.result = json.dumps(result)
    picture = node("td")
    if "thumbnail" in answer:
        figure = append(
            node(
                "button",
                type="button",
                class_="thumb",
                title="See it large, with where the model looks",
                aria_label=f"See {result['file']} large",
            ),
            node("img", src=answer["thumbnail"], alt=f"what the model saw of {result['file']}"),
        )
        if "heatmap" in answer:
            append(figure, node("img", src=answer["heatmap"], alt="", class_="heatmap"))
        figure.addEventListener("click", create_proxy(lambda event, row=result["row"]: show_large(row)))
        append(picture, figure)
    if "shipped" in answer:
        result["shipped"] = dict(zip(page.classes, answer["shipped"]))
        row.dataset.features = answer["features"]  # kept in the DOM, for a new worker (start_worker)
    label, confidence = node("td"), node("td")
    label_cell(label, result)
    confidence_cell(confidence, result)
    append(
        row,
        picture,
        node("td", result["file"], class_="file"),
        label,
        confidence,
        node("td", f"{result['ms']:.0f} ms" if "ms" in result else ""),
        correction_cell(result),
    )
    page.rows.append((result, row))
    if page.adaptable and "features" in answer and answer.get("head_version", page.head_version) != page.head_version:
        rescore_all()  # scored with a head that has changed since the file was sent (a correction meanwhile)
    if element("sort-by").value == "confidence":
        sort_rows()
    else:
        element("results").tBodies.item(0).appendChild(row)
    for button in ("download-csv", "clear"):
        element(button).disabled = False
    summarize()


def rescore_all() -> None:
    """Every row again with the current head (the page's worker knows every row's features): one request at a time,
    and one more when a row arrived while it ran (that row's features may have reached the worker after it)."""
    page.rescore_wanted = True
    if page.rescoring:
        return
    page.rescoring = True

    async def run():
        try:
            while page.rescore_wanted:
                page.rescore_wanted = False
                show_adaptation(json.loads(await call(page.worker.rescore(), MODEL_SECONDS, "Re-scoring the rows")))
        except Exception as error:
            notice(f"The rows could not be re-scored with your corrections: {error}")
        finally:
            page.rescoring = False

    page.rescore_task = asyncio.create_task(run())  # held, so it is not garbage-collected


def show_large(row: int) -> None:
    """The viewer: the image as the model saw it and, beside it, where the model looks (the file is read again)."""
    file = page.files.get(row)
    if file is None:
        return

    async def run():
        data = js.Uint8Array.new(await file.arrayBuffer())
        try:
            answer = json.loads(await call(page.worker.view(file.name, data), FILE_SECONDS, "Showing the image"))
        except Exception as error:
            notice(f"The image could not be shown: {error}")
            return
        viewer, pictures = element("viewer"), element("viewer-pictures")
        element("viewer-title").textContent = f"{file.name}: {answer.get('label', '')}"
        pictures.replaceChildren()
        if "error" in answer:
            append(pictures, node("p", f"Could not read: {answer['error']}"))
        else:
            shown = [(answer["image"], file.name + " as the model saw it", "What the model saw")]
            if "heatmap" in answer:
                where = "Where it looks (orange: " + page.classes[-1] + ", blue: " + page.classes[0] + ")"
                shown.append((answer["heatmap"], "where the model looks", where))
            for source, alt, caption in shown:
                append(pictures, append(node("figure"), node("img", src=source, alt=alt), node("figcaption", caption)))
        viewer.showModal()

    page.task = asyncio.create_task(run())


def correction_cell(result: dict):
    """One button per class ("It's real"); the pressed one is the user's correction, pressing it again withdraws it."""
    cell = node("td", class_="correct")
    if "shipped" not in result:  # a failed row, or a model that cannot be adapted
        return cell
    for name in page.classes:
        button = node(
            "button",
            name,
            type="button",
            aria_pressed="false",
            title=f"It's {name}: adapt the model to this image",
            aria_label=f"It's {name}",
        )
        button.dataset.label = name
        button.addEventListener(
            "click", create_proxy(lambda event, name=name, row=result["row"], file=result["file"]: corrected(row, name, file))
        )
        append(cell, button)
    return cell


def buttons(row) -> list:
    found = row.querySelectorAll("button[data-label]")
    return [found.item(index) for index in range(found.length)]


def corrected(row: int, name: str, file: str) -> None:
    change(lambda: page.worker.correct(row, None if pressed(row, name) else name, file), "Adapting the model")


def pressed(row: int, name: str) -> bool:
    """Whether row's button for class `name` is pressed (pressing it again withdraws the correction)."""
    entry = next((entry for entry in page.rows if entry[0]["row"] == row), None)
    return entry is not None and any(
        button.dataset.label == name and button.getAttribute("aria-pressed") == "true" for button in buttons(entry[1])
    )


def change(request, what: str, announce: bool = True) -> None:
    """Queue a change of the corrections (request() calls the worker): they apply one after another, in order. Once
    kept, a change is announced to the site's other tabs, which take the kept corrections (taken_elsewhere)."""
    page.changes.append((request, what, announce))
    if not page.adapting:
        page.task = asyncio.create_task(apply_changes())


async def apply_changes() -> None:
    page.adapting = True
    try:
        while page.changes:
            request, what, announce = page.changes.pop(0)
            try:
                answer = json.loads(await call(request(), MODEL_SECONDS, what))
                show_adaptation(answer)
                if announce and page.channel is not None and "not_kept" not in answer:
                    page.channel.postMessage("changed")
            except Exception as error:
                notice(f"{what} failed: {error}")
    finally:
        page.adapting = False


def taken_elsewhere(event) -> None:
    """Another tab of this site changed the kept corrections: take them, so neither tab's are lost."""
    change(lambda: page.worker.restore(), "Taking the corrections made in another tab", False)


def show_adaptation(answer: dict) -> None:
    """Redraw every row with its new probabilities, mark those whose answer changed, show the summary."""
    probabilities, corrected = answer["probabilities"], answer["corrected"]
    if answer["head"] != page.head:  # a file sent to a worker before this is scored with the old head (add_row)
        page.head, page.head_version = answer["head"], page.head_version + 1
    for helper in page.workers[1:]:  # the pool's other workers classify with the same head
        if helper is not None:
            helper.set_head(answer["head"])
    for result, row in page.rows:
        key = str(result.get("row"))
        if key not in probabilities:
            continue
        before = page.decision(result)
        result["probabilities"] = dict(zip(page.classes, probabilities[key]))
        result["label"] = decide(result["probabilities"], page.classes, page.threshold).label
        result["your_label"] = corrected.get(key, "")
        row.dataset.result = json.dumps(result)
        after = page.decision(result)
        row.classList.toggle("changed", (before.label, before.not_sure) != (after.label, after.not_sure))
        label_cell(row.cells.item(2), result)
        confidence_cell(row.cells.item(3), result)
        for button in buttons(row):
            button.setAttribute("aria-pressed", "true" if corrected.get(key) == button.dataset.label else "false")
    summarize()
    if element("sort-by").value == "confidence":
        sort_rows()
    total = answer["total"]
    text = answer["description"][0].upper() + answer["description"][1:] + "."
    if answer["used"] < total:
        text += f" The most recent {answer['used']:,} of your {total:,} corrections adapt it."
    if not answer.get("converged", True):
        text += " The re-fit was still improving when it stopped: the answers shown are the best it found."
    element("adaptation-status").textContent = (
        text
        if total
        else (
            page.base_model + " answers. Tell it when it is wrong (the buttons in each row): it adapts to your images, "
            "on this device."
        )
    )
    element("undo").disabled = not answer["can_undo"]
    for button in ("back-to-shipped", "download-model", "download-corrections"):
        element(button).disabled = total == 0
    show_adaptation_in_about(answer)
    if "added" in answer:
        added = answer["added"]
        notice(
            f"Added {added['added']} correction{'' if added['added'] == 1 else 's'} from {added['file']}"
            + (
                f"; {added['conflicts']} image{'' if added['conflicts'] == 1 else 's'} labelled differently: the newest "
                "label is kept"
                if added["conflicts"]
                else ""
            )
            + "."
        )
    if "added_problem" in answer:
        notice(answer["added_problem"] + ". Nothing was changed.")
    if "not_kept" in answer:
        notice(answer["not_kept"][0].upper() + answer["not_kept"][1:] + "; they last until the page is closed.")


def show_adaptation_in_about(answer: dict) -> None:
    """About this model: what this model was adapted to (a site built with an adapted model) and what it is
    adapted to on this device."""
    rows = []
    if page.adapted:
        counts = page.adapted.get("corrections") or {}
        rows.append(
            (
                "Built from an adapted model",
                ", ".join(f"{counts.get(name, 0)} {name}" for name in page.classes)
                + f" corrections; base model weights sha256 {page.adapted.get('base_weights_sha256', 'n/a')}",
            )
        )
    counts = ", ".join(f"{answer['counts'].get(name, 0)} {name}" for name in page.classes)  # MicroPython: dicts unordered
    rows.append(("Adapted on this device", f"{answer['total']} corrections ({counts})" if answer["total"] else "no"))
    rows.append(
        (
            "Reference examples",
            f"{answer['reference_examples']} of the model's training images keep the adaptation from undoing what it knew"
            if answer["reference_examples"]
            else "none (the corrections alone)",
        )
    )
    rows.append(("Corrections are kept for", f"model weights sha256 {answer['base_weights_sha256']}"))
    box = element("about-adaptation")
    if box is not None:
        box.replaceChildren(table(rows, caption="Adaptation"))


def show_kept_elsewhere(others: list, problem) -> None:
    """Kept corrections this model cannot use: say so, and offer each for download (nothing is deleted)."""
    box = element("kept-elsewhere")
    box.replaceChildren()
    if problem:
        append(
            box,
            node(
                "p",
                f"Your kept corrections could not be used ({problem}): the shipped model answers. They are set aside, not deleted.",
            ),
        )
    if any(not other["damaged"] for other in others):
        append(
            box,
            node(
                "p", "Corrections made with another model (the site has been updated since) are kept but not applied to this one."
            ),
        )
    for other in others:
        whose = "the set-aside" if other["damaged"] else "the other model's"
        button = node("button", "Download " + whose + " corrections", type="button")
        button.addEventListener("click", create_proxy(lambda event, key=other["key"]: download_kept(key)))
        append(box, button)
    box.hidden = not others


def download_kept(key: str) -> None:
    async def run():
        text = await call(page.worker.kept(key), MODEL_SECONDS, "Reading the kept corrections")
        save_file(js.Blob.new(to_js([text]), to_js({"type": "application/json"})), "rendernet-corrections.json")

    page.task = asyncio.create_task(run())


def save_file(blob, name: str) -> None:
    link = node("a", href=js.URL.createObjectURL(blob), download=name)
    link.click()
    js.setTimeout(create_proxy(lambda: js.URL.revokeObjectURL(link.href)), 1000)


def summarize() -> None:
    counts = {name: 0 for name in page.classes}
    unsure = failed = 0
    for result, _ in page.rows:
        if "error" in result:
            failed += 1
            continue
        decision = page.decision(result)
        if decision.not_sure:
            unsure += 1
        else:
            counts[decision.label] += 1
    parts = [f"{count} {name}" for name, count in counts.items()] + [f"{unsure} not sure", f"{failed} failed"]
    element("summary").textContent = ", ".join(parts) if page.rows else ""


def sort_rows() -> None:
    """Least confident first (failures last), or back in the order added."""

    def key(entry):
        result = entry[0]
        return (1, 0) if "error" in result else (0, page.decision(result).confidence)

    entries = sorted(page.rows, key=key) if element("sort-by").value == "confidence" else page.rows
    element("results").tBodies.item(0).replaceChildren(*[row for _, row in entries])


def update_batch() -> None:
    element("batch").hidden = page.total == 0
    element("batch-progress").max = max(page.total, 1)
    element("batch-progress").value = page.done
    element("batch-status").textContent = f"{page.done} of {page.total} classified" + (" — cancelled" if page.cancelled else "")


async def run_queue() -> None:
    """Classify the queued files: slot 0, and for more than one file the pool's other workers, each taking the next
    file when it is done with one. The main thread only waits, so it stays responsive."""
    if page.running:
        return
    page.running, page.cancelled = True, False
    element("cancel").disabled = False
    try:
        for slot in range(1, page.pool_size):
            if len(page.queue) > 1 and slot not in page.helpers:
                page.helpers[slot] = asyncio.create_task(help_with_batch(slot))
        await drain(0)
        for slot in list(page.helpers):
            await page.helpers.pop(slot)
        if page.queue:  # every worker is gone: the rest of the batch cannot run
            notice(f"The page's worker could not be restarted ({page.restart_problem}); reload the page to classify more images.")
            for file, row in page.queue:
                deliver(
                    row,
                    {
                        "result": {
                            "file": file.name,
                            "row": row,
                            "error": not_restarted(),
                        }
                    },
                )
    finally:
        page.queue.clear()
        page.running = False
        element("cancel").disabled = True
        update_batch()


async def help_with_batch(slot: int) -> None:
    """One more worker on this batch: started the first time a batch needs it, kept for the next ones; one that
    cannot start leaves its share to the others."""
    if page.workers[slot] is None:
        await try_start(slot)
    await drain(slot)


async def drain(slot: int) -> None:
    while page.queue and not page.cancelled and page.workers[slot] is not None:
        file, row = page.queue.pop(0)
        version = page.head_version
        answer = await classify(file, row, slot)
        answer["result"]["row"] = row
        answer["head_version"] = version
        deliver(row, answer, slot)
        page.done += 1
        update_batch()
        memory = answer.get("memory", 0)
        page.peak_memory[slot] = max(page.peak_memory.get(slot, 0), memory)
        if memory > RECYCLE_BYTES:
            await try_start(slot, "Giving back the memory of a large image")


async def try_start(slot: int, why=None) -> None:
    try:
        await start_worker(slot, why)
    except Exception as error:  # this slot is done; a batch with no worker left ends with error rows (run_queue)
        page.workers[slot] = None
        page.restart_problem = str(error)


def not_restarted() -> str:
    """The error row of a file no worker could take."""
    return f"not classified: the page's worker could not be restarted ({page.restart_problem})"


def deliver(row: int, answer, slot: int = 0) -> None:
    """Show the answers in the order the files were added (None: a file cancelled before it ran)."""
    if answer is not None and slot != 0 and "features" in answer and page.worker is not None:
        page.worker.remember(row, answer["features"])  # slot 0 re-scores every row when the user corrects one
    page.arrived[row] = answer
    while page.shown in page.arrived:
        shown = page.arrived.pop(page.shown)
        page.shown += 1
        if shown is not None:
            add_row(shown)


async def classify(file, row: int, slot: int = 0) -> dict:
    """One file through a worker, as {"result", "thumbnail", "heatmap", "features", "shipped", "memory"}; a file the
    browser cannot read, or the worker fails on, gets an error result. A worker that died (or hangs) on it is
    replaced first."""
    try:
        data = js.Uint8Array.new(await file.arrayBuffer())
    except Exception as error:
        return {"result": {"file": file.name, "error": f"the browser could not read the file ({error})"}}
    if window.rendernetGone(slot):  # it died between two files: this one never reached it
        await try_start(slot, "The worker stopped")
    if page.workers[slot] is None:
        return {"result": {"file": file.name, "error": not_restarted()}}
    try:
        return json.loads(await call(page.workers[slot].classify(file.name, data, row), FILE_SECONDS, "Classifying", slot))
    except Exception as error:
        problem = str(error)
    if await worker_alive(slot):
        return {"result": {"file": file.name, "error": f"the file could not be processed ({problem})"}}
    await try_start(slot, "The worker stopped")
    return {"result": {"file": file.name, "error": f"the page's worker stopped while classifying this file ({problem})"}}


def enqueue(files) -> None:
    files = [files.item(index) for index in range(files.length)]
    if not files or page.worker is None:
        return
    if not page.running:
        page.done, page.total = 0, 0
    for file in files:
        page.queue.append((file, page.next_row))
        page.files[page.next_row] = file  # a handle, not the bytes: the viewer reads it again
        page.next_row += 1
    page.total += len(files)
    update_batch()
    page.task = asyncio.create_task(run_queue())  # held, so the running task is not garbage-collected


# ---------------------------------------------------------------- events


def connect() -> None:
    @when("change", "#file-input")
    def chosen(event):
        enqueue(event.target.files)
        event.target.value = ""

    @when("drop", "#drop-zone")
    def dropped(event):
        event.preventDefault()
        element("drop-zone").classList.remove("dragging")
        enqueue(event.dataTransfer.files)

    @when("dragover", "#drop-zone")
    def dragged_over(event):
        event.preventDefault()
        element("drop-zone").classList.add("dragging")

    @when("dragleave", "#drop-zone")
    def dragged_away(event):
        element("drop-zone").classList.remove("dragging")

    @when("paste", "body")  # a paste anywhere in the page (it bubbles to the body)
    def pasted(event):
        if event.clipboardData and event.clipboardData.files.length:
            event.preventDefault()
            enqueue(event.clipboardData.files)

    @when("keydown", "#drop-zone")
    def drop_zone_key(event):
        if event.key in ("Enter", " "):
            event.preventDefault()
            element("file-input").click()

    @when("click", "#cancel")
    def cancel(event):
        page.cancelled = True
        for _, row in page.queue:
            deliver(row, None)
        page.queue.clear()
        update_batch()

    @when("input", "#sure-threshold")
    def sure_changed(event):
        element("sure-value").textContent = element("sure-threshold").value
        for result, row in page.rows:
            label_cell(row.cells.item(2), result)
            confidence_cell(row.cells.item(3), result)
        summarize()
        if element("sort-by").value == "confidence":
            sort_rows()

    @when("change", "#show-heatmap")
    def heatmap_toggled(event):
        shown = element("show-heatmap").checked
        element("results").classList.toggle("show-heatmap", shown)
        element("heatmap-legend").hidden = not shown

    @when("change", "#sort-by")
    def sort_changed(event):
        sort_rows()

    @when("click", "#clear")
    def clear(event):
        page.rows.clear()
        page.files.clear()
        if page.adaptable:
            page.worker.forget_rows()
        element("results").tBodies.item(0).replaceChildren()
        page.done, page.total = 0, 0
        update_batch()
        summarize()
        for button in ("download-csv", "clear"):
            element(button).disabled = True

    @when("click", "#download-csv")
    async def download(event):
        save_file(js.Blob.new(to_js([await current_csv()]), to_js({"type": "text/csv"})), "rendernet-results.csv")

    @when("click", "#undo")
    def undo(event):
        change(lambda: page.worker.undo(), "Undo")

    @when("click", "#back-to-shipped")
    def back(event):
        change(lambda: page.worker.reset(), "Going back to the shipped model")

    @when("click", "#viewer-close")
    def close_viewer(event):
        element("viewer").close()

    @when("change", "#import-corrections")
    async def import_corrections(event):
        files = event.target.files
        chosen = files.item(0) if files.length else None
        event.target.value = ""
        if chosen is None or not page.adaptable:
            return
        name, text = chosen.name, await chosen.text()
        change(lambda: page.worker.add_corrections(name, text), "Adding corrections from " + name)

    @when("click", "#download-corrections")
    async def download_corrections(event):
        text = await call(page.worker.corrections_text(), MODEL_SECONDS, "Writing your corrections")
        save_file(js.Blob.new(to_js([text]), to_js({"type": "application/json"})), "rendernet-corrections.json")

    @when("click", "#download-model")
    async def download_model(event):
        data = await call(page.worker.adapted_model(), MODEL_SECONDS, "Writing the adapted model")
        link = node("a", href="data:application/zip;base64," + data, download="rendernet-adapted-model.zip")
        link.click()


async def current_csv():
    """The results as CSV text: report.results_csv in the worker, at the slider's current value."""
    results = [dict((key, value) for key, value in result.items() if key != "your_label") for result, _ in page.rows]
    return await call(page.worker.to_csv(json.dumps(results), page.sure()), MODEL_SECONDS, "Writing the CSV")


# ---------------------------------------------------------------- start


def remember_version(app: str) -> None:
    """Say so when this visit runs a different build from the last one (the bundle's folder names its content)."""
    storage, key = window.localStorage, "rendernet-app:" + js.location.pathname  # one per site of the origin
    previous = storage.getItem(key)
    if previous and previous != app:
        notice("Updated: this page now runs a new version of the app and its model.")
    storage.setItem(key, app)


async def start() -> None:
    timings = {"python_started": js.performance.now()}  # ms since navigation, read by bench/browser.py
    app = js.URL.new(document.body.dataset.app, js.location.href).href
    page.model_url = app + "model/"
    page.pool_size = (
        min(int(PARAMETERS.get("workers")), len(page.workers))
        if DEBUG and PARAMETERS.has("workers")
        else window.rendernetPoolSize(MAX_WORKERS)
    )
    set_loading(1, "Starting the worker (Pyodide, NumPy, Pillow)…", WORKER_SECONDS + MODEL_SECONDS)
    try:
        info = await load_model(await window.rendernetWorker, timings)
    except Exception as error:
        fail(f"The worker could not start: {error}. Reload the page; if this stays, tell the site's owner.")
        return
    timings["model_loaded"] = js.performance.now()
    if "error" in info:
        fail(f"The model could not be loaded: {info['error']}")
        element("about-body").textContent = "No model."
        return
    set_loading(3, "Showing the model…", MODEL_SECONDS)
    page.classes, page.threshold = info["manifest"]["classes"], info["manifest"].get("threshold")
    page.adapted = info["manifest"].get("adapted")
    if page.adapted:
        corrected = sum((page.adapted.get("corrections") or {}).values())
        page.base_model = f"Adapted model ({corrected} correction{'' if corrected == 1 else 's'})"
    element("python-version").textContent = info["python"]
    try:
        show_about(info)
    except Exception as error:  # check_manifest and check_metrics make this unlikely
        fail(f"The model's description could not be shown: {error}")
        return
    if "metrics_error" in info:
        notice(f"The model's metrics are not shown: {info['metrics_error']}")
    if len(page.classes) == 2:
        element("legend-render").textContent, element("legend-real").textContent = page.classes[1], page.classes[0]
    else:
        element("legend-render").textContent, element("legend-real").textContent = "the result", "other classes"
    element("show-heatmap").disabled = not info["heatmaps"]
    page.adaptable = "not_adaptable" not in info
    element("adaptation").hidden = not page.adaptable
    element("not-offered").hidden = page.adaptable
    element("not-offered").textContent = not_offered(info)
    if page.adaptable:
        set_loading(3, "Restoring your corrections…", MODEL_SECONDS)
        restored = json.loads(await call(page.worker.restore(), MODEL_SECONDS, "Restoring your corrections"))
        show_adaptation(restored)
        show_kept_elsewhere(restored["others"], restored.get("problem"))
        if hasattr(js, "BroadcastChannel"):
            page.channel = js.BroadcastChannel.new("rendernet-corrections:" + js.location.pathname)
            page.channel.onmessage = create_proxy(taken_elsewhere)
    remember_version(app)
    connect()
    if window.rendernetFailed():  # a step missed its deadline meanwhile
        return
    element("file-input").disabled = False
    set_loading(4, f"Ready: choose images to classify as {' or '.join(page.classes)}.")
    element("loading").classList.add("ready")
    timings["ready"] = js.performance.now()
    page.worker.warm_up()  # not awaited: a file chosen meanwhile is classified right after it
    if DEBUG:
        hooks = js.Object.new()
        hooks.timings = to_js(timings)
        hooks.time_forward = create_proxy(lambda repeats=30: page.worker.time_forward(repeats))
        hooks.profile = create_proxy(lambda repeats=5: page.worker.profile(repeats))
        hooks.matmul = create_proxy(lambda: page.worker.matmul())
        hooks.time_adaptation = create_proxy(lambda rows, corrections: page.worker.time_adaptation(rows, corrections))
        hooks.modules = create_proxy(lambda: page.worker.modules())
        hooks.memory = create_proxy(lambda: page.worker.memory())
        hooks.peak_memory = create_proxy(lambda: json.dumps(page.peak_memory))
        hooks.crash_worker = create_proxy(lambda: page.worker.crash())
        window.rendernet_debug = hooks
    document.body.dataset.state = "ready"


try:
    await start()
except Exception as error:  # a fault of the page itself: say so rather than wait forever
    fail(f"The page failed to start: {error}")
