"""End to end: a tiny training run exports every format, each reloads, and they agree."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLE_DIR, sample_files
from helpers import tflite_run
from PIL import Image
from rendernet import load_model, preprocess
from rendernet.cache import cache_root
from rendernet.preprocess import INPUT_SIZE, RULE_VERSION
from rendernet_train.data import CROP_SOURCE_SIZE, cache_images, random_resized_crop, scan, tf_dataset
from rendernet_train.errors import TrainingError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """12 real + 12 render sample images, plus files training must skip."""
    root = tmp_path_factory.mktemp("data")
    for name in ("real", "render"):
        (root / name).mkdir()
        for path in sample_files(name)[:12]:
            (root / name / path.name).write_bytes(path.read_bytes())
    (root / "real" / "empty.jpg").write_bytes(b"")
    (root / "render" / "notes.txt").write_text("not an image")
    (root / "render" / "truncated.jpg").write_bytes(sample_files("render")[0].read_bytes()[:500])
    return root


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    from rendernet_train.train import train

    out = tmp_path_factory.mktemp("model")
    cache = tmp_path_factory.mktemp("cache")
    metrics = train(
        tiny_dataset, out, architecture="small", epochs=1, batch_size=8, quantize=("float16", "int8"), cache_dir=cache, verbose=0
    )
    return out, metrics, cache


@pytest.fixture(scope="module")
def four_sources(tmp_path_factory):
    """The sample's images of four sources, two real and two render, with their manifest entries."""
    root = tmp_path_factory.mktemp("four-sources")
    sample = json.loads((SAMPLE_DIR / "manifest.json").read_text())
    chosen = ("scikit-image", "lxqt-themes", "povray", "blender-products")
    sample["files"] = [entry for entry in sample["files"] if entry["source"] in chosen]
    for entry in sample["files"]:
        (root / entry["path"]).parent.mkdir(exist_ok=True)
        shutil.copyfile(SAMPLE_DIR / entry["path"], root / entry["path"])
    (root / "manifest.json").write_text(json.dumps(sample))
    return root


def test_exports_every_format(trained):
    out, metrics, _ = trained
    for name in (
        "model.keras",
        "model.tflite",
        "model.float16.tflite",
        "model.int8.tflite",
        "weights.npz",
        "model.json",
        "metrics.json",
        "training.png",
        "confusion.png",
        "skipped.txt",
    ):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["classes"] == ["real", "render"]
    for key in ("accuracy", "per_class", "confusion", "roc_auc"):
        assert key in saved["validation"]
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["format_version"] == 2 and manifest["params"] == metrics["params"]
    assert manifest["threshold"] == metrics["threshold"]


def test_skipped_files_are_reported(trained):
    out, metrics, _ = trained
    skipped = (out / "skipped.txt").read_text()
    assert metrics["skipped_files"] == 3
    for name in ("empty.jpg", "notes.txt", "truncated.jpg"):
        assert name in skipped


def test_preprocessing_cache_is_keyed_by_content(trained, tiny_dataset):
    _, _, cache = trained
    assert len(list(Path(cache).glob(f"*.200.v{RULE_VERSION}.u8"))) == 24
    assert not list(Path(cache).glob(f"*.{CROP_SOURCE_SIZE}.v{RULE_VERSION}.u8")), "crop squares are cached only with random crops"
    sample = sorted((tiny_dataset / "real").glob("*.webp"))[1]
    key = hashlib.sha256(sample.read_bytes()).hexdigest()
    stored = np.frombuffer((Path(cache) / f"{key}.200.v{RULE_VERSION}.u8").read_bytes(), np.uint8).reshape(200, 200, 3)
    assert np.array_equal(stored, preprocess(sample))


