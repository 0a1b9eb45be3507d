"""The reference set a model ships (rendernet.reference) and the adaptation that keeps to it: the shipped model's
reference.npz, its checks, the fit with it (one correction moves no reference answer; none gives the base head),
a team's corrections merged, and the answer a corrected image shows."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, sample_files
from rendernet import load_model, preprocess
from rendernet.adapt import KNOWN_MARGIN, SAME_IMAGE, Adaptation, adapt_head, encode_features, merge_corrections
from rendernet.decision import answer
from rendernet.errors import ModelError
from rendernet.manifest import sha256_bytes
from rendernet.reference import MAX_EXAMPLES, MAX_PER_SOURCE, choose_reference
from rendernet.report import csv_header, csv_row

import build


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def sample_features(model):
    paths = sample_files("real")[::6] + sample_files("render")[::4]
    return (
        np.array([model.explain(preprocess(path, model.input_size)).pooled for path in paths]),
        np.array([0 if path.parent.name == "real" else 1 for path in paths]),
        paths,
    )


def test_the_shipped_model_carries_a_small_balanced_reference_set(model):
    features, labels = model.reference
    entry = model.manifest["reference"]
    assert features.shape == (entry["count"], model.head().kernel_t.shape[1]) and entry["count"] <= MAX_EXAMPLES
    assert (DEFAULT_MODEL / "reference.npz").stat().st_size <= 100_000
    assert entry["per_class"] == {"real": int(np.sum(labels == 0)), "render": int(np.sum(labels == 1))}
    assert min(entry["per_class"].values()) >= 50


def test_the_choice_is_balanced_over_sources_and_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    sources = np.array([f"s{index}" for index in rng.integers(0, 12, 3000)])
    chosen = choose_reference(labels, sources, 2)
    assert len(chosen) <= MAX_EXAMPLES and np.array_equal(chosen, choose_reference(labels, sources, 2))
    for source in set(sources):
        for label in (0, 1):
            assert np.sum((sources[chosen] == source) & (labels[chosen] == label)) <= MAX_PER_SOURCE
    assert abs(np.sum(labels[chosen] == 0) - np.sum(labels[chosen] == 1)) <= 1


def altered_reference(tmp_path, change):
    """A copy of the default model whose reference.npz is rewritten by change(features, labels) -> arrays, with
    model.json's sha256 updated: only the content checks can refuse it."""
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, folder)
    with np.load(folder / "reference.npz") as archive:
        arrays = change(archive["features"].copy(), archive["labels"].copy())
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / "reference.npz").write_bytes(buffer.getvalue())
    manifest = json.loads((folder / "model.json").read_text())
    manifest["reference"]["sha256"] = sha256_bytes(buffer.getvalue())
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, y: {"features": f, "labels": y, "extra": y}, "exactly 'features' and 'labels'"),
        (lambda f, y: {"features": f.astype(np.float32), "labels": y}, "features must be float16"),
        (lambda f, y: {"features": f[:, :5], "labels": y}, "features must be float16 of shape"),
        (
            lambda f, y: {"features": np.where(np.arange(f.size).reshape(f.shape) == 7, np.nan, f).astype(np.float16), "labels": y},
            "not a finite number",
        ),
        (lambda f, y: {"features": f, "labels": y + 5}, "labels must be"),
    ],
)
def test_a_damaged_reference_set_is_refused_by_every_loader(tmp_path, change, message):
    folder = altered_reference(tmp_path, change)
    with pytest.raises(ModelError, match=message):
        load_model(folder)
    with pytest.raises(build.BuildError, match=message):
        build.check_model(folder)


