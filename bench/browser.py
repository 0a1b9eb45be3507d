"""The built site in headless Chromium: time to ready, per-image latency, bytes on first load, LiteRT.js.

    python bench/browser.py [--model models/default] [--images 40]

Builds dist/ into a temp folder, serves it on 127.0.0.1, opens it in Debian's
chromium with a fresh profile (first visit), reloads it in the same profile
(repeat visits, served by the service worker while the page re-checks sw.js in
the background), then classifies sample images through the real file input and
times the forward pass in the page's worker and, in the same page, the shipped
model.tflite in LiteRT.js (npm @litertjs/core, a benchmark-only dependency,
checked against npm's integrity like the build's), the two taking turns in rounds
so that a busy machine slows both alike. Then a fresh visit through a
server throttled to 20 Mbit/s with 40 ms round trips, and the floor: a page
that only starts Pyodide and runs `1+1`, fresh and repeat, and the floor that does
the same work as the app's worker before ready (the bundle's runtime, NumPy,
Pillow, the core, the model) in a plain worker, fresh and repeat, with the
app's excess over it. Then the pool: 100
photos (1600x1200 JPEG q90 made from the sample) classified with ?debug&workers=1
and =2, three batches each in one page (the first batch also starts the second
worker): images per second, each worker's peak memory, main-thread tasks over
50 ms. `--pool-only` runs just that; `--adaptation-only` just the time a correction takes (the head re-fitted
with the model's reference set, and 500 rows re-scored). Prints a table, then JSON.
"""

import argparse
import functools
import http.server
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]

import numpy as np
from chromium import CHROMIUM, CHROMIUM_FLAGS, LONG_TASKS, READY
from PIL import Image
from rendernet import load_model
from rendernet.classify import classify_file

import build


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


LITERT_NPM = {  # benchmark only: `npm view <spec> dist.integrity`
    "@litertjs/core@2.5.3": "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
    "@litertjs/wasm-utils@2.5.3": "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
}
FLOOR_PAGE = """<!doctype html><meta charset="utf-8"><title>floor</title><script type="module">
  import { loadPyodide } from "./pyodide.mjs";
  const pyodide = await loadPyodide();
  pyodide.runPython("1+1");
  document.body.dataset.state = "ready";
</script><body></body>"""  # bare Pyodide as published: what any Pyodide page waits for at least
SAME_WORK_PAGE = """<!doctype html><meta charset="utf-8"><title>floor: the same work</title><script type="module">
  const worker = new Worker("./worker.js", { type: "module" });
  worker.onmessage = ({ data }) => { document.body.dataset.state = data; };
</script><body></body>"""
SAME_WORK_WORKER = """import { loadPyodide } from "../__PYODIDE__/pyodide.mjs";
const app = new URL("../__APP__/", location.href);
const bytes = async (path) => new Uint8Array(await (await fetch(new URL(path, app))).arrayBuffer());
const pyodide = await loadPyodide({ indexURL: new URL("../__PYODIDE__/", location.href).href });
await pyodide.loadPackage(["numpy", "pillow"]);
pyodide.FS.mkdirTree("/home/pyodide/rendernet");
for (const name of __CORE__) pyodide.FS.writeFile(`/home/pyodide/rendernet/${name}`, await bytes(`rendernet/${name}`));
pyodide.globals.set("manifest", await bytes("model/model.json"));
pyodide.globals.set("weights", await bytes("model/weights.npz"));
pyodide.globals.set("reference", __REFERENCE__ ? await bytes("model/reference.npz") : null);
pyodide.runPython("import sys; sys.path.insert(0, '/home/pyodide'); from PIL import Image; "
  + "from rendernet.model import model_from_bytes; "
  + "model = model_from_bytes(manifest.to_bytes(), weights.to_bytes(), reference and reference.to_bytes())");
postMessage("ready");
"""  # what the app's worker does before ready (the bundle's trimmed runtime, NumPy, Pillow, the core, the model), in a
#     plain module worker: no PyScript, no MicroPython, no service worker, no integrity gate
FORWARD_ROUNDS, PASSES_PER_ROUND = 6, 10  # the NumPy pass and LiteRT.js take turns: a busy neighbour slows both
LITERT_WORKER = """onmessage = async ({ data: { pixels, shape, repeats } }) => {
  try {  // a classic worker (LiteRT.js loads its WebAssembly glue with importScripts), importing the ES module
    const { loadLiteRt, loadAndCompile, Tensor } = await import("../dist/index.js");
    await loadLiteRt(new URL("./", location.href).href);  // this worker lives beside the .wasm files it finds
    const model = await loadAndCompile(new URL("../../model.tflite", location.href).href, { accelerator: "wasm" });
    const input = new Tensor(Float32Array.from(pixels), shape);
    const times = [];
    let output;
    for (let run = 0; run < repeats + 3; run++) {  // 3 warm-up runs
      const started = performance.now();
      const results = await model.run(input);
      const elapsed = performance.now() - started;
      output = Array.from(results[0].toTypedArray());
      results.forEach((tensor) => tensor.delete());
      if (run >= 3) times.push(elapsed);
    }
    postMessage({ times, output });
  } catch (error) {
    postMessage({ error: String(error) });
  }
};
"""  # the shipped model.tflite in LiteRT.js's WebAssembly CPU runtime (XNNPACK), in a worker like the NumPy pass
LITERT_RUN = """([pixels, shape, repeats]) => new Promise((resolve) => {
  const worker = new Worker("/litert/core/wasm/run.js");
  worker.onmessage = (event) => { worker.terminate(); resolve(event.data); };
  worker.onerror = (event) => resolve({ error: event.message });
  worker.postMessage({ pixels, shape, repeats });
})"""  # started from the page (its main thread's MicroPython also defines the global `Module` LiteRT.js uses)


