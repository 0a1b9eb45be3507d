"""The one adaptation function (rendernet.adapt) and `rendernet adapt`: a head re-fitted to a user's examples,
anchored to the base head; NumPy only."""

import json
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, example_folder, sample_files
from rendernet import load_model, preprocess
from rendernet.adapt import MAX_CORRECTIONS, Adaptation, adapt_head, encode_features, fit_softmax, newton, read_corrections
from rendernet.errors import ModelError

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
    """Means over 20 random draws of the corrections, as a user's corrections are one draw among many (anchor 1:
    this toy's features are not the model's)."""
    rng = np.random.default_rng(0)
    test_shifted, test_labels = toy_domain(rng, 2000, SHIFT)
    test_base, base_labels = toy_domain(rng, 2000, 0)
    before = accuracy(BASE_KERNEL, BASE_BIAS, test_shifted, test_labels)
    assert before < 0.7
    shifted, kept = [], []
    for corrections in (10, 20):  # 5, then 10 per class
        heads = [adapt_head(BASE_KERNEL, BASE_BIAS, *toy_domain(rng, corrections, SHIFT), anchor=1.0) for _ in range(20)]
        shifted.append(np.mean([accuracy(*head, test_shifted, test_labels) for head in heads]))
        kept.append(np.mean([accuracy(*head, test_base, base_labels) for head in heads]))
    assert before + 0.05 < shifted[0] < shifted[1], (before, shifted)  # 0.66 -> 0.76 -> 0.84 when written
    assert min(kept) > 0.75, kept  # the anchor holds the base domain (0.94 before)