def test_crop_sources_are_cached_for_training_images_only_on_request(tiny_dataset, tmp_path):
    dataset = scan(tiny_dataset)
    cache_images(dataset, tmp_path, INPUT_SIZE, workers=1, progress=False, crop_sources=True)
    for example in dataset.examples:
        if example.split == "train":
            square = np.frombuffer(example.crop_source_file.read_bytes(), np.uint8)
            assert np.array_equal(square, preprocess(example.path, CROP_SOURCE_SIZE).ravel())
        else:
            assert example.crop_source_file is None
    assert len(list(tmp_path.glob(f"*.{CROP_SOURCE_SIZE}.v{RULE_VERSION}.u8"))) == len(dataset.split("train")) > 0
    batch, labels = next(iter(tf_dataset(dataset.split("train"), 2, 4, training=True, seed=0, random_crops=True)))
    assert batch.shape == (4, 200, 200, 3) and labels.shape == (4, 2)


def test_random_resized_crop_uses_the_preprocessing_filter():
    square = preprocess(sample_files("render")[0], CROP_SOURCE_SIZE)
    whole = random_resized_crop(square, CROP_SOURCE_SIZE, 0, 0, INPUT_SIZE)
    assert np.array_equal(whole, preprocess(Image.fromarray(square)))
    smallest = random_resized_crop(square, 200, 120, 0, INPUT_SIZE)
    assert np.array_equal(smallest, square[0:200, 120:320])


def test_all_formats_agree_on_real_images(trained):
    import keras

    out, _, _ = trained
    batch = np.stack([preprocess(path) for path in sample_files()[::7][:16]])
    keras_probabilities = np.asarray(keras.saving.load_model(out / "model.keras")(batch.astype(np.float32)))
    numpy_probabilities = load_model(out).forward(batch)
    tflite_probabilities = tflite_run(out / "model.tflite", batch.astype(np.float32))
    assert np.abs(numpy_probabilities - keras_probabilities).max() <= 1e-5
    assert np.abs(tflite_probabilities - keras_probabilities).max() <= 1e-5
    # documented tolerances of the quantized exports
    assert np.abs(tflite_run(out / "model.float16.tflite", batch.astype(np.float32)) - keras_probabilities).max() <= 1e-2
    assert np.abs(tflite_run(out / "model.int8.tflite", batch.astype(np.float32)) - keras_probabilities).max() <= 0.1


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """MirroredStrategy over 2 logical CPU devices (what a 2-GPU machine would use), in a fresh process."""
    dataset = tmp_path / "data"
    for name in ("real", "render"):
        (dataset / name).mkdir(parents=True)
        for path in sample_files(name)[:30]:
            (dataset / name / path.name).write_bytes(path.read_bytes())
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from rendernet_train.model import make_strategy
from rendernet_train.train import train
strategy = make_strategy("mirrored")
print("REPLICAS", strategy.num_replicas_in_sync)
train({str(dataset)!r}, {str(tmp_path / "model")!r}, architecture="small", epochs=1, batch_size=8, strategy="mirrored",
      cache_dir={str(tmp_path / "cache")!r}, verbose=0)
"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLICAS 2" in result.stdout
    assert load_model(tmp_path / "model").forward(np.zeros((1, 200, 200, 3), np.uint8)).shape == (1, 2)


def test_multi_worker_training_on_two_local_processes(tmp_path):
    """`rendernet train --strategy multi-worker` as on a cluster: two worker processes on 127.0.0.1, each told its
    place by TF_CONFIG, one epoch; both finish with identical weights."""
    dataset = tmp_path / "data"
    for name in ("real", "render"):
        (dataset / name).mkdir(parents=True)
        for path in sample_files(name)[:20]:
            (dataset / name / path.name).write_bytes(path.read_bytes())
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rendernet_train.cli",
                    "train",
                    dataset,
                    "--out",
                    tmp_path / f"model{index}",
                    "--architecture",
                    "small",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--strategy",
                    "multi-worker",
                    "--verbose",
                    "0",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=300)
            assert worker.returncode == 0, stderr[-3000:]
    finally:
        for worker in workers:
            worker.kill()
    first, second = (np.load(tmp_path / f"model{index}" / "weights.npz") for index in range(2))
    assert sorted(first.files) == sorted(second.files)
    assert all(np.array_equal(first[key], second[key]) for key in first.files)
    metrics = json.loads((tmp_path / "model0" / "metrics.json").read_text())
    assert metrics["config"]["strategy"] == "multi-worker" and metrics["epochs_run"] == 1


