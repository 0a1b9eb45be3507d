"""`rendernet convert`: Keras models (.keras, .h5, Keras.js folders) in the rendernet format, Keras the oracle."""

import json
import math

import numpy as np
import pytest
from conftest import example_folder, sample_files
from PIL import Image
from rendernet import load_model
from rendernet.errors import RendernetError
from rendernet.preprocess import preprocess

keras = pytest.importorskip("keras")
from rendernet_train.cli import main  # noqa: E402
from rendernet_train.convert import convert  # noqa: E402
from rendernet_train.errors import ConvertError  # noqa: E402

RNG = np.random.default_rng(0)
CLASSES = ["real", "render"]


def pixels(count=2, size=64):
    return RNG.uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def randomize_batch_norms(model):
    """Statistics away from the initial 0 and 1, so that folding them is tested."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize_batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([RNG.uniform(0.5, 1.5, n), RNG.normal(0, 0.1, n), RNG.normal(0, 0.1, n), RNG.uniform(0.5, 1.5, n)])


# --- Keras.js: the 2017 experiment's architecture, written as Keras.js's encoder wrote it ----------------------------

INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
}
WEIGHTED = {
    "use_bias": True,
    "kernel_initializer": INITIALIZER,
    "bias_initializer": {"class_name": "Zeros", "config": {}},
    "kernel_regularizer": None,
    "bias_regularizer": None,
    "activity_regularizer": None,
    "kernel_constraint": None,
    "bias_constraint": None,
}


def keras2_layer(class_name, name, **config):
    return {"class_name": class_name, "config": {"name": name, "trainable": True, **config}}


def conv(name, **extra):
    options = {"filters": 32, "kernel_size": [3, 3], "strides": [3, 3], "padding": "valid", "data_format": "channels_last"}
    options.update(dilation_rate=[1, 1], activation="linear", **WEIGHTED)
    return keras2_layer("Conv2D", name, **{**options, **extra})


def experiment_config():
    """model.json of the 2017 experiment's network as Keras 2.0.4's to_json() wrote it (Sequential, a list config)."""
    layers = [
        conv("conv2d_1", batch_input_shape=[None, 200, 200, 3], dtype="float32"),
        keras2_layer("Activation", "activation_1", activation="relu"),
        conv("conv2d_2"),
        keras2_layer("Activation", "activation_2", activation="relu"),
        keras2_layer(
            "MaxPooling2D", "max_pooling2d_1", pool_size=[2, 2], padding="valid", strides=[2, 2], data_format="channels_last"
        ),
        keras2_layer("Dropout", "dropout_1", rate=0.25),
        keras2_layer("Flatten", "flatten_1"),
        keras2_layer("Dense", "dense_1", units=128, activation="relu", **WEIGHTED),
        keras2_layer("Dropout", "dropout_2", rate=0.5),
        keras2_layer("Dense", "dense_2", units=2, activation="softmax", **WEIGHTED),
    ]
    return {"class_name": "Sequential", "config": layers, "keras_version": "2.0.4", "backend": "tensorflow"}


def experiment_oracle():
    """The same network built in Keras 3 with random weights (biases too)."""
    model = keras.Sequential(
        [
            keras.Input((200, 200, 3)),
            keras.layers.Conv2D(32, 3, strides=3, activation="relu", name="conv2d_1"),
            keras.layers.Conv2D(32, 3, strides=3, activation="relu", name="conv2d_2"),
            keras.layers.MaxPooling2D(2, name="max_pooling2d_1"),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="dense_1"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2, activation="softmax", name="dense_2"),
        ]
    )
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([RNG.normal(0, 0.05, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def write_kerasjs(folder, config, model):
    """model.json, metadata.json and weights.buf as Keras.js's encoder wrote them, from `model`'s weights."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata, chunks, offset = [], [], 0
    for layer in model.layers:
        for variable in layer.weights:
            value = np.asarray(variable.numpy(), "<f4")
            entry = {"weight_name": f"{layer.name}/{variable.name}:0", "layer_name": layer.name, "shape": list(value.shape)}
            metadata.append({**entry, "offset": offset, "length": int(value.size), "type": "float32"})
            chunks.append(value.tobytes())
            offset += value.nbytes
    (folder / "model.json").write_text(json.dumps(config))
    (folder / "metadata.json").write_text(json.dumps(metadata))
    (folder / "weights.buf").write_bytes(b"".join(chunks))
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    oracle = experiment_oracle()
    return write_kerasjs(tmp_path_factory.mktemp("kerasjs") / "experiment", experiment_config(), oracle), oracle


