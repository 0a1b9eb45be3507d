"""`rendernet classify` (one JSON object per line, exit 1 when any file failed) and `rendernet evaluate`."""

import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, sample_files
from PIL import Image
from rendernet import load_model, preprocess


def rendernet(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "rendernet_train.cli", *map(str, arguments)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def classify(*arguments):
    result = rendernet("classify", *arguments)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_classifies_sample_images_like_the_module():
    files = sample_files("real")[:2] + sample_files("render")[:2]
    code, lines, _ = classify("--model", DEFAULT_MODEL, *files)
    assert code == 0
    model = load_model(DEFAULT_MODEL)
    for path, line in zip(files, lines, strict=True):
        expected = model.forward(preprocess(path, model.input_size)[None])[0]
        assert line["file"] == str(path)
        assert line["label"] in model.classes
        np.testing.assert_allclose([line["probabilities"][name] for name in model.classes], expected, atol=1e-7)


def test_bad_file_gives_error_line_and_exit_1(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    good = sample_files("real")[0]
    code, lines, _ = classify("--model", DEFAULT_MODEL, tmp_path / "notes.txt", tmp_path / "missing.jpg", good)
    assert code == 1
    assert lines[0] == {"file": str(tmp_path / "notes.txt"), "error": "not an image Pillow can read"}
    assert lines[1]["file"].endswith("missing.jpg") and "cannot read" in lines[1]["error"]
    assert "label" in lines[2]


def test_extreme_strips_get_error_lines_in_bounded_memory(tmp_path):
    """A ~260-byte PNG once made the CLI use 9.2 GB; now each strip is an error line, the batch goes on, and the
    whole run's peak memory (NumPy, Pillow and the model included) stays under 300 MB."""
    strips = []
    for width, height in [(20000, 1), (60000, 1), (1, 60000), (100_000, 2)]:
        strips.append(tmp_path / f"strip-{width}x{height}.png")
        Image.new("RGB", (width, height)).save(strips[-1])
    good = sample_files("render")[0]
    # VmHWM: this process's peak resident memory (ru_maxrss would include the forked test runner's)
    script = (
        "import re, runpy, sys; sys.argv = ['rendernet', *sys.argv[1:]]\n"
        "try: runpy.run_module('rendernet_train.cli', run_name='__main__')\n"
        "finally: print('peak', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "classify", "--model", DEFAULT_MODEL, *strips, good],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1 and [line["file"] for line in lines] == [str(path) for path in [*strips, good]]
    assert all("image too small" in line["error"] for line in lines[:4])
    assert lines[4]["label"] in ("real", "render") and 0 <= lines[4]["confidence"] <= 1
    peak_kb = int(result.stderr.split("peak")[-1])
    assert peak_kb < 300 * 1024, f"peak {peak_kb / 1024:.0f} MB"


def test_csv_rows_agree_with_json_lines(tmp_path):
    files = [*sample_files("real")[:2], *sample_files("render")[:2], tmp_path / "missing.jpg"]
    _, lines, _ = classify("--model", DEFAULT_MODEL, "--sure", "0.8", *files)
    result = rendernet("classify", "--csv", "--sure", "0.8", "--model", DEFAULT_MODEL, *files)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["file"] for row in rows] == [str(path) for path in files]
    for line, row in zip(lines[:4], rows[:4], strict=True):
        assert row["label"] == line["label"] and row["not_sure"] == str(line["not_sure"])
        assert float(row["confidence"]) == line["confidence"]
    assert rows[4]["label"] == "" and "cannot read" in rows[4]["error"]


def test_bad_model_folder_is_a_clear_error(tmp_path):
    code, lines, stderr = classify("--model", tmp_path, sample_files("real")[0])
    assert code == 1 and lines == []
    assert "has no model.json" in stderr


def test_evaluate_scores_a_labelled_folder_like_the_module(tmp_path):
    model = load_model(DEFAULT_MODEL)
    expected_correct = 0
    for name in model.classes:
        (tmp_path / name).mkdir()
        for path in sample_files(name)[:10]:
            (tmp_path / name / path.name).write_bytes(path.read_bytes())
            expected_correct += model.classify(preprocess(path, model.input_size))["label"] == name
    (tmp_path / "real" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    result = rendernet("evaluate", "--model", DEFAULT_MODEL, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 20 and report["accuracy"] == round(expected_correct / 20, 4)
    assert np.array(report["confusion"]).sum() == 20 and report["roc_auc"] is not None
    assert [entry["file"].endswith("broken.jpg") for entry in report["skipped"]] == [True]


def test_evaluate_refuses_folders_that_are_not_the_models_classes(tmp_path):
    (tmp_path / "cats").mkdir()
    result = rendernet("evaluate", "--model", DEFAULT_MODEL, tmp_path)
    assert result.returncode == 1 and "['real', 'render']" in result.stderr and "cats" in result.stderr


def test_folders_are_walked_and_jobs_give_the_same_lines(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    files = sample_files()[::40]
    for index, path in enumerate(files):
        (folder / ("nested" if index % 2 else "") / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image, not walked")
    (folder / ".hidden" / files[0].name).write_bytes(files[0].read_bytes())
    code, sequential, _ = classify("--model", DEFAULT_MODEL, folder)
    assert code == 0 and len(sequential) == len(files)
    assert sorted(Path(line["file"]).name for line in sequential) == sorted(path.name for path in files)
    result = rendernet("classify", "--model", DEFAULT_MODEL, "--jobs", "2", "--progress", folder)
    parallel = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0
    assert [(line["file"], line["label"], line["probabilities"]) for line in parallel] == [
        (line["file"], line["label"], line["probabilities"]) for line in sequential
    ]
    assert f"classified {len(files)}/{len(files)}, 0 failed" in result.stderr


def core_classify(*arguments, **options):
    """`python -m rendernet.cli classify` (the core alone, no TensorFlow)."""
    return subprocess.run(
        [sys.executable, "-m", "rendernet.cli", "classify", "--model", str(DEFAULT_MODEL), *map(str, arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        **options,
    )


def test_huge_non_image_under_a_memory_limit_is_one_error_row(tmp_path):
    """A 4 GB file (sparse) with a 1.5 GB address-space limit: read as far as its header, not into memory."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(4 << 30)
    good = sample_files("real")[0]
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))  # noqa: E731
    result = core_classify(huge, good, preexec_fn=limit, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == {"file": str(huge), "error": "not an image Pillow can read"} and "label" in lines[1]


def worker_processes(parent: int) -> list:
    """The multiprocessing workers (spawned children) of a process."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_killed_worker_loses_and_repeats_no_file(tmp_path):
    """--jobs 2, one worker SIGKILLed mid-run: every file gets exactly one line, in order, and the run ends."""
    files = [path for path in sample_files() for _ in range(2)][:200]
    process = subprocess.Popen(
        [sys.executable, "-m", "rendernet.cli", "classify", "--model", str(DEFAULT_MODEL), "--jobs", "2", *map(str, files)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    lines = [json.loads(process.stdout.readline()) for _ in range(20)]
    os.kill(worker_processes(process.pid)[0], signal.SIGKILL)
    lines += [json.loads(line) for line in process.stdout.read().splitlines()]  # not communicate(): it skips
    process.wait(timeout=300)  # what readline() buffered
    errors = process.stderr.read()
    assert [line["file"] for line in lines] == list(map(str, files))
    assert all("label" in line for line in lines), [line for line in lines if "error" in line]
    assert process.returncode == 0, errors


def test_fifo_empty_folder_and_skipped_files_are_reported(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    for name in ("a.heic", "b.svg", "c.pdf", "noextension"):
        (folder / name).write_bytes(b"x")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "room.webp").write_bytes(sample_files("real")[0].read_bytes())
    result = core_classify(folder / "pipe.jpg", folder)  # a FIFO named: an error row; met in a walk: left out
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(folder / "pipe.jpg"), str(folder / "room.webp")]
    assert lines[0]["error"] == "not a regular file (a FIFO)" and "label" in lines[1] and result.returncode == 1
    assert (
        "note: left out of the folder walk: 1 (dangling link), 1 (not a regular file), 1 (not an image suffix: (none)), "
        "1 (not an image suffix: .heic), 1 (not an image suffix: .pdf), 1 (not an image suffix: .svg)"
    ) in result.stderr
    (tmp_path / "empty").mkdir()
    result = core_classify(tmp_path / "empty")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: no image files to classify in {tmp_path / 'empty'}")


@pytest.mark.parametrize("value", ["7", "-1", "nan", "high"])
def test_sure_outside_0_to_1_is_refused(value):
    result = core_classify("--sure", value, sample_files("real")[0])
    assert result.returncode == 2 and f"{value!r} is not a number from 0 to 1" in result.stderr


def test_closed_pipe_ends_quietly(tmp_path):
    files = " ".join(map(str, sample_files()[:30]))
    result = subprocess.run(
        f"{sys.executable} -m rendernet.cli classify --model {DEFAULT_MODEL} {files} | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert len(result.stdout.splitlines()) == 1 and result.stderr == ""


def test_names_that_are_not_utf8_give_valid_utf8_csv(tmp_path):
    name = os.fsdecode(b"caf\xe9 =1+1.webp")
    (tmp_path / name).write_bytes(sample_files("real")[0].read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "rendernet.cli", "classify", "--csv", "--model", str(DEFAULT_MODEL), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8"))))  # strict: raises on invalid UTF-8
    assert [row["file"] for row in rows] == [f"{tmp_path}/caf\\xe9 =1+1.webp"] and rows[0]["label"]


def test_train_starts_without_tensorflow_log_lines(tmp_path):
    pytest.importorskip("tensorflow")
    (tmp_path / "data" / "only-one-class").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "rendernet_train.cli", "train", str(tmp_path / "data"), "--out", str(tmp_path / "model")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'data'} needs at least 2 class sub-folders, found ['only-one-class']\n"
