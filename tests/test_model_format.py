"""The weights format: version, sha256 and layer checks raise ModelError with a clear message."""

import json
import shutil

import keras
import numpy as np
import pytest
from rendernet import ModelError, load_model
from rendernet.model import model_from_bytes

from training.export import export_numpy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    inputs = keras.Input((200, 200, 3), name="input")
    x = keras.layers.Conv2D(4, 4, strides=4, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    folder = tmp_path_factory.mktemp("model")
    export_numpy(model, folder, ["a", "b"], threshold=0.5)
    return folder


def copy(model_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(model_dir, target)
    return target


def edit_manifest(folder, change):
    manifest = json.loads((folder / "model.json").read_text())
    change(manifest)
    (folder / "model.json").write_text(json.dumps(manifest))


def test_round_trip(model_dir):
    model = load_model(model_dir)
    probabilities = model.forward(np.zeros((2, 200, 200, 3), np.uint8))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format_version=2), "format version 2 is not supported"),
    (lambda m: m.update(format="something-else"), "expected format 'rendernet-numpy'"),
    (lambda m: m["layers"][0].update(type="LSTM"), "'LSTM', which the NumPy forward pass does not implement"),
    (lambda m: m["layers"][0]["config"].update(dilation_rate=[2, 2]), "dilation_rate"),
    (lambda m: m["layers"][0]["config"].update(activation="gelu"), "activation 'gelu' is not supported"),
    (lambda m: m["layers"][0]["weights"].update(kernel=[3, 3, 3, 4]), "has shape [4, 4, 3, 4]"),
    (lambda m: m["layers"][0]["weights"].update(gamma=[4]), "missing"),
    (lambda m: m.pop("classes"), "required key 'classes' is missing"),
])
def test_bad_manifest(model_dir, tmp_path, change, message):
    folder = copy(model_dir, tmp_path)
    edit_manifest(folder, change)
    with pytest.raises(ModelError) as error:
        load_model(folder)
    assert message in str(error.value)


def test_truncated_weights(model_dir, tmp_path):
    folder = copy(model_dir, tmp_path)
    data = (folder / "weights.npz").read_bytes()
    (folder / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"weights\.npz does not match model\.json: sha256 expected"):
        load_model(folder)


def test_altered_weights(model_dir, tmp_path):
    folder = copy(model_dir, tmp_path)
    data = bytearray((folder / "weights.npz").read_bytes())
    data[-200] ^= 0xFF
    (folder / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="altered, truncated or from another model"):
        load_model(folder)


def test_missing_files_and_bad_json(model_dir, tmp_path):
    with pytest.raises(ModelError, match=r"cannot read .*model\.json"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="not valid JSON"):
        model_from_bytes(b"{not json", b"")


def test_wrong_input_shape(model_dir):
    with pytest.raises(ModelError, match="the model expects"):
        load_model(model_dir).forward(np.zeros((1, 100, 100, 3), np.uint8))


def test_export_refuses_unsupported_layers(tmp_path):
    from rendernet.errors import ModelError as CoreError

    for layer, message in [
        (keras.layers.LayerNormalization(name="norm"), "layer 'norm': type LayerNormalization"),
        (keras.layers.Conv2D(2, 3, dilation_rate=2, name="dilated"), "layer 'dilated': dilation_rate"),
        (keras.layers.Conv2D(2, 3, activation="gelu", name="gelu_conv"), "activation 'gelu'"),
    ]:
        inputs = keras.Input((9, 9, 3), name="input")
        model = keras.Model(inputs, layer(inputs))
        with pytest.raises(CoreError) as error:
            export_numpy(model, tmp_path / layer.name, ["a"])
        assert message in str(error.value)
        assert not (tmp_path / layer.name / "model.json").exists()