def test_deterministic_balanced_and_anchored():
    rng = np.random.default_rng(1)
    examples, labels = toy_domain(rng, 30, SHIFT)
    first, again = adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels), adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    moved = [
        np.abs(adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels, anchor)[1] - BASE_BIAS).sum() for anchor in (0.1, 1.0, 10.0)
    ]
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
    scale = np.sqrt(np.mean(inputs**2, axis=0)) + 1e-6  # balanced: 6 examples of each class
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
    return subprocess.run(
        [sys.executable, "-m", "rendernet.cli", *map(str, arguments)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_rendernet_adapt_writes_a_model_every_tool_accepts(tmp_path):
    examples = example_folder(tmp_path / "examples", 3, 3)
    (examples / "real" / "notes.txt").write_text("not an image")
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", examples, "--out", tmp_path / "mine")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["corrections"] == {"real": 3, "render": 3} and "notes.txt" in result.stderr
    base, adapted = load_model(DEFAULT_MODEL), load_model(tmp_path / "mine")
    manifest = json.loads((tmp_path / "mine" / "model.json").read_text())
    assert manifest["adapted"]["base_weights_sha256"] == base.manifest["weights"]["sha256"]
    assert manifest["adapted"]["corrections"] == {"real": 3, "render": 3} and "metrics" not in manifest
    assert build.check_model(tmp_path / "mine")["classes"] == ["real", "render"]
    gains = []  # the corrected images move towards their class; one already near certain may give up a hair
    for name in ("real", "render"):
        for path in sorted((examples / name).glob("*.webp")):
            pixels = preprocess(path, base.input_size)
            before, after = base.forward(pixels[None])[0], adapted.forward(pixels[None])[0]
            index = base.classes.index(name)
            gains.append(after[index] - before[index])
    assert min(gains) >= -1e-4 and np.mean(gains) > 0, gains
    classified = rendernet("classify", "--model", tmp_path / "mine", sample_files("real")[10])
    assert classified.returncode == 0 and json.loads(classified.stdout)["label"] in ("real", "render")


def test_the_head_alone_on_pooled_features_gives_the_forward_pass():
    """What re-scoring after a correction relies on: no decoding, no backbone, the same probabilities."""
    model = load_model(DEFAULT_MODEL)
    for path in sample_files("render")[5:8] + sample_files("real")[5:8]:
        pixels = preprocess(path, model.input_size)
        explanation = model.explain(pixels)
        np.testing.assert_allclose(model.score_pooled(explanation.pooled)[0], model.forward(pixels[None])[0], atol=1e-6)
        np.testing.assert_allclose(explanation.probabilities, model.forward(pixels[None])[0], atol=1e-6)


@pytest.mark.parametrize("count, width", [(40, 8), (6, 40)], ids=["more-examples-than-weights", "wide-head"])
def test_two_classes_take_a_shortcut_to_the_same_head(count, width):
    """Two classes fit a logistic regression on the logit difference (its Newton steps through the full system, or
    for a wide head and few examples through the Woodbury identity's small one); the general softmax fit agrees."""
    rng = np.random.default_rng(3)
    examples, labels = toy_domain(rng, count, SHIFT)
    examples = np.hstack([examples, rng.normal(0, 1, (count, width - 8))]).astype(np.float32)
    base_kernel = np.hstack([BASE_KERNEL, rng.normal(0, 0.1, (2, width - 8))]).astype(np.float32)
    kernel_t, bias = adapt_head(base_kernel, BASE_BIAS, examples, labels, anchor=0.7)
    inputs = np.hstack([examples, np.ones((count, 1))]).astype(np.float64)
    counts = np.bincount(labels)
    weights = count / (2 * counts[labels])
    stiffness = 0.7 * (np.sqrt(weights @ inputs**2 / count) + 1e-6) ** 2
    general, converged = fit_softmax(
        inputs, labels, weights, np.hstack([base_kernel, BASE_BIAS[:, None]]).astype(np.float64), stiffness
    )
    assert converged
    np.testing.assert_allclose(kernel_t, general[:, :-1], atol=1e-5)
    np.testing.assert_allclose(bias, general[:, -1], atol=1e-5)


def session(rows=12):
    model = load_model(DEFAULT_MODEL)
    adaptation = Adaptation(model)
    paths = sample_files("real")[: rows // 2] + sample_files("render")[: rows // 2]
    for row, path in enumerate(paths):
        adaptation.remember(row, model.explain(preprocess(path, model.input_size)).pooled)
    return model, adaptation, paths


def test_a_session_of_corrections_undo_and_back_to_the_shipped_model():
    model, adaptation, paths = session()
    shipped = adaptation.probabilities()
    base_kernel = model.head().kernel_t.copy()
    adaptation.correct(0, "render", paths[0].name, 1.0)  # a real image called render: the head moves
    adaptation.correct(7, "real", paths[7].name, 2.0)
    once = adaptation.probabilities()
    assert once[0][1] > shipped[0][1] and once[7][0] > shipped[7][0]
    assert np.allclose(adaptation.shipped(adaptation.rows[3]), shipped[3], atol=1e-7)  # the shipped head, still
    assert adaptation.summary()["counts"] == {"real": 1, "render": 1} and adaptation.label_of(7) == "real"
    assert adaptation.description() == "adapted to your images: 2 corrections (1 real, 1 render)"
    adaptation.correct(7, "render", paths[7].name, 3.0)  # a row corrected again replaces its correction
    assert adaptation.summary()["counts"] == {"real": 0, "render": 2}
    adaptation.correct(7, None, paths[7].name, 4.0)  # and withdrawn
    assert adaptation.summary()["counts"] == {"real": 0, "render": 1}
    adaptation.undo()
    assert adaptation.summary()["counts"] == {"real": 0, "render": 2}
    adaptation.reset()
    assert adaptation.description() == "shipped model" and adaptation.probabilities() == shipped
    assert np.array_equal(model.head().kernel_t, base_kernel)  # no corrections: the shipped head exactly
    adaptation.undo()  # Back can be undone
    assert adaptation.summary()["counts"] == {"real": 0, "render": 2}
    with pytest.raises(ModelError, match="no classified image"):
        adaptation.correct(99, "real", "x", 0.0)
    with pytest.raises(ModelError, match="not one of the model's classes"):
        adaptation.correct(1, "cat", "x", 0.0)


def test_a_stored_session_comes_back_identically_and_bad_ones_change_nothing():
    _, adaptation, paths = session()
    for row, label in ((0, "render"), (1, "render"), (6, "real")):
        adaptation.correct(row, label, paths[row].name, 1.0)
    document = json.loads(json.dumps(adaptation.document()))
    assert set(document["corrections"][0]) == {"features", "label", "file", "time"}  # never pixels
    _, again, _ = session()
    again.restore(document)
    assert again.probabilities() == adaptation.probabilities() and again.summary()["counts"] == adaptation.counts()
    bad_documents = {
        "another model": dict(document, base_weights_sha256="0" * 64),
        "format_version": dict(document, format_version=2),
        "not a rendernet-corrections": {"corrections": []},
        "finite": dict(
            document, corrections=[dict(document["corrections"][0], features=encode_features(np.full(112, np.nan, np.float32)))]
        ),
        "hold 3 values": dict(document, corrections=[dict(document["corrections"][0], features=encode_features(np.ones(3)))]),
        "base64": dict(document, corrections=[dict(document["corrections"][0], features="%%%")]),
        "label must be one of": dict(document, corrections=[dict(document["corrections"][0], label="cat")]),
        "must be a list": dict(document, corrections="x"),
    }
    _, untouched, _ = session()
    before = untouched.probabilities()
    for message, bad in bad_documents.items():
        with pytest.raises(ModelError, match=message):
            untouched.restore(bad)
        assert untouched.probabilities() == before and untouched.description() == "shipped model"


def test_only_the_most_recent_corrections_adapt_a_long_history():
    model, adaptation, _ = session()
    rng = np.random.default_rng(4)
    document = adaptation.document(
        [
            {
                "features": encode_features(rng.normal(0.5, 0.3, 112)),
                "label": ("real", "render")[i % 2],
                "file": f"{i}.jpg",
                "time": i,
            }
            for i in range(MAX_CORRECTIONS + 500)
        ]
    )
    adaptation.restore(document)
    summary = adaptation.summary()
    assert summary["total"] == MAX_CORRECTIONS + 500 and summary["used"] == MAX_CORRECTIONS
    assert len(read_corrections(document, model)[0]) == MAX_CORRECTIONS + 500


def test_the_adapted_model_as_a_zip_loads_everywhere_a_folder_does(tmp_path):
    """The page's download: a zip of the adapted folder; rendernet classify --model and build.py --model take it."""
    model, adaptation, paths = session()
    for row, label in ((0, "render"), (1, "render"), (6, "real")):
        adaptation.correct(row, label, paths[row].name, 1.0)
    from rendernet.adapt import adapted_model_files
    from rendernet.manifest import read_model_files

    files = adapted_model_files(
        model, read_model_files(DEFAULT_MODEL), model.head().kernel_t, model.head().bias, adaptation.counts()
    )
    assert sorted(files) == ["model.json", "reference.npz", "weights.npz"]  # the reference set travels with it
    archive = tmp_path / "adapted.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(f"rendernet-adapted/{name}", data)
    loaded = load_model(archive)
    assert np.array_equal(loaded.reference[0], model.reference[0])
    for row, path in enumerate(paths):
        np.testing.assert_allclose(
            loaded.forward(preprocess(path, model.input_size)[None])[0], adaptation.probabilities()[row], atol=1e-5
        )
    result = rendernet("classify", "--csv", "--model", archive, paths[0])
    assert result.returncode == 0, result.stderr
    assert "adapted to your images: 3 corrections (1 real, 2 render)" in result.stdout
    assert build.check_model(archive)["classes"] == ["real", "render"]
    (tmp_path / "not.zip").write_text("nothing")
    with pytest.raises(ModelError, match=r"neither a model folder nor a \.zip"):
        load_model(tmp_path / "not.zip")


def test_rendernet_adapt_reads_the_page_s_corrections_file(tmp_path):
    model, adaptation, paths = session()
    for row, label in ((0, "render"), (6, "real"), (7, "real")):
        adaptation.correct(row, label, paths[row].name, 1.0)
    (tmp_path / "corrections.json").write_text(json.dumps(adaptation.document()))
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", tmp_path / "corrections.json", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    adapted = load_model(tmp_path / "out")
    np.testing.assert_allclose(adapted.head().kernel_t, model.head().kernel_t, atol=1e-6)
    (tmp_path / "bad.json").write_text("{")
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", tmp_path / "bad.json", "--out", tmp_path / "o2")
    assert result.returncode != 0 and "is not a corrections file" in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--anchor", "0"], "'0' is not a positive number"),
        (["--out", str(DEFAULT_MODEL)], "--out must not be the base model's folder"),
    ],
)
def test_adapt_refuses_bad_options(tmp_path, arguments, message):
    (tmp_path / "real").mkdir()
    shutil.copyfile(sample_files("real")[0], tmp_path / "real" / "a.webp")
    result = rendernet("adapt", "--model", DEFAULT_MODEL, "--examples", tmp_path, "--out", tmp_path / "out", *arguments)
    assert result.returncode != 0 and message in result.stderr


def test_balanced_weights_give_every_class_and_every_source_within_it_the_same_share():
    """The one weighting of training's heads and class weights and of the adaptation."""
    from rendernet.metrics import balanced_weights

    labels = np.array([0, 0, 0, 1])
    assert balanced_weights(labels, 2).tolist() == [4 / 6] * 3 + [2.0]  # what Keras' class_weight gave
    assert balanced_weights(labels, 2, ["a", "a", "b", "c"]).tolist() == [0.5, 0.5, 1.0, 2.0]
    assert balanced_weights(np.array([0, 0]), 2).tolist() == [1.0, 1.0]  # a class absent: the present ones share


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.__setitem__((2, 3), np.nan), "correction 3: features hold a value that is not a finite number"),
        (lambda x: x.__setitem__((0, 0), np.inf), "correction 1: features hold a value that is not a finite number"),
    ],
)
def test_a_non_finite_feature_is_refused_naming_the_correction(change, message):
    examples, labels = toy_domain(np.random.default_rng(5), 6, SHIFT)
    change(examples)
    with pytest.raises(ModelError, match=message):
        adapt_head(BASE_KERNEL, BASE_BIAS, examples, labels)
    with pytest.raises(ModelError, match="correction 2: features hold 7 values, the model's head reads 8"):
        adapt_head(BASE_KERNEL, BASE_BIAS, [np.zeros(8), np.zeros(7)], [0, 1])


