"""The weights format: version, sha256 and layer checks raise ModelError with a clear message."""

import json
import shutil

import numpy as np
import pytest
from rendernet import ModelError, load_model
from rendernet.model import model_from_bytes

keras = pytest.importorskip("keras")  # the oracle; without TensorFlow these tests are skipped
from rendernet_train.export import export_numpy  # noqa: E402


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


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version=3), "format_version 3 is not supported"),
        (lambda m: m.update(format="something-else"), "format must be 'rendernet-numpy'"),
        (lambda m: m["layers"][0].update(type="LSTM"), "'LSTM', which the NumPy forward pass does not implement"),
        (lambda m: m["layers"][0]["config"].update(groups=2), "groups=2"),
        (lambda m: m["layers"][0]["config"].update(activation="gelu"), "activation 'gelu' is not supported"),
        (lambda m: m["layers"][0]["weights"].update(kernel=[3, 3, 3, 4]), "has shape [4, 4, 3, 4]"),
        (lambda m: m["layers"][0]["weights"].update(gamma=[4]), "model.json and weights.npz disagree: missing 'conv/gamma'"),
        (lambda m: m.pop("classes"), "required key 'classes' is missing"),
        (lambda m: m.update(layers=[]), "layers must be a non-empty list"),
        (lambda m: m["input"].update(shape=[-200, -200, 3]), "input.shape must be [height, width, channels]"),
        (lambda m: m.update(threshold="0.5"), "threshold must be null or a number from 0 to 1"),
        (lambda m: m.update(threshold=1.5), "threshold must be null or a number from 0 to 1"),
        (lambda m: m.update(classes="realrender"), "classes must be a non-empty list of distinct"),
        (lambda m: m.update(classes=["a", "a"]), "classes must be a non-empty list of distinct"),
        (lambda m: m.update(classes=["a", "b", "c"], threshold=None), "classes names 3 classes, the network outputs 2"),
        (lambda m: m["layers"][1].update(inputs=["nowhere"]), "layers[1].inputs must name 'input' or earlier layers"),
        (lambda m: m.update(output="nowhere"), "output names no layer"),
    ],
)
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
    with pytest.raises(ModelError, match=r"has no model\.json or weights\.npz"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "model.json").mkdir()
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
        (keras.layers.Conv2D(3, 3, groups=3, name="grouped"), "layer 'grouped': groups=3"),
        (keras.layers.Conv2D(2, 3, activation="gelu", name="gelu_conv"), "activation 'gelu'"),
    ]:
        inputs = keras.Input((9, 9, 3), name="input")
        model = keras.Model(inputs, layer(inputs))
        with pytest.raises(CoreError) as error:
            export_numpy(model, tmp_path / layer.name, ["a"])
        assert message in str(error.value)
        assert not (tmp_path / layer.name / "model.json").exists()


def rewrite_weights(folder, change):
    """Edit weights.npz and record its new sha256, as a careless tool (not an attacker on the hash) would."""
    import hashlib
    import io

    with np.load(folder / "weights.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / "weights.npz").write_bytes(buffer.getvalue())
    edit_manifest(folder, lambda m: m["weights"].update(sha256=hashlib.sha256(buffer.getvalue()).hexdigest()))


def test_int8_weights_version_2_and_version_1_both_load(tmp_path):
    from rendernet_train.export import round_weights

    inputs = keras.Input((20, 20, 3), name="input")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu6", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    batch = np.random.default_rng(0).integers(0, 256, (3, 20, 20, 3)).astype(np.uint8)
    export_numpy(model, tmp_path / "float", ["a", "b"])
    with pytest.raises(ModelError, match="call round_weights first"):
        export_numpy(model, tmp_path / "refused", ["a", "b"], weights_dtype="int8")
    round_weights(model, "int8")
    export_numpy(model, tmp_path / "int8", ["a", "b"], weights_dtype="int8")
    with np.load(tmp_path / "int8" / "weights.npz") as archive:
        assert archive["conv/kernel"].dtype == np.int8 and archive["conv/kernel:scale"].shape == (1, 1, 1, 6)
        assert archive["depthwise/kernel:scale"].shape == (1, 1, 6, 1) and archive["conv/bias"].dtype == np.float32
    expected = np.asarray(model(batch.astype(np.float32)))
    assert np.abs(load_model(tmp_path / "int8").forward(batch) - expected).max() <= 1e-5
    # a version 1 manifest (weights as bare shapes, all float32) still loads
    edit_manifest(
        tmp_path / "float",
        lambda m: (
            [m.update(format_version=1)]
            + [layer.update(weights={name: spec["shape"] for name, spec in layer["weights"].items()}) for layer in m["layers"]]
        ),
    )
    assert load_model(tmp_path / "float").forward(batch).shape == (3, 2)
    # stored arrays that do not match their declared encoding are refused, by name
    rewrite_weights(tmp_path / "int8", lambda arrays: arrays.update({"conv/kernel:scale": np.ones((1, 1, 1, 5), np.float32)}))
    with pytest.raises(ModelError, match="conv/kernel:scale"):
        load_model(tmp_path / "int8")
    rewrite_weights(tmp_path / "int8", lambda arrays: arrays.update({"conv/kernel": arrays["conv/kernel"].astype(np.float32)}))
    with pytest.raises(ModelError, match=r"stored as float32, model\.json says int8"):
        load_model(tmp_path / "int8")


def test_class_activation_map_averages_to_the_logits(model_dir):
    """For average pooling + Dense, the map's spatial mean is the logits; for the shipped model, softmax of it is the
    prediction. (The untrained toy model's logits are in the hundreds: compared as logits, relatively.)"""
    from conftest import DEFAULT_MODEL, sample_files
    from rendernet import preprocess

    for model in (load_model(model_dir), load_model(DEFAULT_MODEL)):
        dense = model.head()
        for path in sample_files()[::60]:
            pixels = preprocess(path, model.input_size)
            probabilities, maps, _ = model.explain(pixels)
            _, features = model.forward(pixels[None], return_features=True)
            logits = features[0].mean(axis=(0, 1)) @ dense.kernel_t.T + dense.bias
            rounding = 1e-4 * max(1.0, float(np.abs(maps).max()))  # float32 sums over 2,500 cells of the toy's map
            np.testing.assert_allclose(maps.mean(axis=(0, 1)), logits, rtol=1e-4, atol=rounding)
            assert maps.shape[:2] == ((14, 14) if model.input_size == 224 else (50, 50))
        softmax = np.exp(logits - logits.max())
        np.testing.assert_allclose(softmax / softmax.sum(), probabilities, atol=1e-5)


def test_no_map_without_a_pooled_dense_head(tmp_path):
    inputs = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(2, 8, strides=8, name="conv")(inputs))
    folder = tmp_path / "flat"
    export_numpy(keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x)), folder, ["a", "b"])
    probabilities, maps, pooled = load_model(folder).explain(np.zeros((32, 32, 3), np.uint8))
    assert maps is None and pooled is None and probabilities.shape == (2,)


