"""The installable package: a wheel built from this checkout holds the core, training and the default model, and
its `rendernet classify IMAGE` works from any folder with no checkout around (the default model is package data)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import DEFAULT_MODEL, ROOT, sample_files

pytestmark = pytest.mark.network  # pip fetches the build backend (setuptools) into its isolated build environment


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("rendernet-*.whl")
    return built


def test_the_wheel_holds_the_default_model_and_no_training_exports(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("model.json", "weights.npz", "reference.npz", "metrics.json"):
        assert f"rendernet/default_model/{name}" in names
        assert zipfile.ZipFile(wheel).read(f"rendernet/default_model/{name}") == (DEFAULT_MODEL / name).read_bytes()
    assert not any(name.endswith((".keras", ".tflite")) for name in names)
    assert wheel.stat().st_size < 1_500_000


def test_the_installed_command_classifies_from_any_folder(wheel, tmp_path):
    """Installed (not editable) into a folder of its own; run from an empty folder with only that on the path."""
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    run = [sys.executable, "-m", "rendernet_train.cli"]
    version = subprocess.run([*run, "--version"], cwd=elsewhere, env=environment, capture_output=True, text=True)
    from rendernet import __version__

    assert version.stdout.strip() == f"rendernet {__version__}"
    image = sample_files("render")[0]
    result = subprocess.run(
        [*run, "classify", str(image)], cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in ("real", "render")
    where = subprocess.run(
        [sys.executable, "-c", "import rendernet.manifest; print(rendernet.manifest.default_model())"],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(target))  # the installed copy, not the checkout
