"""Where rendernet keeps downloads and derived files, and the one way it downloads something once.

Standard library only: build.py (which needs nothing installed), training and
the benchmarks all use it.
"""

import os
import shutil
from pathlib import Path


def cache_root() -> Path:
    """$RENDERNET_CACHE, else ~/.cache/rendernet. Below it: build/, preprocessed/, backbones/, packages..."""
    return Path(os.environ.get("RENDERNET_CACHE") or Path.home() / ".cache" / "rendernet")


def fetch_once(folder: Path, fetch) -> Path:
    """Return `folder`, first running `fetch(folder)` into it, emptied, unless an earlier run finished
    (marked by a `.complete` file), so an interrupted download is started over rather than trusted."""
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        fetch(folder)
        (folder / ".complete").touch()
    return folder
