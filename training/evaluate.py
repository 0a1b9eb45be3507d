"""Score a model on files and labelled folders with the browser's own preprocess and forward pass.

Backs `rendernet classify`, `rendernet evaluate` and bench/independent.py; no TensorFlow.
"""

import sys
from pathlib import Path

import numpy as np
from rendernet.classify import classify_file

from .data import class_files
from .errors import TrainingError
from .metrics import evaluate


def classify_path(model, name: str) -> dict:
    """{"file", "label", "probabilities"} or {"file", "error"} for one file, as the page makes it."""
    try:
        data = Path(name).read_bytes()
    except OSError as error:
        return {"file": name, "error": f"cannot read: {error.strerror or error}"}
    result, _, _ = classify_file(model, name, data)
    result.pop("ms", None)
    return result


def class_folders(model, data_dir: Path) -> list:
    """DATA_DIR's class sub-folders; ValueError unless each is named after one of the model's classes."""
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir} is not a folder")
    folders = sorted(path for path in data_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders or any(folder.name not in model.classes for folder in folders):
        raise TrainingError(f"the sub-folders of {data_dir} must be named after the model's classes {model.classes}; "
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
