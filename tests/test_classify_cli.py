"""`rendernet classify` (one JSON object per line, exit 1 when any file failed) and `rendernet evaluate`."""

import json
import subprocess
import sys

import numpy as np
from conftest import DEFAULT_MODEL, ROOT, sample_files
from rendernet import load_model, preprocess


def rendernet(*arguments):
    return subprocess.run([sys.executable, "-m", "training.cli", *map(str, arguments)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def classify(*arguments):
    result = rendernet("classify", *arguments)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_classifies_sample_images_like_the_module():
    files = sample_files("real")[:2] + sample_files("render")[:2]
    code, lines, _ = classify("--model", DEFAULT_MODEL, *files)
    assert code == 0
    model = load_model(DEFAULT_MODEL)
    for path, line in zip(files, lines, strict=False):
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


def test_bad_model_folder_is_a_clear_error(tmp_path):
    code, lines, stderr = classify("--model", tmp_path, sample_files("real")[0])
    assert code == 2 and lines == []
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
    assert result.returncode == 2 and "['real', 'render']" in result.stderr and "cats" in result.stderr
