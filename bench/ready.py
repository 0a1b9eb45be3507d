"""Time to ready of built sites, fresh and repeat, taking turns: an A/B of start-up changes.

    python bench/ready.py DIST [DIST ...] [--runs 8] [--repeats 3]

Each DIST (a `build.py --out` folder) is served on 127.0.0.1; each run opens every site in turn in a fresh
Chromium profile (the first visit) and reloads it `--repeats` times (repeat visits, from the service worker's
checked copy). Prints, per site, the medians of the page's own `ready` mark (ms since navigation, `?debug`'s
`rendernet_debug.timings`) and of the wall time from `page.goto` to the ready state. Sites taking turns see the
same load from the rest of the machine; the spread between runs is about ±0.1 s on 2 cores.
"""

import argparse
import functools
import http.server
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from chromium import CHROMIUM, CHROMIUM_FLAGS, READY

import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sites", nargs="+", type=Path, help="build.py output folders")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    urls = {}
    for site in args.sites:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(build.Handler, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        urls[site] = f"http://127.0.0.1:{server.server_address[1]}/?debug"
    times = {site: {"fresh": [], "repeat": [], "fresh_wall": [], "repeat_wall": []} for site in args.sites}
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profiles:
        for run in range(args.runs):
            for index, site in enumerate(args.sites):
                context = playwright.chromium.launch_persistent_context(
                    Path(profiles) / f"{run}-{index}", executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
                )
                page = context.new_page()
                for visit in range(1 + args.repeats):
                    started = time.perf_counter()
                    page.goto(urls[site])
                    page.wait_for_selector(READY, state="attached", timeout=120_000)
                    kind = "fresh" if visit == 0 else "repeat"
                    times[site][f"{kind}_wall"].append(time.perf_counter() - started)
                    times[site][kind].append(page.evaluate("window.rendernet_debug.timings.ready") / 1000)
                context.close()
            print(f"run {run + 1} of {args.runs}", file=sys.stderr)
    print(f"{'site':40s} {'fresh':>7} {'repeat':>7}  {'wall: fresh':>11} {'repeat':>7}   (s, medians)")
    for site, values in times.items():
        median = {key: statistics.median(series) for key, series in values.items()}
        print(
            f"{str(site)[-40:]:40s} {median['fresh']:7.3f} {median['repeat']:7.3f}  "
            f"{median['fresh_wall']:11.3f} {median['repeat_wall']:7.3f}"
        )


if __name__ == "__main__":
    main()