# One bad value per checked field of the table in rendernet/manifest.py, and the field named in the error.
BAD_VALUES = {
    "format": ("other", "format must be"),
    "format_version": (9, "format_version 9 is not supported"),
    "input": ({"shape": [0, 200, 3]}, "input.shape"),
    "classes": (["a", ""], "classes"),
    "threshold": (-0.1, "threshold"),
    "layers": ({}, "layers"),
    "layer.name, layer.type": ("", "layers[0].name"),
    "layer.inputs": (["later"], "layers[0].inputs"),
    "layer.weights": ([], "layers[0]"),
    "output": ("missing-layer", "output"),
    "weights": ({"sha256": "not hex"}, "weights.sha256"),
    "name": (5, "name must be a string"),
    "preprocessing": (["bilinear"], "preprocessing must be a string"),
    "params": (-1, "params must be an integer >= 0"),
    "macs": (None, "macs must be an integer >= 0, found None"),
    "metrics": ([], "metrics must be an object"),
    "credits": ("someone", "credits must be a list of strings"),
    "adapted": ("yes", "adapted must be an object"),
    "reference": ({"file": "reference.npz", "sha256": "0" * 64, "count": 0}, "reference must be"),
    "rendernet_version": (2, "rendernet_version must be a string"),
    "crop": ("left", "crop must be 'centre' or 'top-left'"),
    "source": ({"format": "onnx", "file": "m.onnx"}, "source must be"),
}


def manifest_table():
    """(field, required, checked) for each row of the format table in manifest.py's docstring."""
    from rendernet import manifest

    rows = [line.split("|")[1:-1] for line in manifest.__doc__.splitlines() if line.startswith("| ") and "---" not in line]
    return [(field.replace("(R)", "").strip(), "(R)" in field, bool(checked.strip())) for field, _, checked, _ in rows[1:]]


def test_the_loader_checks_what_the_format_table_says(model_dir):
    from rendernet.manifest import check_manifest

    valid = json.loads((model_dir / "model.json").read_text())
    table = manifest_table()
    assert {field for field, _, checked in table if checked} == set(BAD_VALUES), "a checked field without a test"
    for field, required, _ in table:
        if required and not field.startswith("layer."):
            broken = json.loads(json.dumps(valid))
            broken.pop(field)
            with pytest.raises(ModelError) as error:
                check_manifest(broken)
            assert f"required key '{field}' is missing" in str(error.value) or str(error.value).startswith(
                f"model.json: {field} "
            ), str(error.value)
        if field in BAD_VALUES:
            value, message = BAD_VALUES[field]
            broken = json.loads(json.dumps(valid))
            target, key = (
                (broken["layers"][0], field.split(",")[0].removeprefix("layer.")) if field.startswith("layer.") else (broken, field)
            )
            target[key] = value
            with pytest.raises(ModelError) as error:
                check_manifest(broken)
            assert message in str(error.value), (field, str(error.value))
