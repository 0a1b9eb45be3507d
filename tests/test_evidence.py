"""Evidence from the file itself (rendernet.evidence): a camera or a 3D tool named in an image's metadata is
reported beside the answer by classify_file, the CLI and the CSV, and never changes the probabilities."""

import json
import subprocess
import sys

import numpy as np
from conftest import DEFAULT_MODEL, ROOT, sample_files
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rendernet import load_model
from rendernet.classify import classify_file
from rendernet.evidence import EXIF_IFD, EXPOSURE_TIME, F_NUMBER, ISO, MAKE, MODEL, SOFTWARE, file_evidence


def write_tagged(folder):
    """The same sample picture as a camera JPEG, a Blender PNG (text chunk), a V-Ray JPEG (EXIF Software), a file
    with a hostile tag, and one with no metadata at all. Returns {name: path}."""
    picture = Image.open(sample_files("real")[0]).convert("RGB")
    paths = {name: folder / name for name in ("camera.jpg", "blender.png", "vray.jpg", "hostile.jpg", "plain.png")}
    camera = Image.Exif()
    camera[MAKE], camera[MODEL] = "Canon", "Canon EOS 80D"
    camera[EXIF_IFD] = {EXPOSURE_TIME: 1 / 60, F_NUMBER: 4.0, ISO: 400}
    picture.save(paths["camera.jpg"], quality=95, exif=camera)
    info = PngInfo()
    info.add_text("Software", "Blender 4.2.0")
    picture.save(paths["blender.png"], pnginfo=info)
    vray = Image.Exif()
    vray[SOFTWARE] = "V-Ray 6 for 3ds Max"
    picture.save(paths["vray.jpg"], quality=95, exif=vray)
    hostile = Image.Exif()
    hostile[MAKE], hostile[MODEL] = '=HYPERLINK("x")\x00\x1b[31m', "<img src=x onerror=alert(1)>" * 5
    picture.save(paths["hostile.jpg"], quality=95, exif=hostile)
    picture.save(paths["plain.png"])
    return paths


def test_cameras_and_renderers_are_named_and_nothing_else(tmp_path):
    paths = write_tagged(tmp_path)
    assert file_evidence(paths["camera.jpg"]) == {"camera": "Camera: Canon EOS 80D, 1/60 s, f/4, ISO 400"}
    assert file_evidence(paths["blender.png"]) == {"renderer": "Made with Blender 4.2.0 (a 3D tool)"}
    assert file_evidence(paths["vray.jpg"].read_bytes()) == {"renderer": "Made with V-Ray 6 for 3ds Max (a 3D tool)"}
    assert file_evidence(paths["plain.png"]) == {}
    hostile = file_evidence(paths["hostile.jpg"])["camera"]
    assert "\x00" not in hostile and "\x1b" not in hostile and len(hostile) < 140  # cleaned and cut; still text
    assert file_evidence(b"not an image") == {} and file_evidence(tmp_path / "missing.jpg") == {}


def test_evidence_never_changes_the_answer(tmp_path):
    """The Blender PNG and the untagged PNG hold the same pixels: the same probabilities, only the evidence differs."""
    paths = write_tagged(tmp_path)
    model = load_model(DEFAULT_MODEL)
    tagged, _, _ = classify_file(model, "blender.png", paths["blender.png"].read_bytes())
    plain, _, _ = classify_file(model, "plain.png", paths["plain.png"].read_bytes())
    assert tagged["probabilities"] == plain["probabilities"] and "evidence" not in plain
    assert tagged["evidence"] == {"renderer": "Made with Blender 4.2.0 (a 3D tool)"}


def test_the_cli_and_its_csv_carry_the_evidence(tmp_path):
    paths = write_tagged(tmp_path)
    run = [sys.executable, "-m", "rendernet.cli", "classify", "--model", str(DEFAULT_MODEL)]
    result = subprocess.run(
        [*run, str(paths["camera.jpg"]), str(paths["plain.png"])], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["evidence"]["camera"].startswith("Camera: Canon EOS 80D") and "evidence" not in lines[1]
    result = subprocess.run(
        [*run, "--csv", str(paths["hostile.jpg"]), str(paths["vray.jpg"])], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    header, hostile, vray = [line.split(",") for line in result.stdout.splitlines()][:3]
    assert header[-1] == "evidence" and vray[-1] == "Made with V-Ray 6 for 3ds Max (a 3D tool)"
    assert np.all([not cell.startswith("=") for cell in hostile])  # spreadsheet-safe like every cell
