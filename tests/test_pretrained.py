"""The pretrained backbone: the .pth reader runs no code from the file, the converted network gives
ImageNet's answers on photographs, and the whole backbone runs in NumPy as in Keras and LiteRT."""

import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import SAMPLE_DIR
from helpers import tflite_run
from rendernet import load_model, preprocess
from rendernet.cache import cache_root

pytest.importorskip("keras")  # without TensorFlow these tests are skipped
from rendernet_train.efficientnet import blocks, fetch_weights, imagenet_classifier
from rendernet_train.export import export_numpy, export_tflite, round_weights
from rendernet_train.torch_weights import TorchWeightsError, read_state_dict
from rendernet_train.transfer import build_classifier

pytestmark = [pytest.mark.slow, pytest.mark.network]

CACHE = cache_root()
# Committed sample photographs (scikit-image) and the ImageNet classes a person would accept for them.
IMAGENET_CASES = {
    "real/scikit-image-b36b422a296f.webp": {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"},  # chelsea.png
    "real/scikit-image-db4aab40f2c5.webp": {967: "espresso", 968: "cup", 504: "coffee mug"},  # coffee.png
    "real/scikit-image-0c6e882cd750.webp": {665: "moped", 670: "motor scooter"},  # motorcycle_left.png
    "real/scikit-image-5d3df8b88049.webp": {657: "missile", 812: "space shuttle", 744: "projectile"},  # rocket.jpg
}


class RunsCode:
    def __reduce__(self):
        return os.system, ("touch ran-code",)


def test_reader_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"weight": RunsCode()}, protocol=2)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(payload)
    zipped = tmp_path / "zipped.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("model/data.pkl", payload)
    for path in (legacy, zipped):
        with pytest.raises(TorchWeightsError, match=r"refusing to unpickle (posix|os|nt)\.system"):
            read_state_dict(path)
    assert not (tmp_path / "ran-code").exists()


def test_reader_reports_truncated_and_foreign_files(tmp_path):
    original = fetch_weights(CACHE).read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(original[: len(original) // 2])
    with pytest.raises(TorchWeightsError, match="missing or truncated"):
        read_state_dict(truncated)
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(b"PK\x03\x04 not really a zip" + bytes(100))
    with pytest.raises(TorchWeightsError):
        read_state_dict(foreign)


def test_reader_gives_every_tensor_of_the_real_weights():
    state = read_state_dict(fetch_weights(CACHE))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert len([name for name in state if name.endswith("_depthwise_conv.weight")]) == len(list(blocks())) == 16
    assert all(np.isfinite(value).all() for value in state.values())


def test_converted_network_names_what_is_in_the_photographs():
    model = imagenet_classifier(224, CACHE)
    batch = np.stack([preprocess(SAMPLE_DIR / name, 224) for name in IMAGENET_CASES]).astype(np.float32)
    probabilities = np.asarray(model(batch))
    for (name, accepted), row in zip(IMAGENET_CASES.items(), probabilities, strict=True):
        assert int(row.argmax()) in accepted, f"{name}: top-1 class {int(row.argmax())} ({row.max():.2f})"


def test_whole_backbone_in_numpy_matches_keras_and_litert(tmp_path, sample_images):
    """Every layer type of EfficientNet-Lite0 (1x1 convs, depthwise 3x3/5x5 at strides 1 and 2 with 'same'
    padding, folded BN, ReLU6, residual adds) with int8 weights: probabilities within 1e-5, same labels, and the
    final feature map within 1e-4 of its largest value."""
    import keras

    model = build_classifier(224, 2, CACHE, "head", hidden=0, dropout=0.2)
    rng = np.random.default_rng(0)
    model.get_layer("classifier").set_weights([rng.normal(0, 0.05, (1280, 2)).astype(np.float32), np.zeros(2, np.float32)])
    round_weights(model, "int8")
    export_numpy(model, tmp_path, ["real", "render"], weights_dtype="int8")
    export_tflite(model, tmp_path / "model.tflite")
    numpy_model = load_model(tmp_path)
    batch = np.stack([preprocess(path, 224) for path in sample_images[::25]])
    probabilities, features = numpy_model.forward(batch, return_features=True)
    keras_features = keras.Model(model.input, model.get_layer("head").output)(batch.astype(np.float32))
    assert np.abs(features - np.asarray(keras_features)).max() <= 1e-4 * np.abs(keras_features).max()
    for reference in (np.asarray(model(batch.astype(np.float32))), tflite_run(tmp_path / "model.tflite", batch)):
        assert np.abs(probabilities - reference).max() <= 1e-5
        assert np.array_equal(probabilities.argmax(axis=1), reference.argmax(axis=1))
    assert (tmp_path / "weights.npz").stat().st_size <= 4 * 1024 * 1024


def test_backbone_stops_only_at_a_block_output():
    import keras
    from rendernet_train.efficientnet import backbone_layers
    from rendernet_train.errors import TrainingError

    inputs = keras.Input((224, 224, 3))
    assert tuple(backbone_layers(inputs, "block11_add").shape) == (None, 14, 14, 112)
    with pytest.raises(TrainingError, match="no layer 'block2_add'"):
        backbone_layers(inputs, "block2_add")
