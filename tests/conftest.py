"""Shared fixtures: the committed sample images and the shipped default model; the test cache; the network marker.

Tests never write the user's cache: RENDERNET_CACHE is a temporary folder for the session unless it is set
(tests/run.sh sets .cache/tests in the project, so downloads are made once per checkout). Tests that use a
fixture that downloads with npm or pip are marked `network`: `pytest -m "not slow and not network"` runs
offline.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if not os.environ.get("RENDERNET_CACHE"):  # before any test module computes a cache path
    os.environ["RENDERNET_CACHE"] = TEMPORARY_CACHE = tempfile.mkdtemp(prefix="rendernet-test-cache-")
else:
    TEMPORARY_CACHE = None
DOWNLOADING_FIXTURES = ("pyodide_dir", "micropython")  # npm pack / pip download into the cache


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in item.fixturenames for name in DOWNLOADING_FIXTURES):
            item.add_marker(pytest.mark.network)


def pytest_sessionfinish():
    if TEMPORARY_CACHE:
        shutil.rmtree(TEMPORARY_CACHE, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
DEFAULT_MODEL = ROOT / "models" / "default"


def sample_files(class_name=None) -> list:
    pattern = f"{class_name}/*.webp" if class_name else "*/*.webp"
    return sorted(SAMPLE_DIR.glob(pattern))


def example_folder(folder, real: int = 2, render: int = 2):
    """A folder of labelled examples, folder/<class>/<image>, with the first sample images of each class (for
    `rendernet adapt --examples`)."""
    for label, count in (("real", real), ("render", render)):
        (folder / label).mkdir(parents=True)
        for path in sample_files(label)[:count]:
            shutil.copyfile(path, folder / label / path.name)
    return folder


@pytest.fixture(scope="session")
def sample_images():
    files = sample_files()
    assert len(files) >= 120, f"the committed sample in {SAMPLE_DIR} is missing or incomplete"
    return files


@pytest.fixture(scope="session")
def default_manifest():
    return json.loads((DEFAULT_MODEL / "model.json").read_text())
