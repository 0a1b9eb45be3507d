"""Score a model on labelled folders with the browser's own preprocess and forward pass.

Backs `rendernet evaluate` and bench/independent.py; the class folders' walk is shared with `rendernet adapt`,
`rendernet reference` and training. NumPy and Pillow only: no TensorFlow.
"""

import sys
from pathlib import Path

import numpy as np

from .batch import classify_path, printable
from .errors import DataError
from .metrics import evaluate


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
        raise DataError(
            f"the sub-folders of {data_dir} must be named after the model's classes {model.classes}; "
            f"found {[folder.name for folder in folders]}"
        )
    return folders


def evaluate_folder(model, data_dir, progress: bool = True) -> dict:
    """Accuracy, per-class precision/recall, confusion and ROC AUC over DATA_DIR/<class>/*, plus skipped files."""
    files = [
        (model.classes.index(folder.name), path) for folder in class_folders(model, Path(data_dir)) for path in class_files(folder)
    ]
    labels, probabilities, skipped = [], [], []
    for number, (label, path) in enumerate(files, start=1):
        result = classify_path(model, str(path))
        if "error" in result:
            skipped.append(result)
        else:
            labels.append(label)
            probabilities.append([result["probabilities"][name] for name in model.classes])
        if progress:
            print(f"\revaluating {number}/{len(files)}", end="" if number < len(files) else "\n", file=sys.stderr, flush=True)
    report = evaluate(
        np.array(labels, dtype=int), np.array(probabilities).reshape(-1, len(model.classes)), model.classes, model.threshold
    )
    report["skipped"] = skipped
    return report