def test_the_2017_kerasjs_model_matches_keras(experiment, tmp_path):
    folder, oracle = experiment
    report = convert(folder, tmp_path / "out", CLASSES, input_range="unit", crop="top-left")
    assert report["source"]["format"] == "kerasjs" and report["max_difference_to_keras"] < 1e-5
    model = load_model(tmp_path / "out")
    batch = pixels(3, 200)
    assert np.abs(model.forward(batch) - oracle.predict(batch / 255, verbose=0)).max() < 1e-5
    assert model.crop == "top-left" and model.classes == CLASSES
    assert model.head() is None  # Flatten + Dense: no pooled features, so no heatmap and no adaptation

    # the square the page and the CLI feed it is the top-left one, scaled to cover
    wide = np.zeros((200, 300, 3), np.uint8)
    wide[:, :40] = 255  # a white strip on the left edge: in the top-left square, not in the centre one
    square = preprocess(Image.fromarray(wide), 200, model.crop)
    assert square[:, :38].min() == 255 and square[:, 42:].max() == 0
    assert preprocess(Image.fromarray(wide), 200).max() == 0


def test_a_kerasjs_functional_model(tmp_path):
    inputs = keras.layers.Input((32, 32, 3), name="input_1")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    oracle = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                {
                    "name": "input_1",
                    "class_name": "InputLayer",
                    "config": {"batch_input_shape": [None, 32, 32, 3], "dtype": "float32", "sparse": False, "name": "input_1"},
                    "inbound_nodes": [],
                },
                {
                    **conv("conv", filters=8, strides=[1, 1], padding="same", activation="relu"),
                    "name": "conv",
                    "inbound_nodes": [[["input_1", 0, 0, {}]]],
                },
                {
                    **keras2_layer("GlobalAveragePooling2D", "gap", data_format="channels_last"),
                    "name": "gap",
                    "inbound_nodes": [[["conv", 0, 0, {}]]],
                },
                {
                    **keras2_layer("Dense", "out", units=3, activation="softmax", **WEIGHTED),
                    "name": "out",
                    "inbound_nodes": [[["gap", 0, 0, {}]]],
                },
            ],
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["out", 0, 0]],
        },
        "keras_version": "2.0.8",
    }
    config["config"]["layers"][1]["config"]["kernel_size"] = [3, 3]
    folder = write_kerasjs(tmp_path / "functional", config, oracle)
    convert(folder, tmp_path / "out", ["a", "b", "c"], input_range="signed")
    batch = pixels(2, 32)
    model = load_model(tmp_path / "out")
    assert np.abs(model.forward(batch) - oracle.predict(batch / 127.5 - 1, verbose=0)).max() < 1e-5
    assert model.head() is not None  # average pooling + Dense: heatmaps and adaptation work


def broken_copy(experiment, tmp_path, change):
    folder = tmp_path / "broken"
    write_kerasjs(folder, experiment_config(), experiment[1])
    change(folder)
    return folder


