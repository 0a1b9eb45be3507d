"""Model files made to hurt: non-finite weights, a manifest nested 100,000 deep, zips that inflate to gigabytes or
hold two models. Every loader (load_model, `rendernet classify`, build.py) refuses them with one line, before
using much memory."""

import io
import json
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, example_folder, sample_files
from rendernet import load_model
from rendernet.errors import ModelError
from rendernet.manifest import sha256_bytes

import build


def copy_of_default(folder):
    shutil.copytree(DEFAULT_MODEL, folder)
    return folder


def with_weights(folder, change):
    """Rewrite weights.npz by change(arrays), with model.json's sha256 updated: only the content checks refuse it."""
    with np.load(folder / "weights.npz") as archive:
        arrays = {key: archive[key].copy() for key in archive.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / "weights.npz").write_bytes(buffer.getvalue())
    manifest = json.loads((folder / "model.json").read_text())
    manifest["weights"].update(sha256=sha256_bytes(buffer.getvalue()), bytes=len(buffer.getvalue()))
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def refused_everywhere(model, message):
    with pytest.raises(ModelError, match=message):
        load_model(model)
    result = subprocess.run(
        [sys.executable, "-m", "rendernet.cli", "classify", "--model", str(model), str(sample_files()[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert message.replace("\\", "") in result.stderr, result.stderr
    with pytest.raises(build.BuildError):
        build.check_model(model)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(tmp_path, value):
    def poison(arrays):
        key = next(key for key in arrays if key.endswith("/bias"))
        arrays[key][0] = value

    refused_everywhere(with_weights(copy_of_default(tmp_path / "model"), poison), "not a finite number")


def test_a_manifest_nested_100000_deep_is_one_line(tmp_path):
    folder = copy_of_default(tmp_path / "model")
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    refused_everywhere(folder, "nested too deeply")


def test_a_zip_that_inflates_to_gigabytes_is_refused_before_it_is_unpacked(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("model/model.json", (DEFAULT_MODEL / "model.json").read_bytes())
        zipped.writestr("model/weights.npz", b"\0" * 300_000_000)  # 300 MB of zeros, 0.3 MB packed
    assert archive.stat().st_size < 1_000_000
    started = time.monotonic()
    refused_everywhere(archive, "unpacks to 300 MB")
    assert time.monotonic() - started < 60


def test_a_weights_file_whose_arrays_inflate_is_refused(tmp_path):
    folder = copy_of_default(tmp_path / "model")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, huge=np.zeros(80_000_000, np.float32))  # 320 MB of arrays in 0.3 MB
    data = buffer.getvalue()
    (folder / "weights.npz").write_bytes(data)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["weights"].update(sha256=sha256_bytes(data), bytes=len(data))
    (folder / "model.json").write_text(json.dumps(manifest))
    refused_everywhere(folder, "unpacks to 320 MB")


@pytest.mark.parametrize(
    "entries, message",
    [
        (["a/model.json", "a/weights.npz", "b/model.json"], "holds model.json more than once"),
        (["b/model.json", "a/weights.npz"], "in different folders"),
    ],
)
def test_a_zip_of_two_models_is_refused(tmp_path, entries, message):
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for entry in entries:
            zipped.writestr(entry, (DEFAULT_MODEL / entry.split("/")[1]).read_bytes())
    refused_everywhere(archive, message)


def test_an_adapted_model_that_changed_more_than_its_head_is_refused(tmp_path):
    """An adapted model names its base's weights sha256; when that base is the shipped model (at hand), every array
    but the head's must be the shipped model's. A `rendernet adapt` result passes; one with a backbone array
    altered (and its own sha256 updated) is refused everywhere, in one line."""
    from rendernet.cli import main

    examples = example_folder(tmp_path / "examples")
    assert main(["adapt", "--examples", str(examples), "--out", str(tmp_path / "adapted")]) == 0
    load_model(tmp_path / "adapted")
    build.check_model(tmp_path / "adapted")

    def alter_the_backbone(arrays):
        key = next(key for key in arrays if key.startswith("stem/"))
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] += 1

    altered = with_weights(shutil.copytree(tmp_path / "adapted", tmp_path / "altered"), alter_the_backbone)
    refused_everywhere(altered, "but its stem/kernel is not that model's: an adaptation changes the head only")