def add_litert(dist: Path, model_dir: Path) -> None:
    """LiteRT.js and the model's .tflite under dist/litert/, its one bare import pointed at wasm-utils' file."""
    unpacked = Path(tempfile.mkdtemp(prefix="litert-"))
    core, utils = (
        build.npm_package(spec, build.DEFAULT_CACHE, unpacked / spec.split("/")[1], integrity)
        for spec, integrity in LITERT_NPM.items()
    )
    shutil.copytree(core, dist / "litert" / "core")
    shutil.copytree(utils, dist / "litert" / "wasm-utils")
    index = dist / "litert" / "core" / "dist" / "index.js"
    index.write_text(index.read_text().replace('from "@litertjs/wasm-utils"', 'from "../../wasm-utils/dist/index.js"'))
    shutil.copyfile(model_dir / "model.tflite", dist / "litert" / "model.tflite")
    (dist / "litert" / "core" / "wasm" / "run.js").write_text(LITERT_WORKER)


def add_floor(folder: Path) -> None:
    """dist/floor/: the published Pyodide runtime files (not the bundle's trimmed ones), compressed the same way."""
    runtime = build.npm_package(build.PYODIDE_NPM, build.DEFAULT_CACHE, Path(tempfile.mkdtemp(prefix="pyodide-")))
    folder.mkdir()
    for name in build.RUNTIME_SHA256:
        shutil.copyfile(runtime / name, folder / name)
    (folder / "index.html").write_text(FLOOR_PAGE)
    build.precompress(folder)


def add_same_work_floor(dist: Path) -> None:
    """dist/same-work/: SAME_WORK_PAGE with its worker pointed at the bundle's own folders."""
    pyodide, app = (next(dist.glob(f"{prefix}-*")).name for prefix in ("pyodide", "app"))
    core = sorted(path.name for path in (dist / app / "rendernet").glob("*.py"))
    folder = dist / "same-work"
    folder.mkdir()
    (folder / "index.html").write_text(SAME_WORK_PAGE)
    (folder / "worker.js").write_text(
        SAME_WORK_WORKER.replace("__PYODIDE__", pyodide)
        .replace("__APP__", app)
        .replace("__CORE__", json.dumps(core))
        .replace("__REFERENCE__", json.dumps((dist / app / "model" / "reference.npz").exists()))
    )


def fresh_browser(playwright, profile: Path):
    """Debian's chromium with a new profile at `profile`: a first visit."""
    return playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)


ADAPTATION_CASES = ((500, 6), (500, 100), (500, 1000))  # (rows re-scored, corrections fitted) per timing


