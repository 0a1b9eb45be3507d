"""`rendernet classify` (one JSON object per line, exit 1 when any file failed) and `rendernet evaluate`."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import DEFAULT_MODEL, ROOT, sample_files
from PIL import Image
from rendernet import load_model, preprocess


def rendernet(*arguments):
    return subprocess.run([sys.executable, "-m", "rendernet_train.cli", *map(str, arguments)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


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
    script = ("import re, runpy, sys; sys.argv = ['rendernet', *sys.argv[1:]]\n"
              "try: runpy.run_module('rendernet_train.cli', run_name='__main__')\n"
              "finally: print('peak', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script, "classify", "--model", DEFAULT_MODEL, *strips, good],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
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
    assert "cannot read" in stderr and "model.json" in stderr


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
    assert [(line["file"], line["label"], line["probabilities"]) for line in parallel] == \
        [(line["file"], line["label"], line["probabilities"]) for line in sequential]
    assert f"classified {len(files)}/{len(files)}, 0 failed" in result.stderr