def test_pretrained_model_holds_a_source_out_and_scores_every_source_unseen(tmp_path):
    """The default architecture end to end on the sample: frozen EfficientNet-Lite0 + head, int8 weights,
    a held-out source scored (accuracy and ROC AUC), leave-one-source-out, NumPy == Keras."""
    import keras
    from rendernet_train.train import train

    data = tmp_path / "sample"
    shutil.copytree(SAMPLE_DIR, data)
    sample = json.loads((data / "manifest.json").read_text())
    povray = [entry for entry in sample["files"] if entry["source"] == "povray"]
    metrics = train(
        data,
        tmp_path / "model",
        epochs=2,
        batch_size=16,
        views=2,
        hold_out=("povray",),
        loso=True,
        cache_dir=tmp_path / "cache",
        verbose=0,
    )
    assert metrics["held_out"]["povray"]["count"] == len(povray) > 0
    assert 0.0 <= metrics["held_out"]["povray"]["roc_auc"] <= 1.0
    sources = {entry["source"] for entry in json.loads((data / "manifest.json").read_text())["files"]} - {"povray"}
    assert set(metrics["leave_one_source_out"]) == sources
    families = metrics["leave_one_source_out_families"]
    assert families["rooms/real"]["worst"] == "tiktok-interiors" and families["rooms/render"]["sources"] == 1
    assert families["exteriors/real"]["worst"] == "gcompris-buildings" and families["exteriors/render"]["sources"] == 1
    assert sum(family["sources"] for family in families.values()) == len(sources)
    assert 0.0 <= metrics["selection"]["score"] <= 1.0
    assert set(metrics["selection"]["under_guard"]) <= sources - {
        "tiktok-interiors",
        "blender-rooms",
        "gcompris-buildings",
        "blender-exteriors",
    }
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["input"]["shape"] == [224, 224, 3] and manifest["credits"]
    kernel_dtypes = {spec["dtype"] for layer in manifest["layers"] for name, spec in layer["weights"].items() if "kernel" in name}
    assert kernel_dtypes == {"int8"}
    batch = np.stack([preprocess(path, 224) for path in sample_files()[::40]])
    keras_probabilities = np.asarray(keras.saving.load_model(tmp_path / "model" / "model.keras")(batch.astype(np.float32)))
    loaded = load_model(tmp_path / "model")
    assert np.abs(loaded.forward(batch) - keras_probabilities).max() <= 1e-5
    # the reference set: training images' pooled features as the NumPy model computes them, balanced over sources
    features, labels = loaded.reference
    assert manifest["reference"]["count"] == len(labels) <= metrics["split_sizes"]["train"] and manifest["rendernet_version"]
    pooled = np.array(
        [loaded.explain(preprocess(data / entry["path"], 224)).pooled for entry in sample["files"] if entry["source"] != "povray"]
    )
    nearest = np.abs(features[:, None, :] - pooled[None]).max(axis=2).min(axis=1)
    assert nearest.max() <= 0.02 * np.abs(pooled).max()  # each one an image's features (Keras = NumPy, float16)
    assert set(np.unique(labels)) == {0, 1}
    assert sum(metrics["split_sizes"].values()) == len(sample_files()) - len(povray)
    assert "povray" not in metrics["test"]["per_source"]
    with pytest.raises(TrainingError, match="no images from source"):
        train(data, tmp_path / "other", epochs=1, hold_out=("nonexistent",), cache_dir=tmp_path / "cache", verbose=0)


