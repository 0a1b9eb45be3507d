"""Classify many files by path: the folder walk, and a pool of processes (`rendernet classify --jobs`).

The command line's and the cluster's part of classifying (the page reads files itself and calls classify_file);
NumPy and Pillow only.
"""

import multiprocessing
import stat
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .classify import classify_file
from .model import load_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # what a folder is walked for
WORKER_DIED = "its worker process died on this file (killed, or out of memory)"


def image_paths(names, skipped: Counter | None = None) -> list:
    """Files as given, and each folder walked (sorted, hidden entries left out) for files with an image suffix; what
    a walk leaves out is counted in `skipped` by reason ("not an image suffix: .heic", "dangling link")."""
    paths = []
    for name in names:
        path = Path(name)
        if not path.is_dir():
            paths.append(str(name))
            continue
        for found in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in found.relative_to(path).parts) or found.is_dir():
                continue
            if not found.exists():
                reason = "dangling link"
            elif found.suffix.lower() not in IMAGE_SUFFIXES:
                reason = f"not an image suffix: {found.suffix.lower() or '(none)'}"
            elif not found.is_file():
                reason = "not a regular file"
            else:
                paths.append(str(found))
                continue
            if skipped is not None:
                skipped[reason] += 1
    return paths


_worker_model = None


def _load_worker_model(folder) -> None:
    global _worker_model
    _worker_model = load_model(folder)


def _classify_in_worker(name: str) -> dict:
    return classify_path(_worker_model, name)


def classify_paths(model, folder, names, jobs: int = 1):
    """Yield classify_path's result for each name, in order; with jobs > 1, from that many processes (each loads
    the model from `folder` once), 2 files per process in flight.

    A worker that dies (killed, out of memory) breaks the pool: the files it had in flight are run again, one at
    a time, each in a process of its own; a file that kills that one too gets the error WORKER_DIED. Then a fresh
    pool goes on with the rest. No file is lost or reported twice."""
    if jobs <= 1:
        yield from (classify_path(model, name) for name in names)
        return
    remaining = deque(names)
    while remaining:
        lost = []
        with _worker_pool(jobs, folder) as pool:
            in_flight = deque()
            try:
                while remaining or in_flight:
                    while remaining and len(in_flight) < 2 * jobs:
                        in_flight.append((remaining[0], pool.submit(_classify_in_worker, remaining[0])))
                        remaining.popleft()
                    name, future = in_flight[0]
                    result = future.result()
                    in_flight.popleft()
                    yield result
            except BrokenProcessPool:
                lost = [name for name, _ in in_flight]
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        for name in lost:
            yield _classify_alone(folder, name)


def _worker_pool(jobs: int, folder) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_load_worker_model, initargs=(str(folder),)
    )


def _classify_alone(folder, name: str) -> dict:
    """One file in a process of its own: a file that kills it is an error, not a crash of the run."""
    with _worker_pool(1, folder) as pool:
        try:
            return pool.submit(_classify_in_worker, name).result()
        except BrokenProcessPool:
            return {"file": printable(name), "error": WORKER_DIED}


def classify_path(model, name: str) -> dict:
    """{"file", "label", "probabilities"} or {"file", "error"} for one file, as the page makes it. The file is read
    as Pillow needs it (a huge non-image costs its header, not its size); a FIFO, device or folder is refused
    unopened; a name that is not valid UTF-8 is reported with its bytes as \\x.. escapes."""
    shown = printable(name)
    try:
        mode = Path(name).stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            return {"file": shown, "error": f"not a regular file ({kind})"}
        with open(name, "rb") as handle:
            result, _, _ = classify_file(model, shown, handle)
    except OSError as error:
        return {"file": shown, "error": f"cannot read: {error.strerror or error}"}
    result.pop("ms", None)
    return result


def printable(path) -> str:
    """A path as text even when its name is not valid UTF-8 (those bytes shown as \\x.. escapes)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