def edit_json(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def sparse_weights(folder):
    with open(folder / "weights.buf", "r+b") as handle:
        handle.truncate(2_100_000_000)  # 2.1 GB, sparse: nothing is written, and the reader must not read it


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: edit_json(f / "metadata.json", lambda m: m[-1].update(offset=10**9)), "dense_2/bias:0 runs past weights.buf"),
        (
            lambda f: edit_json(f / "metadata.json", lambda m: m[0].update(length=500_000_000, shape=[500_000_000])),
            "runs past weights.buf",
        ),
        (
            lambda f: edit_json(f / "metadata.json", lambda m: m[0].update(shape=[3, 3, 3, 16], length=432)),
            "conv2d_1/kernel has shape [3, 3, 3, 16]",
        ),
        (lambda f: edit_json(f / "metadata.json", lambda m: m.pop()), "no weight 'bias' for layer 'dense_2'"),
        (
            lambda f: edit_json(f / "model.json", lambda m: m["config"][1].update(class_name="Sparkle")),
            "class 'Sparkle', which Keras does not have",
        ),
        (lambda f: edit_json(f / "model.json", lambda m: m["config"][1].update(class_name="Lambda")), "Lambda layer"),
        (
            lambda f: edit_json(f / "model.json", lambda m: m["config"][0]["config"].update(data_format="channels_first")),
            "'conv2d_1' has data_format='channels_first'",
        ),
        (lambda f: (f / "model.json").write_text("[" * 100_000), "nested too deeply"),
        (lambda f: edit_json(f / "model.json", lambda m: m["config"][1]["config"].update(activation="hard_sigmoid")), "0.2 x"),
        (lambda f: (f / "metadata.json").write_text("{not json"), "metadata.json is not valid JSON"),
        (sparse_weights, "weights.buf is 2,100 MB"),
    ],
)
def test_hostile_kerasjs_folders_are_one_line_and_write_nothing(experiment, tmp_path, change, message):
    folder = broken_copy(experiment, tmp_path, change)
    with pytest.raises(ConvertError) as error:
        convert(folder, tmp_path / "out", CLASSES, input_range="unit")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


# --- keras.applications: every layer the common image classifiers hold ----------------------------------------------

APPLICATIONS = [
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "ResNet50",
    "DenseNet121",
]


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_match_keras(name, tmp_path):
    """Built with weights=None (nothing downloaded), saved as .keras, converted; the logits compared (a softmax of
    4 classes hides differences when it saturates), then the probabilities."""
    network = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=4, classifier_activation=None)
    randomize_batch_norms(network)
    network.save(tmp_path / "network.keras")
    input_range = None if name.startswith(("MobileNetV3", "EfficientNet")) else "signed"  # those scale their own input
    report = convert(tmp_path / "network.keras", tmp_path / "out", input_range=input_range)
    assert report["changed"] == "the model ends in logits: a Softmax layer was added" and report["max_difference_to_keras"] < 1e-4
    model = load_model(tmp_path / "out")
    if name == "MobileNetV2":  # conv, batch norm, ReLU6: one layer each in Keras, one pass here
        assert not {"BatchNormalization", "ReLU"} & {type(layer).__name__ for layer, _ in model.layers}
    batch = pixels(2)
    logits = network.predict(batch if input_range is None else batch / 127.5 - 1, verbose=0).reshape(2, -1)
    model.output_name = model.layers[-2][0].name  # the logits, before the added Softmax
    ours = model.forward(batch)
    assert np.abs(ours - logits).max() <= 1e-4 * max(1.0, np.abs(logits).max())


# --- .h5 and .keras files of one's own, nested models, the layers beyond the applications ---------------------------


def transfer_model():
    """Transfer-learning code's shape: a backbone model used as a layer, pooled, one sigmoid unit."""
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3), alpha=0.35)
    randomize_batch_norms(backbone)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", bias_initializer="ones")(x))


@pytest.mark.parametrize("dtype, tolerance", [("float16", 2e-3), ("int8", 0.1)])
def test_an_h5_transfer_model_with_a_sigmoid_unit(tmp_path, dtype, tolerance):
    """Stored as float16 or int8 (per output channel): the converted model is the quantized one, checked against
    Keras holding the same values (max_difference_to_keras), and near the original float32 network."""
    network = transfer_model()
    network.save(tmp_path / "mine.h5")
    report = convert(tmp_path / "mine.h5", tmp_path / "out", CLASSES, input_range="signed", weights_dtype=dtype)
    assert report["source"]["format"] == "h5" and "Dense(2, softmax)" in report["changed"]
    assert report["max_difference_to_keras"] < 1e-5
    model = load_model(tmp_path / "out")
    kernels = [layer["weights"]["kernel"] for layer in model.manifest["layers"] if "kernel" in layer["weights"]]
    assert {spec["dtype"] for spec in kernels} == {dtype}
    batch = pixels(3)
    p = network.predict(batch / 127.5 - 1, verbose=0)[:, 0]
    assert np.abs(model.forward(batch) - np.stack([1 - p, p], axis=1)).max() < tolerance
    assert model.head() is not None and any("/" in layer.name for layer, _ in model.layers)  # nested names