def test_an_altered_or_missing_reference_file_is_named(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, folder)
    data = bytearray((folder / "reference.npz").read_bytes())
    data[100] ^= 1
    (folder / "reference.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"reference\.npz does not match model\.json"):
        load_model(folder)
    (folder / "reference.npz").unlink()
    with pytest.raises(ModelError, match=r"declares reference\.npz, which is missing"):
        load_model(folder)
    with pytest.raises(build.BuildError, match=r"reference\.npz"):
        build.check_model(folder)


def fit(model, features, labels, reference=True):
    dense = model.head()
    return adapt_head(
        dense.kernel_t, dense.bias, features, labels, reference=model.reference if reference else None, threshold=model.threshold
    )


def right_answers(model, head, features, labels):
    kernel_t, bias = head
    logits = features @ kernel_t.T + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.array(
        [
            answer(row, model.classes, model.threshold).label == model.classes[label]
            for row, label in zip(probabilities, labels, strict=True)
        ]
    )


def margins(model, head, features, labels):
    """How far each example is on its label's side of the decision rule's cut, in logits."""
    kernel_t, bias = head
    logits = features @ kernel_t.T + bias
    cut = np.log(model.threshold / (1 - model.threshold))
    return np.where(labels == 1, 1.0, -1.0) * (logits[:, 1] - logits[:, 0] - cut)


def test_one_correction_never_turns_what_the_model_knew(model, sample_features):
    """Every sample image, corrected alone to either class (half of them wrongly): every reference example the
    shipped head answers right by more than KNOWN_MARGIN stays right. Without the reference set, some do not."""
    features, _, _ = sample_features
    base = (model.head().kernel_t, model.head().bias)
    known = margins(model, base, *model.reference) > KNOWN_MARGIN
    assert known.mean() > 0.6
    turned_without = 0
    for vector in features:
        for label in (0, 1):
            assert (margins(model, fit(model, vector[None], [label]), *model.reference)[known] > 0).all()
            turned_without += int((margins(model, fit(model, vector[None], [label], False), *model.reference)[known] <= 0).any())
    assert turned_without > 0  # the test can fail: the fit without the reference set does turn some


def test_with_a_reference_set_no_corrections_give_the_base_head_and_the_fit_is_deterministic(model, sample_features):
    features, labels, _ = sample_features
    dense = model.head()
    kernel_t, bias = fit(model, features[:0], labels[:0])
    assert kernel_t is dense.kernel_t and bias is dense.bias
    first, again = fit(model, features[:6], labels[:6]), fit(model, features[:6], labels[:6])
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], dense.kernel_t)


def test_corrections_move_their_images_to_the_user_s_side(model, sample_features):
    """Misread sample images corrected to their true class (3 + 3 at most): the adapted model answers most of them
    with the user's label (bench/adapt.py measures the share on unseen domains)."""
    features, labels, _ = sample_features
    base = (model.head().kernel_t, model.head().bias)
    wrong = np.flatnonzero(~right_answers(model, base, features, labels))
    chosen = np.r_[wrong[labels[wrong] == 0][:3], wrong[labels[wrong] == 1][:3]]
    assert len(chosen) >= 2
    head = fit(model, features[chosen], labels[chosen])
    assert right_answers(model, head, features[chosen], labels[chosen]).mean() >= 0.5


def document_of(model, entries):
    return {
        "format": "rendernet-corrections",
        "format_version": 1,
        "base_weights_sha256": model.manifest["weights"]["sha256"],
        "classes": model.classes,
        "corrections": entries,
    }


def entries(features, labels, model, time, file_prefix="x"):
    return [
        {
            "features": encode_features(vector),
            "label": model.classes[label],
            "file": f"{file_prefix}{index}.jpg",
            "time": time + index,
        }
        for index, (vector, label) in enumerate(zip(features, labels, strict=True))
    ]


def test_two_people_s_corrections_merged_give_one_person_s_head(model, sample_features, tmp_path):
    features, labels, _ = sample_features
    alice, bob = entries(features[:4], labels[:4], model, 10), entries(features[4:9], labels[4:9], model, 20)
    merged, conflicts = merge_corrections(alice, bob)
    assert conflicts == [] and len(merged) == 9
    one = Adaptation(model)
    one.restore(document_of(model, alice + bob))
    alone_kernel = model.head().kernel_t.copy()
    one.reset()
    (tmp_path / "alice.json").write_text(json.dumps(document_of(model, alice)))
    (tmp_path / "bob.json").write_text(json.dumps(document_of(model, bob + alice[:2])))  # bob has two of alice's too
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rendernet.cli",
            "adapt",
            "--model",
            DEFAULT_MODEL,
            "--examples",
            tmp_path / "alice.json",
            tmp_path / "bob.json",
            "--out",
            tmp_path / "team",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["corrections"] == {name: int(np.sum(labels[:9] == index)) for index, name in enumerate(model.classes)}
    team = load_model(tmp_path / "team")
    np.testing.assert_allclose(team.head().kernel_t, alone_kernel, atol=1e-6)
    assert team.manifest["adapted"]["reference_examples"] == len(model.reference[1])
    assert (tmp_path / "team" / "reference.npz").read_bytes() == (DEFAULT_MODEL / "reference.npz").read_bytes()


