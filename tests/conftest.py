"""Shared fixtures: the committed sample images and the shipped default model."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
DEFAULT_MODEL = ROOT / "models" / "default"


def sample_files(class_name=None) -> list:
    pattern = f"{class_name}/*.webp" if class_name else "*/*.webp"
    return sorted(SAMPLE_DIR.glob(pattern))


@pytest.fixture(scope="session")
def sample_images():
    files = sample_files()
    assert len(files) >= 120, f"the committed sample in {SAMPLE_DIR} is missing or incomplete"
    return files


@pytest.fixture(scope="session")
def default_manifest():
    return json.loads((DEFAULT_MODEL / "model.json").read_text())