def test_every_other_supported_layer(tmp_path):
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Rescaling([1 / 255, 1 / 200, 1 / 100], offset=[0.0, -0.1, 0.2])(inputs)
    x = keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.01])(x)
    x = keras.layers.ZeroPadding2D(((1, 2), (0, 3)))(x)
    x = keras.layers.Cropping2D(((0, 1), (2, 0)))(x)
    a = keras.layers.Conv2D(6, 3, dilation_rate=2, padding="same", activation="hard_sigmoid")(x)
    b = keras.layers.DepthwiseConv2D(3, dilation_rate=(2, 1), padding="same", depth_multiplier=2)(x)
    b = keras.layers.LeakyReLU(negative_slope=0.1)(b)
    c = keras.layers.SeparableConv2D(6, 3, dilation_rate=2, padding="same", activation="hard_swish")(x)
    merged = keras.layers.Concatenate()(
        [
            keras.layers.Average()([a, b, c]),
            keras.layers.Maximum()([a, b]),
            keras.layers.Minimum()([b, c]),
            keras.layers.Subtract()([a, c]),
            keras.layers.Multiply()([a, b]),
        ]
    )
    merged = keras.layers.ReLU(max_value=4.0, negative_slope=0.05, threshold=0.1)(merged * 2.0 + 1.0)
    gated = keras.layers.Multiply()([merged, keras.layers.GlobalMaxPooling2D(keepdims=True)(merged)])
    x = keras.layers.Conv2D(5, 1, activation="elu")(gated)
    x = keras.layers.Reshape((-1, 5))(x)
    x = keras.layers.Flatten()(x)
    network = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    network.save(tmp_path / "mixed.keras")
    report = convert(tmp_path / "mixed.keras", tmp_path / "out", ["a", "b", "c"], input_size=None)
    assert report["changed"] is None
    batch = pixels(2, 24)
    assert np.abs(load_model(tmp_path / "out").forward(batch) - network.predict(batch, verbose=0)).max() < 1e-5


@pytest.mark.parametrize("input_range", ["imagenet", "caffe", "raw"])
def test_input_ranges_feed_the_network_what_it_expects(input_range, tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    network = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    network.save(tmp_path / "m.keras")
    convert(tmp_path / "m.keras", tmp_path / "out", CLASSES, input_range=input_range)
    batch = pixels(2, 16)
    fed = {
        "imagenet": (batch / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
        "caffe": batch[..., ::-1] - np.array([103.939, 116.779, 123.68]),
        "raw": batch,
    }[input_range]
    assert np.abs(load_model(tmp_path / "out").forward(batch) - network.predict(fed, verbose=0)).max() < 1e-5


def test_an_open_input_size_needs_input_size(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=2)(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "open.keras")
    with pytest.raises(ConvertError, match="give --input-size"):
        convert(tmp_path / "open.keras", tmp_path / "out", CLASSES, input_range="unit")
    convert(tmp_path / "open.keras", tmp_path / "out", CLASSES, input_range="unit", input_size=48)
    assert load_model(tmp_path / "out").input_shape == (48, 48, 3)


def lambda_model():
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))


def shared_model():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 1)
    return keras.Model(inputs, keras.layers.Flatten()(conv(conv(inputs))))


def small(layer, shape=(8, 8, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))


