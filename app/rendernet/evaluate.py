"""Score a model on files and labelled folders with the browser's own preprocess and forward pass.

Backs `rendernet classify` (files and folders, in parallel with --jobs), `rendernet evaluate` and
bench/independent.py. NumPy and Pillow only: no TensorFlow.
"""

import multiprocessing
import sys
from pathlib import Path

import numpy as np

from .classify import classify_file
from .errors import DataError
from .metrics import evaluate
from .model import load_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # what a folder is walked for


def image_paths(names) -> list:
    """Files as given, and each folder walked (sorted, hidden entries left out) for files with an image suffix."""
    paths = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            paths += [str(found) for found in sorted(path.rglob("*"))
                      if found.suffix.lower() in IMAGE_SUFFIXES and found.is_file()
                      and not any(part.startswith(".") for part in found.relative_to(path).parts)]
        else:
            paths.append(str(name))
    return paths


_worker_model = None


def _load_worker_model(folder) -> None:
    global _worker_model
    _worker_model = load_model(folder)


def _classify_in_worker(name: str) -> dict:
    return classify_path(_worker_model, name)


def classify_paths(model, folder, names, jobs: int = 1):
    """Yield classify_path's result for each name, in order; with jobs > 1, from that many processes (each loads
    the model from `folder` once)."""
    if jobs <= 1:
        yield from (classify_path(model, name) for name in names)
        return
    with multiprocessing.get_context("spawn").Pool(jobs, _load_worker_model, (str(folder),)) as pool:
        yield from pool.imap(_classify_in_worker, names, chunksize=4)


def classify_path(model, name: str) -> dict:
    """{"file", "label", "probabilities"} or {"file", "error"} for one file, as the page makes it."""
    try:
        data = Path(name).read_bytes()
    except OSError as error:
        return {"file": name, "error": f"cannot read: {error.strerror or error}"}
    result, _, _ = classify_file(model, name, data)
    result.pop("ms", None)
    return result


def printable(path) -> str:
    """A path as text even when its name is not valid UTF-8 (those bytes shown as \\x.. escapes)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def class_files(folder: Path, skipped: list | None = None) -> list:
    """Every regular file under a class folder, hidden ones left out, in a stable order.

    Symbolic links (not followed) and names that are not valid UTF-8 are left out
    too, and appended to `skipped` as (path, reason)."""
    files = []
    for path in sorted(folder.rglob("*")):
        reason = None
        if path.name.startswith("."):
            continue
        if path.is_symlink():
            reason = "symbolic link (not followed)"
        elif not path.is_file():
            continue
        elif printable(path) != str(path):
            reason = "file name is not valid UTF-8"
        if reason is None:
            files.append(path)
        elif skipped is not None:
            skipped.append((printable(path), reason))
    return files


def class_folders(model, data_dir: Path) -> list:
    """DATA_DIR's class sub-folders; DataError unless each is named after one of the model's classes."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder")
    folders = sorted(path for path in data_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders or any(folder.name not in model.classes for folder in folders):
        raise DataError(f"the sub-folders of {data_dir} must be named after the model's classes {model.classes}; "
                         f"found {[folder.name for folder in folders]}")
    return folders


def evaluate_folder(model, data_dir, progress: bool = True) -> dict:
    """Accuracy, per-class precision/recall, confusion and ROC AUC over DATA_DIR/<class>/*, plus skipped files."""
    files = [(model.classes.index(folder.name), path) for folder in class_folders(model, Path(data_dir))
             for path in class_files(folder)]
    labels, probabilities, skipped = [], [], []
    for number, (label, path) in enumerate(files, start=1):
        result = classify_path(model, str(path))
        if "error" in result:
            skipped.append(result)
        else:
            labels.append(label)
            probabilities.append([result["probabilities"][name] for name in model.classes])
        if progress:
            print(f"\revaluating {number}/{len(files)}", end="" if number < len(files) else "\n", file=sys.stderr,
                  flush=True)
    report = evaluate(np.array(labels, dtype=int), np.array(probabilities).reshape(-1, len(model.classes)),
                      model.classes, model.threshold)
    report["skipped"] = skipped
    return report