def quadratic(curvature):
    """sum((x - target)^2), with a Hessian that claims `curvature` (the truth is 2)."""
    target = np.array([3.0, -2.0])
    return target, lambda x: (float(np.sum((x - target) ** 2)), 2 * (x - target), lambda rhs: rhs / curvature)


def test_newton_never_takes_a_step_that_raises_the_objective_and_reports_a_cap():
    target, overshooting = quadratic(0.2)  # every full step goes 10x too far: halved until it lowers the objective
    x, converged = newton(overshooting, np.zeros(2))
    assert converged and np.allclose(x, target, atol=1e-3)

    target, timid = quadratic(200.0)  # each step goes 1 % of the way: still improving after NEWTON_STEPS steps
    x, converged = newton(timid, np.zeros(2))
    assert not converged and np.sum((x - target) ** 2) < np.sum(target**2)

    def uphill(x):  # the gradient points the wrong way: no step along it lowers the objective, the start is kept
        return float(np.sum(x**2)), -np.ones(2), lambda rhs: rhs

    x, converged = newton(uphill, np.zeros(2))
    assert converged and np.array_equal(x, np.zeros(2))


def test_a_singular_system_takes_the_least_squares_step():
    from rendernet.adapt import solve_dense

    def objective(x):  # flat along the second axis: a singular Hessian
        singular = np.array([[2.0, 0.0], [0.0, 0.0]])
        return float((x[0] - 1) ** 2), np.array([2 * (x[0] - 1), 0.0]), lambda rhs: solve_dense(singular, rhs)

    x, converged = newton(objective, np.zeros(2))
    assert converged and np.allclose(x, [1.0, 0.0])