@pytest.mark.parametrize(
    "build, options, message",
    [
        (lambda: small(keras.layers.LayerNormalization(name="norm")), {}, "layer 'norm': type LayerNormalization"),
        (lambda: small(keras.layers.Conv2D(2, 3, activation="gelu", name="g")), {}, "layer 'g': activation 'gelu'"),
        (lambda: small(keras.layers.Conv2D(2, 3, padding="causal", name="c"), (8, 8, 3)), {}, "cannot be loaded|padding"),
        (lambda_model, {}, "cannot be loaded by Keras"),
        (shared_model, {}, "called 2 times"),
        (lambda: small(keras.layers.Conv2D(2, 3), (8, 12, 3)), {}, "8x12; rendernet feeds square images"),
        (lambda: small(keras.layers.Conv2D(2, 3), (8, 8, 1)), {}, "(8, 8, 1)"),
        (
            lambda: small(keras.layers.Conv2D(2, 3, name="c")),
            {"classes": ["a", "b"]},
            "--classes names 2 classes; the model has 72 outputs",
        ),
    ],
)
def test_unsupported_models_are_one_line_and_write_nothing(build, options, message, tmp_path):
    try:
        network = build()
    except ValueError:  # Keras itself refuses it (causal padding in 2D): nothing to convert
        return
    network.save(tmp_path / "m.keras")
    with pytest.raises(RendernetError) as error:  # ConvertError, or the exporter's ModelError
        convert(tmp_path / "m.keras", tmp_path / "out", options.get("classes"), input_range="unit")
    text = str(error.value)
    assert any(part in text for part in message.split("|")), text
    assert "\n" not in text and not (tmp_path / "out").exists()


def test_input_range_is_asked_for_when_the_model_does_not_scale_its_input(tmp_path):
    small(keras.layers.Conv2D(2, 3)).save(tmp_path / "m.keras")
    with pytest.raises(ConvertError, match="give --input-range"):
        convert(tmp_path / "m.keras", tmp_path / "out")


def test_the_command(experiment, tmp_path, capsys):
    folder, _ = experiment
    argv = [
        "convert",
        str(folder),
        "--out",
        str(tmp_path / "out"),
        "--classes",
        "real,render",
        "--input-range",
        "unit",
        "--crop",
        "top-left",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == CLASSES and report["params"] == experiment[1].count_params()
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())
    assert manifest["source"] == {
        "format": "kerasjs",
        "file": "experiment",
        "input_range": "unit",
        "keras_version": keras.__version__,
    }
    assert manifest["crop"] == "top-left" and "top-left square" in manifest["preprocessing"]
    assert main(["classify", "--model", str(tmp_path / "out"), str(sample_files("real")[0])]) == 0
    assert set(json.loads(capsys.readouterr().out)["probabilities"]) == set(CLASSES)
    assert main(["convert", str(tmp_path / "nowhere.h5"), "--out", str(tmp_path / "x"), "--input-range", "unit"]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0 and not (tmp_path / "x").exists()
    assert math.isfinite(report["max_difference_to_keras"])


def test_tflite_writes_the_same_computation(tmp_path):
    """--tflite: model.tflite (and model.keras) take the same 0-255 pixels and give the same probabilities."""
    from helpers import tflite_run

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)).save(tmp_path / "m.keras")
    convert(tmp_path / "m.keras", tmp_path / "out", CLASSES, input_range="caffe", tflite=True)
    batch = pixels(3, 32)
    ours = load_model(tmp_path / "out").forward(batch)
    assert np.abs(tflite_run(tmp_path / "out" / "model.tflite", batch) - ours).max() < 1e-5
    saved = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert np.abs(saved.predict(batch, verbose=0) - ours).max() < 1e-5


def test_a_head_written_as_dense_then_activation_can_be_adapted(tmp_path):
    """Dense(2) + Activation("softmax"), as many notebooks write it: the activation folds into the Dense at load, so
    the page's heatmap and corrections work; `rendernet adapt` fits it."""
    from rendernet.adapt import adaptable_head

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, activation="relu")(inputs))
    x = keras.layers.Activation("softmax")(keras.layers.Dense(2, name="logits")(x))
    keras.Model(inputs, x).save(tmp_path / "m.keras")
    convert(tmp_path / "m.keras", tmp_path / "out", CLASSES, input_range="unit")
    model = load_model(tmp_path / "out")
    assert model.head() is not None and adaptable_head(model).name == "logits"
    examples = example_folder(tmp_path / "examples")
    assert main(["adapt", "--model", str(tmp_path / "out"), "--examples", str(examples), "--out", str(tmp_path / "adapted")]) == 0
    assert load_model(tmp_path / "adapted").manifest["adapted"]["corrections"] == {"real": 2, "render": 2}