def test_fine_tuning_trains_only_the_last_blocks_on_their_cached_input(four_sources, tmp_path):
    """--fine-tune 1: block11 (the last block before block11_add) and the head change; every block before it keeps
    the pretrained weights; the exported model runs in NumPy as in Keras; leave-one-source-out fine-tunes too."""
    import keras
    from rendernet_train.efficientnet import converted_weights
    from rendernet_train.train import train

    metrics = train(
        four_sources,
        tmp_path / "model",
        epochs=2,
        batch_size=8,
        views=2,
        fine_tune=1,
        fine_tune_epochs=2,
        loso=True,
        balance_sources=True,
        cache_dir=tmp_path / "cache",
        verbose=0,
    )
    assert metrics["config"]["fine_tune"] == 1 and metrics["selection"]["score"] is not None
    assert metrics["epochs_run"] >= 3  # the head's epochs, then fine-tuning's
    model = keras.saving.load_model(tmp_path / "model" / "model.keras")
    pretrained = converted_weights(cache_root())
    for layer in ("block10_project", "block11_expand", "block11_project"):
        changed = not np.array_equal(model.get_layer(layer).get_weights()[0], pretrained[layer][0])
        assert changed == layer.startswith("block11"), layer
    batch = np.stack([preprocess(path, 224) for path in sample_files()[::40]])
    assert np.abs(load_model(tmp_path / "model").forward(batch) - np.asarray(model(batch.astype(np.float32)))).max() <= 1e-5
    with pytest.raises(TrainingError, match="only 10 blocks before it"):
        train(four_sources, tmp_path / "other", epochs=1, fine_tune=11, cache_dir=tmp_path / "cache", verbose=0)


def test_several_heads_are_stored_as_their_mean_which_is_the_mean_of_their_logits(four_sources, tmp_path):
    """fit_heads(heads=3) keeps the mean of the heads that seeds 7, 8, 9 train one by one: a linear head's logits are
    then the mean of theirs. train() refuses heads where a mean is not one of them."""
    import keras
    from rendernet_train.train import train
    from rendernet_train.transfer import add_head, fit_heads

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, add_head(keras.layers.GlobalAveragePooling2D(name="pool")(inputs), 2, 0, 0.2))
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(60, 3)).astype(np.float32), np.arange(60) % 2
    settings = {"epochs": 3, "batch_size": 8, "patience": 2, "learning_rate": 1e-2, "verbose": 0}
    singles = [
        fit_heads(model, features[:40], labels[:40], features[40:], labels[40:], seed=seed, **settings)[0] for seed in (7, 8, 9)
    ]
    mean, history = fit_heads(model, features[:40], labels[:40], features[40:], labels[40:], seed=7, heads=3, **settings)
    assert len(history.history["loss"]) >= 1
    for got, *wanted in zip(mean.get_weights(), *(head.get_weights() for head in singles), strict=True):
        assert np.allclose(got, np.mean(wanted, axis=0), atol=1e-6)
    assert not np.allclose(singles[0].get_weights()[0], singles[1].get_weights()[0])
    logits = [features @ head.get_weights()[0] + head.get_weights()[1] for head in singles]
    assert np.allclose(features @ mean.get_weights()[0] + mean.get_weights()[1], np.mean(logits, axis=0), atol=1e-5)
    for refused in ({"hidden": 16}, {"fine_tune": 1}, {"architecture": "small"}):
        with pytest.raises(TrainingError, match="--heads averages linear heads"):
            train(four_sources, tmp_path / "other", epochs=1, heads=2, cache_dir=tmp_path / "cache", verbose=0, **refused)
    with pytest.raises(TrainingError, match="at least one head"):
        train(four_sources, tmp_path / "other", epochs=1, heads=0, cache_dir=tmp_path / "cache", verbose=0)


def test_same_seed_same_weights(tiny_dataset, tmp_path):
    from rendernet_train.train import train

    for name in ("first", "second"):
        train(tiny_dataset, tmp_path / name, architecture="small", epochs=2, batch_size=8, cache_dir=tmp_path / "cache", verbose=0)
    first, second = np.load(tmp_path / "first" / "weights.npz"), np.load(tmp_path / "second" / "weights.npz")
    assert first.files == second.files
    assert all(np.array_equal(first[key], second[key]) for key in first.files)