def test_a_conflict_keeps_the_newest_label(model, sample_features):
    features, labels, _ = sample_features
    old = entries(features[:2], labels[:2], model, 100)
    new = [dict(old[0], label=model.classes[1 - labels[0]], time=500, file="later.jpg")]
    merged, conflicts = merge_corrections(old, new)
    assert len(merged) == 2 and merged[0]["label"] == model.classes[1 - labels[0]]
    assert conflicts == [(new[0], old[0])]
    assert merge_corrections(new, old)[0][0]["label"] == model.classes[1 - labels[0]]  # whatever the order


def test_an_image_whose_features_another_matrix_product_computed_counts_once(model, monkeypatch):
    """The page computes features with einsum until OpenBLAS has loaded and with sgemm after; the CLI with NumPy's
    BLAS. A colleague's correction of an image I also corrected, or see in a row, is the same image whichever
    computed it (the site test that imports a colleague's file failed about one run in four on this)."""
    paths = sample_files("real")[:3] + sample_files("render")[:3]
    pixels = [preprocess(path, model.input_size, model.crop) for path in paths]
    blas = np.array([model.explain(image).pooled for image in pixels])
    monkeypatch.setattr("rendernet.layers.matmul", lambda a, packed: np.einsum("ij,jk->ik", a, packed))
    einsum = np.array([model.explain(image).pooled for image in pixels])
    monkeypatch.undo()
    distance = np.linalg.norm(blas - einsum, axis=1) / np.linalg.norm(blas, axis=1)
    assert np.all(distance > 0) and np.all(distance < SAME_IMAGE / 30), distance  # not equal bytes; well inside
    labels = np.array([0, 0, 0, 1, 1, 1])
    mine = entries(blas[:4], labels[:4], model, 10, "mine")
    theirs = entries(einsum[2:], 1 - labels[2:], model, 20, "theirs")  # two images in common, labelled otherwise
    merged, conflicts = merge_corrections(mine, theirs)
    assert len(merged) == 6 and len(conflicts) == 2
    assert [entry["file"] for entry in merged] == ["mine0.jpg", "mine1.jpg"] + [f"theirs{index}.jpg" for index in range(4)]

    adaptation = Adaptation(load_model(DEFAULT_MODEL))
    for row, vector in enumerate(einsum):
        adaptation.remember(row, vector)
    adaptation.add(document_of(model, mine))
    assert [adaptation.label_of(row) for row in range(6)] == [model.classes[label] for label in labels[:4]] + ["", ""]


def test_a_corrected_image_answers_with_the_user_s_label_everywhere():
    classes = ["real", "render"]
    assert answer([0.2, 0.8], classes, 0.5).label == "render"
    corrected = answer([0.2, 0.8], classes, 0.5, your_label="real")
    assert corrected.label == "real" and corrected.confidence == 1.0 and not corrected.not_sure
    header = csv_header(classes)
    row = dict(
        zip(
            header,
            csv_row(
                {
                    "file": "a.jpg",
                    "probabilities": {"real": 0.2, "render": 0.8},
                    "your_label": "real",
                    "shipped": {"real": 0.7, "render": 0.3},
                    "model": "adapted",
                },
                classes,
                0.5,
                0.6,
            ),
            strict=True,
        )
    )
    assert (row["label"], row["answer"], row["your_label"], row["shipped_label"], row["threshold"]) == (
        "render",
        "real",
        "real",
        "real",
        "0.5",
    )