def pool_batches(playwright, url: str, work: Path, count: int = 100, batches: int = 3) -> dict:
    """Images per second of a batch of `count` photos with 1 and with 2 workers (same profile, same photos)."""
    photos = []
    for index, path in enumerate(sorted((ROOT / "data" / "sample").glob("*/*.webp"))[:count]):
        photos.append(work / "photos" / f"{index:03d}-{path.stem}.jpg")
        photos[-1].parent.mkdir(exist_ok=True)
        Image.open(path).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC).save(photos[-1], "JPEG", quality=90)
    context = fresh_browser(playwright, work / "pool-profile")
    report = {}
    for workers in (1, 2):
        page = context.new_page()
        page.add_init_script(LONG_TASKS)
        open_until_ready(page, f"{url}&workers={workers}")
        rates, long_tasks = [], []
        for batch in range(batches):
            if batch:
                page.click("#clear")
            started = page.evaluate("performance.now()")
            page.set_input_files("#file-input", [str(path) for path in photos])
            page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {len(photos)}", timeout=600_000)
            rates.append(len(photos) / ((page.evaluate("performance.now()") - started) / 1000))
            long_tasks += [duration for begun, duration in page.evaluate("window.longTasks") if begun >= started]
        peaks = json.loads(page.evaluate("window.rendernet_debug.peak_memory()"))
        report[workers] = {
            "images_per_second": [round(rate, 2) for rate in rates],
            "peak_wasm_memory_mb_per_worker": {slot: round(peak / 2**20) for slot, peak in peaks.items()},
            "main_thread_tasks_over_50_ms": len(long_tasks),
        }
        page.close()
    context.close()
    later = [statistics.median(report[workers]["images_per_second"][1:]) for workers in (1, 2)]
    report["two_workers_over_one_after_the_first_batch"] = round(later[1] / later[0], 2)
    report["two_workers_over_one_first_batch"] = round(report[2]["images_per_second"][0] / report[1]["images_per_second"][0], 2)
    return report


def open_until_ready(page, url):
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(READY, state="attached", timeout=120_000)
    return time.perf_counter() - started