def test_the_adapt_command_reports_whether_the_fit_converged(tmp_path, capsys):
    from rendernet.cli import main

    examples = example_folder(tmp_path / "examples", 2, 1)
    assert main(["adapt", "--examples", str(examples), "--out", str(tmp_path / "adapted")]) == 0
    assert json.loads(capsys.readouterr().out)["converged"] is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000, "nested more than 16 deep"),
        ('{"a": "[[[[[[[[[[[[[[[[[[[[", "b": [' + "[" * 20, "nested more than 16 deep"),  # brackets in strings do not count
        ("{not json", "not a corrections file (JSON)"),
        (" " * (64 * 1024 * 1024 + 1), "a corrections document is at most 67 MB"),
    ],
)
def test_a_corrections_document_is_parsed_within_bounds(text, message):
    from rendernet.adapt import parse_document

    with pytest.raises(ModelError, match=re.escape(message)):
        parse_document(text)
    assert parse_document('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[", "b": [[1]]}') == {"a": "[" * 24, "b": [[1]]}


def test_the_adapt_command_refuses_a_deeply_nested_document_in_one_line(tmp_path, capsys):
    from rendernet.cli import main

    (tmp_path / "deep.json").write_text("[" * 100_000)
    assert main(["adapt", "--examples", str(tmp_path / "deep.json"), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nested more than 16 deep" in error and not (tmp_path / "out").exists()
