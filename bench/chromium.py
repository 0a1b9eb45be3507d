"""Opening the built site in Debian's Chromium, for the site tests and bench/browser.py: the browser, its quiet
flags, the page's ready state and the script that records main-thread long tasks."""

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's; never `playwright install`
CHROMIUM_FLAGS = [  # no traffic of Chromium's own (updates, metrics, extensions): only the page's requests
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--disable-default-apps",
]
READY = "body[data-state=ready]"  # the page sets it once it can classify
LONG_TASKS = (Path(__file__).with_name("long_tasks.js")).read_text()  # an init script for every page