class Link:
    """A shared downlink of `megabits` per second with `rtt_ms` round trips, applied by the server to every
    response (page, worker and service worker alike): the throttled fresh visit."""

    def __init__(self, megabits: float = 20, rtt_ms: float = 40):
        self.bytes_per_second, self.rtt = megabits * 1e6 / 8, rtt_ms / 1000
        self.lock, self.free_at = threading.Lock(), 0.0

    def handler(self, base):
        link = self

        class Throttled(base):
            def send_head(self):
                time.sleep(link.rtt)
                return super().send_head()

            def copyfile(self, source, outputfile):
                while chunk := source.read(1 << 16):
                    with link.lock:
                        link.free_at = max(time.perf_counter(), link.free_at) + len(chunk) / link.bytes_per_second
                        until = link.free_at
                    time.sleep(max(0.0, until - time.perf_counter()))
                    outputfile.write(chunk)

        return Throttled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--images", type=int, default=40, help="images timed after 5 warm-up images")
    parser.add_argument("--screenshot", help="also save a PNG of the page with its results here")
    parser.add_argument("--pool-only", action="store_true", help="only the pool's batches of 100 photos")
    parser.add_argument("--adaptation-only", action="store_true", help="only the re-fit and re-score after a correction")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="rendernet-bench-"))
    dist = work / "dist"
    build.build(dist, Path(args.model), build.DEFAULT_CACHE)
    add_litert(dist, Path(args.model))
    add_floor(dist / "floor")
    add_same_work_floor(dist)
    model = load_model(args.model)
    served = []  # (path, bytes) of every response body the server sent
    requested = []  # the path of every request, answered with a body or not (304)

    class CountingHandler(build.Handler):
        def send_head(self):
            requested.append(self.path)
            return super().send_head()

        def copyfile(self, source, outputfile):
            start = source.tell()
            super().copyfile(source, outputfile)
            served.append((self.path, source.tell() - start))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/?debug"  # ?debug: the page's benchmark hooks
    images = sorted((ROOT / "data" / "sample").glob("*/*.webp"))
    images = (images * (1 + (args.images + 5) // len(images)))[: args.images + 5]

    if args.pool_only:
        with sync_playwright() as playwright:
            print(json.dumps(pool_batches(playwright, url, work)))
        return
    if args.adaptation_only:
        with sync_playwright() as playwright:
            context = fresh_browser(playwright, work / "profile")
            page = context.new_page()
            open_until_ready(page, url)
            print(
                json.dumps(
                    {
                        f"{rows}_rows_{corrections}_corrections_ms": sorted(
                            json.loads(page.evaluate(f"window.rendernet_debug.time_adaptation({rows}, {corrections})"))
                        )
                        for rows, corrections in ADAPTATION_CASES
                    }
                )
            )
            context.close()
        return
    with sync_playwright() as playwright:
        pool = pool_batches(playwright, url, work)
        context = fresh_browser(playwright, work / "profile")
        page = context.new_page()
        page.add_init_script(LONG_TASKS)
        pool_served = len(served)  # the pool's visits came first: the first visit's responses are the ones after
        fresh = open_until_ready(page, url)
        fresh_timings = page.evaluate("window.rendernet_debug.timings")
        first_load, first_requests = served[pool_served:], len(requested)
        first_load_bytes = sum(size for _, size in first_load)
        files = {path.split("?")[0].lstrip("/") or "index.html" for path, size in first_load if size}
        first_load_raw = sum((dist / name).stat().st_size for name in files)
        first_load_smallest = sum(build.served_size(dist / name) for name in files)  # a host sending the .br copies
        repeats = [open_until_ready(page, url)]
        repeat_bytes = sum(size for _, size in served[pool_served + len(first_load) :])
        repeats += [open_until_ready(page, url) for _ in range(4)]
        repeat = statistics.median(repeats)
        repeat_end = len(requested)
        page.set_input_files("#file-input", [str(path) for path in images[:5]])
        page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 5", timeout=120_000)
        first_rows = [json.loads(row.get_attribute("data-result")) for row in page.query_selector_all("#results tbody tr")]
        page.click("#clear")
        batch_started = page.evaluate("performance.now()")
        page.set_input_files("#file-input", [str(path) for path in images[5:]])
        page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {args.images}", timeout=300_000)
        batch_ms = page.evaluate("performance.now()") - batch_started
        batch_long_tasks = [duration for start, duration in page.evaluate("window.longTasks") if start >= batch_started]
        rows = [json.loads(row.get_attribute("data-result")) for row in page.query_selector_all("#results tbody tr")]
        matmul = page.evaluate("window.rendernet_debug.matmul()")
        litert_pixels = classify_file(model, images[-1].name, images[-1].read_bytes())[1]
        forward, litert_times, ratios = [], [], []
        for _ in range(FORWARD_ROUNDS):
            numpy_times = json.loads(page.evaluate(f"window.rendernet_debug.time_forward({PASSES_PER_ROUND})"))
            litert = page.evaluate(LITERT_RUN, [litert_pixels.ravel().tolist(), [1, *litert_pixels.shape], PASSES_PER_ROUND])
            if "error" in litert:
                sys.exit(f"LiteRT.js failed: {litert['error']}")
            forward += numpy_times
            litert_times += litert["times"]
            ratios.append(statistics.median(numpy_times) / statistics.median(litert["times"]))
        jpegs = []  # the same images re-saved as JPEG: Pyodide decodes with libjpeg 9, native with libjpeg-turbo
        for path in images[5:]:
            jpegs.append(work / "jpeg" / f"{path.stem}.jpg")
            jpegs[-1].parent.mkdir(exist_ok=True)
            Image.open(path).save(jpegs[-1], "JPEG", quality=90)
        page.click("#clear")
        page.set_input_files("#file-input", [str(path) for path in jpegs])
        page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {len(jpegs)}", timeout=300_000)
        jpeg_rows = [json.loads(row.get_attribute("data-result")) for row in page.query_selector_all("#results tbody tr")]
        timings = page.evaluate("window.rendernet_debug.timings")
        profile = json.loads(page.evaluate("window.rendernet_debug.profile(5)"))
        adaptation = {
            f"{rows}_rows_{corrections}_corrections": percentile(
                json.loads(page.evaluate(f"window.rendernet_debug.time_adaptation({rows}, {corrections})")), 0.5
            )
            for rows, corrections in ADAPTATION_CASES
        }
        if args.screenshot:
            page.set_viewport_size({"width": 1000, "height": 1000})
            page.screenshot(path=args.screenshot)
        context.close()
        throttled_server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Link().handler(build.Handler), directory=str(dist))
        )
        threading.Thread(target=throttled_server.serve_forever, daemon=True).start()
        context = fresh_browser(playwright, work / "throttled-profile")
        throttled = open_until_ready(context.new_page(), f"http://127.0.0.1:{throttled_server.server_address[1]}/")
        context.close()
        throttled_server.shutdown()
        context = fresh_browser(playwright, work / "floor-profile")
        floor_page, floor_url = context.new_page(), url.replace("/?debug", "/floor/")
        floor_fresh = open_until_ready(floor_page, floor_url)
        floor_repeat = statistics.median(open_until_ready(floor_page, floor_url) for _ in range(5))
        context.close()
        context = fresh_browser(playwright, work / "same-work-profile")
        same_page, same_url = context.new_page(), url.replace("/?debug", "/same-work/")
        same_fresh = open_until_ready(same_page, same_url)
        same_repeat = statistics.median(open_until_ready(same_page, same_url) for _ in range(5))
        context.close()
    server.shutdown()

    native_full = [classify_file(model, path.name, path.read_bytes())[0]["ms"] for path in images[5:]]
    pixels = classify_file(model, "x", images[0].read_bytes())[1][None]
    native_forward = []
    for _ in range(60):
        started = time.perf_counter()
        model.forward(pixels)
        native_forward.append((time.perf_counter() - started) * 1000)
    browser_full = [row["ms"] for row in first_rows + rows]  # the first image of the visit included
    positive = model.classes[-1]
    jpeg_native = [classify_file(model, path.name, path.read_bytes())[0] for path in jpegs]
    jpeg_differences = sorted(
        abs(row["probabilities"][positive] - native["probabilities"][positive])
        for native, row in zip(jpeg_native, jpeg_rows, strict=True)
    )
    results = {
        "matmul_in_the_page": matmul,
        "pool_100_photos": pool,
        "ready_seconds": {
            "fresh_profile": round(fresh, 3),
            "repeat_visit_median_of_5": round(repeat, 3),
            "repeat_visits": [round(value, 3) for value in repeats],
            "fresh_profile_at_20_mbit_40_ms": round(throttled, 3),
        },
        "floor_ready_seconds": {"fresh_profile": round(floor_fresh, 3), "repeat_visit_median_of_5": round(floor_repeat, 3)},
        "same_work_floor_ready_seconds": {"fresh_profile": round(same_fresh, 3), "repeat_visit_median_of_5": round(same_repeat, 3)},
        "app_over_same_work_floor_seconds": {
            "fresh_profile": round(fresh - same_fresh, 3),
            "repeat_visit": round(repeat - same_repeat, 3),
        },
        "first_load": {
            "bytes_transferred": first_load_bytes,
            "raw_bytes_of_those_files": first_load_raw,
            "smallest_copies_of_those_files": first_load_smallest,
            "responses": len(first_load),
            "model_weights_bytes": model.manifest["weights"]["bytes"],
        },
        "repeat_visit_bytes_transferred": repeat_bytes,
        "per_image_ms": {
            "browser_forward": {"p50": percentile(forward, 0.5), "p95": percentile(forward, 0.95)},
            "browser_decode_preprocess_forward": {"p50": percentile(browser_full, 0.5), "p95": percentile(browser_full, 0.95)},
            "litert_js_forward": {"p50": round(percentile(litert_times, 0.5), 3), "p95": round(percentile(litert_times, 0.95), 3)},
            "native_forward": {"p50": round(percentile(native_forward, 0.5), 3), "p95": round(percentile(native_forward, 0.95), 3)},
            "native_decode_preprocess_forward": {"p50": percentile(native_full, 0.5), "p95": percentile(native_full, 0.95)},
        },
        "images_timed": len(browser_full),
        "batch": {
            "images": args.images,
            "wall_ms_per_image": round(batch_ms / args.images, 1),
            "main_thread_long_tasks": len(batch_long_tasks),
            "longest_main_thread_task_ms": round(max(batch_long_tasks, default=0), 1),
        },
        "first_image_ms": first_rows[0]["ms"],
        "adaptation_refit_and_rescore_ms_p50": adaptation,
        "sw_js_requests_per_repeat_visit": sum(path.startswith("/sw.js") for path in requested[first_requests:repeat_end])
        / len(repeats),
        "jpeg_q90_page_vs_native_probability_difference": {
            "median": round(statistics.median(jpeg_differences), 6),
            "max": round(jpeg_differences[-1], 6),
            "labels_differ": sum(row["label"] != native["label"] for native, row in zip(jpeg_native, jpeg_rows, strict=True)),
            "images": len(jpegs),
        },
        "browser_forward_ms_by_layer_type": {key: value for key, value in profile.items() if key != "wasm_memory_bytes"},
        "browser_peak_wasm_memory_bytes": profile.get("wasm_memory_bytes"),
        "macs_per_image": model.manifest["macs"],
        "fresh_visit_ms_since_navigation": {key: round(value) for key, value in fresh_timings.items()},
        "repeat_visit_ms_since_navigation": {key: round(value) for key, value in timings.items()},
    }
    per_image = results["per_image_ms"]
    numpy_probabilities = model.forward(litert_pixels[None])[0]
    results["litert_js_vs_numpy_max_probability_difference"] = float(np.abs(numpy_probabilities - litert["output"]).max())
    results["numpy_to_litert_js_ratio"] = round(statistics.median(ratios), 1)
    results["numpy_to_litert_js_ratio_by_round"] = [round(ratio, 1) for ratio in ratios]
    results["browser_to_native_ratio"] = {
        "forward": round(statistics.median(forward) / statistics.median(native_forward), 1),
        "decode_preprocess_forward": round(statistics.median(browser_full) / statistics.median(native_full), 1),
    }
    print(
        f"ready: fresh profile {fresh:.2f} s, repeat visit {repeat:.2f} s (median of 5), fresh at 20 Mbit/s and "
        f"40 ms round trips {throttled:.2f} s; the floor (bare Pyodide, 1+1): fresh {floor_fresh:.2f} s, "
        f"repeat {floor_repeat:.2f} s; the same work as the app's worker in a plain worker: fresh {same_fresh:.2f} s, "
        f"repeat {same_repeat:.2f} s (the app +{fresh - same_fresh:.2f} / +{repeat - same_repeat:.2f} s)"
    )
    print(
        f"pool, 100 photos, images per second: 1 worker {pool[1]['images_per_second']}, 2 workers "
        f"{pool[2]['images_per_second']} (2 over 1 after the first batch: {pool['two_workers_over_one_after_the_first_batch']}x)"
    )
    print(
        f"first load: {first_load_bytes:,} bytes on the wire in {len(first_load)} responses ({first_load_raw:,} "
        f"uncompressed; {first_load_smallest:,} as brotli where build.py wrote .br copies); repeat visit: "
        f"{repeat_bytes:,} bytes"
    )
    print(f"{'per image (ms)':<36}{'p50':>8}{'p95':>8}")
    for name, values in per_image.items():
        print(f"{name:<36}{values['p50']:>8.2f}{values['p95']:>8.2f}")
    print(
        f"NumPy pass in Pyodide (matrix products: {matmul}) / LiteRT.js: x{results['numpy_to_litert_js_ratio']} "
        f"(median of {FORWARD_ROUNDS} "
        f"alternating rounds: {results['numpy_to_litert_js_ratio_by_round']}; outputs differ by at most "
        f"{results['litert_js_vs_numpy_max_probability_difference']:.1e})"
    )
    print(
        f"browser/native: forward x{results['browser_to_native_ratio']['forward']}, "
        f"decode+preprocess+forward x{results['browser_to_native_ratio']['decode_preprocess_forward']}"
    )
    print(
        "browser forward, ms per layer type: "
        + ", ".join(f"{kind} {ms}" for kind, ms in results["browser_forward_ms_by_layer_type"].items())
    )
    print(f"worker peak WebAssembly memory: {results['browser_peak_wasm_memory_bytes']} bytes")
    batch = results["batch"]
    print(
        f"batch of {batch['images']}: {batch['wall_ms_per_image']} ms per image wall time; main-thread tasks over "
        f"50 ms: {batch['main_thread_long_tasks']}, longest {batch['longest_main_thread_task_ms']} ms"
    )
    print("JPEG q90, page vs native P({}): {}".format(positive, results["jpeg_q90_page_vs_native_probability_difference"]))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
