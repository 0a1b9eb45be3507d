"""The one adaptation function (rendernet.adapt) and `rendernet adapt`: a head re-fitted to a user's examples,
anchored to the base head; NumPy only."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, sample_files
from rendernet import load_model, preprocess
from rendernet.adapt import adapt_head, pooled_features

import build


def toy_domain(rng, count, shift):
    """Two classes of 8 features apart along the first axis; `shift` moves both (another camera, another renderer)."""
    labels = np.arange(count) % 2
    noise = rng.normal(0, 1, (count, 8)) * np.r_[1.0, [0.3] * 7]  # the other 7 features: mostly quiet
    features = noise + np.outer(labels * 2 - 1, [1.5] + [0] * 7) + shift
    return features.astype(np.float32), labels


def accuracy(kernel_t, bias, features, labels):
    return float(np.mean(np.argmax(features @ kernel_t.T + bias, axis=1) == labels))


BASE_KERNEL = np.array([[-1.5] + [0] * 7, [1.5] + [0] * 7], np.float32)  # the base head: right in its own domain
BASE_BIAS = np.zeros(2, np.float32)
SHIFT = np.array([2.0, 0, 0, 0, 0, 0, 0, 0], np.float32)  # the user's domain: everything looks like class 1


def test_no_examples_give_the_base_head_itself():
    kernel_t, bias = adapt_head(BASE_KERNEL, BASE_BIAS, np.zeros((0, 8)), [])
    assert kernel_t is BASE_KERNEL and bias is BASE_BIAS


def test_a_domain_shift_is_corrected_by_a_few_examples_and_the_base_domain_kept():
    """Means over 20 random draws of the corrections, as a user's corrections are one draw among many."""
    rng = np.random.default_rng(0)
    test_shifted, test_labels = toy_domain(rng, 2000, SHIFT)
    test_base, base_labels = toy_domain(rng, 2000, 0)
    before = accuracy(BASE_KERNEL, BASE_BIAS, test_shifted, test_labels)
    assert before < 0.7
    shifted, kept = [], []
    for corrections in (10, 20):  # 5, then 10 per class
        heads = [adapt_head(BASE_KERNEL, BASE_BIAS, *toy_domain(rng, corrections, SHIFT)) for _ in range(20)]
        shifted.append(np.mean([accuracy(*head, test_shifted, test_labels) for head in heads]))
        kept.append(np.mean([accuracy(*head, test_base, base_labels) for head in heads]))
    assert before + 0.05 < shifted[0] < shifted[1], (before, shifted)  # 0.66 -> 0.76 -> 0.84 when written
    assert min(kept) > 0.75, kept  # the anchor holds the base domain (0.94 before)


def test_deterministic_balanced_and_anchored():
    rng = np.random.default_rng(1)
    examples, labels = toy_domain(rng, 30, SHIFT)
    first, again = adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels), adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    moved = [np.abs(adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels, anchor)[1] - BASE_BIAS).sum()
             for anchor in (0.1, 1.0, 10.0)]
    assert moved[0] > moved[1] > moved[2] > 0, moved  # the stronger the anchor, the smaller the change
    # classes weigh the same: 10 + 2 examples count as 6 + 6 of the same two
    one, other = examples[labels == 1][:1], examples[labels == 0][:1]
    balanced = adapt_head(BASE_KERNEL, BASE_BIAS, np.r_[np.repeat(one, 6, axis=0), np.repeat(other, 6, axis=0)], [1] * 6 + [0] * 6)
    skewed = adapt_head(BASE_KERNEL, BASE_BIAS, np.r_[np.repeat(one, 10, axis=0), np.repeat(other, 2, axis=0)], [1] * 10 + [0] * 2)
    assert np.allclose(balanced[0], skewed[0], atol=1e-5) and np.allclose(balanced[1], skewed[1], atol=1e-5)


def test_the_result_is_the_objective_s_minimum():
    rng = np.random.default_rng(2)
    examples, labels = toy_domain(rng, 12, SHIFT)
    kernel_t, bias = adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels, anchor=0.5)
    inputs = np.hstack([examples, np.ones((12, 1))]).astype(np.float64)
    scale = np.sqrt(np.mean(inputs ** 2, axis=0)) + 1e-6  # balanced: 6 examples of each class
    base = np.hstack([BASE_KERNEL, BASE_BIAS[:, None]])

    def objective(head):
        logits = inputs @ head.T
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -np.sum(log_p[np.arange(12), labels]) + 0.25 * np.sum(((head - base) * scale) ** 2)

    found = objective(np.hstack([kernel_t, bias[:, None]]).astype(np.float64))
    for _ in range(50):
        nearby = np.hstack([kernel_t, bias[:, None]]) + rng.normal(0, 1e-2, base.shape)
        assert objective(nearby) >= found - 1e-6


def rendernet(*arguments):
    return subprocess.run([sys.executable, "-m", "rendernet.cli", *map(str, arguments)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_rendernet_adapt_writes_a_model_every_tool_accepts(tmp_path):
    examples = tmp_path / "examples"
    chosen = {"real": sample_files("real")[:3], "render": sample_files("render")[:3]}
    for name, paths in chosen.items():
        (examples / name).mkdir(parents=True)
        for path in paths:
            shutil.copyfile(path, examples / name / path.name)
    (examples / "real" / "notes.txt").write_text("not an image")
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", examples, "--out", tmp_path / "mine")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["corrections"] == {"real": 3, "render": 3} and "notes.txt" in result.stderr
    base, adapted = load_model(DEFAULT_MODEL), load_model(tmp_path / "mine")
    manifest = json.loads((tmp_path / "mine" / "model.json").read_text())
    assert manifest["adapted"]["base_weights_sha256"] == base.manifest["weights"]["sha256"]
    assert manifest["adapted"]["corrections"] == {"real": 3, "render": 3} and "metrics" not in manifest
    assert build.check_model(tmp_path / "mine")["classes"] == ["real", "render"]
    for name, paths in chosen.items():  # the corrected images move towards their class
        for path in paths:
            pixels = preprocess(path, base.input_size)
            before, after = base.forward(pixels[None])[0], adapted.forward(pixels[None])[0]
            index = base.classes.index(name)
            assert after[index] >= before[index] - 1e-6
    classified = rendernet("classify", "--model", tmp_path / "mine", sample_files("real")[10])
    assert classified.returncode == 0 and json.loads(classified.stdout)["label"] in ("real", "render")


def test_pooled_features_are_what_the_head_reads():
    model = load_model(DEFAULT_MODEL)
    pixels = preprocess(sample_files("render")[5], model.input_size)
    features = pooled_features(model, pixels)
    dense = model.head()
    logits = features @ dense.kernel_t.T + dense.bias
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(probabilities, model.forward(pixels[None])[0], atol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (["--anchor", "0"], "'0' is not a positive number"),
    (["--out", str(DEFAULT_MODEL)], "--out must not be the base model's folder"),
])
def test_adapt_refuses_bad_options(tmp_path, arguments, message):
    (tmp_path / "real").mkdir()
    shutil.copyfile(sample_files("real")[0], tmp_path / "real" / "a.webp")
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", tmp_path, "--out", tmp_path / "out", *arguments)
    assert result.returncode != 0 and message in result.stderr
