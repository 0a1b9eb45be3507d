"""Every layer type the NumPy forward pass supports, alone with odd shapes, against Keras and LiteRT.

Keras `model(x)` is the oracle; the TFLite conversion of the same model is the
second one. Float32 tolerance 1e-5 (outputs here are O(1) values).
"""

import numpy as np
import pytest
from helpers import export_and_load, tflite_run

keras = pytest.importorskip("keras")  # the oracle; without TensorFlow these tests are skipped

L = keras.layers
TOLERANCE = 1e-5

# (name, input shape (H, W, C), layer factory)
CASES = [
    ("rescaling", (7, 9, 3), lambda: L.Rescaling(1 / 127.5, offset=-1)),
    ("conv_valid_s1", (9, 11, 3), lambda: L.Conv2D(4, 3, activation="relu")),
    ("conv_same_even_kernel", (9, 7, 3), lambda: L.Conv2D(5, 4, padding="same")),
    ("conv_same_s2", (11, 9, 1), lambda: L.Conv2D(3, 3, strides=2, padding="same", activation="relu6")),
    ("conv_valid_s3_nobias", (13, 10, 3), lambda: L.Conv2D(2, 3, strides=3, use_bias=False, activation="sigmoid")),
    ("conv_rect_kernel", (8, 9, 3), lambda: L.Conv2D(3, (2, 3), strides=(1, 2), padding="same", activation="swish")),
    ("conv_stride_eq_kernel", (12, 16, 3), lambda: L.Conv2D(6, 4, strides=4, activation="tanh")),
    ("depthwise_same_s1", (9, 7, 3), lambda: L.DepthwiseConv2D(3, padding="same")),  # wide: shifted views
    ("depthwise_deep_same_s2", (7, 6, 16), lambda: L.DepthwiseConv2D(5, strides=2, padding="same")),  # deep: einsum
    ("depthwise_deep_rect_s1", (6, 5, 12), lambda: L.DepthwiseConv2D((3, 2), activation="relu6")),
    ("depthwise_mult2_s2", (11, 9, 3), lambda: L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, activation="relu")),
    ("depthwise_even_same_s3", (10, 11, 1), lambda: L.DepthwiseConv2D(4, strides=3, padding="same")),
    ("separable_same", (9, 9, 3), lambda: L.SeparableConv2D(4, 3, padding="same", activation="relu")),
    ("separable_mult2_s2", (11, 8, 3), lambda: L.SeparableConv2D(5, 2, strides=2, depth_multiplier=2)),
    ("maxpool_valid", (9, 7, 3), lambda: L.MaxPooling2D(2)),
    ("maxpool_same_s3", (10, 11, 1), lambda: L.MaxPooling2D(3, strides=3, padding="same")),
    ("maxpool_overlap", (9, 9, 3), lambda: L.MaxPooling2D(3, strides=2)),
    ("avgpool_valid", (9, 7, 3), lambda: L.AveragePooling2D(2)),
    ("avgpool_same", (9, 7, 3), lambda: L.AveragePooling2D(3, strides=2, padding="same")),
    ("global_avg", (5, 7, 3), lambda: L.GlobalAveragePooling2D()),
    ("global_max", (5, 7, 3), lambda: L.GlobalMaxPooling2D()),
    ("flatten", (3, 5, 2), lambda: L.Flatten()),
    ("dropout", (5, 5, 3), lambda: L.Dropout(0.5)),
    ("activation_softmax", (3, 3, 4), lambda: L.Activation("softmax")),
    ("relu_max6", (5, 5, 3), lambda: L.ReLU(max_value=6.0)),
    ("softmax", (3, 3, 4), lambda: L.Softmax()),
]


def randomise(model, rng):
    """Random weights everywhere, and BatchNormalization statistics far from the identity."""
    for layer in model.layers:
        layer.set_weights(
            [
                rng.normal(0, 0.5, w.shape).astype(np.float32) + (1.0 if "variance" in v.name else 0.0)
                for w, v in zip(layer.get_weights(), layer.weights, strict=True)
            ]
        )
        for variable in layer.weights:
            if "variance" in variable.name:
                variable.assign(np.abs(variable.numpy()) + 0.1)


def check_parity(model, numpy_model, batch, tmp_path):
    from rendernet_train.export import export_tflite

    expected = np.asarray(model(batch))
    got = numpy_model.forward(batch)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
    tflite = tflite_run(export_tflite(model, tmp_path / "m.tflite"), batch)
    assert np.abs(got - tflite).max() <= TOLERANCE * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("name, shape, factory", CASES, ids=[case[0] for case in CASES])
def test_layer_alone(name, shape, factory, tmp_path):
    rng = np.random.default_rng(len(name))
    inputs = keras.Input(shape, name="input")
    model = keras.Model(inputs, factory()(inputs))
    randomise(model, rng)
    numpy_model = export_and_load(model, tmp_path)
    batch = rng.normal(0, 2, (3, *shape)).astype(np.float32)
    # forward() takes images in (N, H, W, C); these layer tests feed small float tensors directly
    check_parity(model, numpy_model, batch, tmp_path)


def test_conv_batchnorm_folding(tmp_path):
    rng = np.random.default_rng(7)
    inputs = keras.Input((10, 9, 3), name="input")
    x = L.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = L.BatchNormalization(name="bn_dw")(x)
    x = L.SeparableConv2D(3, 2, name="sep")(x)
    x = L.BatchNormalization(name="bn_sep")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, name="dense")(x)
    x = L.BatchNormalization(name="bn_dense")(x)
    model = keras.Model(inputs, L.Activation("softmax", name="softmax")(x))
    randomise(model, rng)
    numpy_model = export_and_load(model, tmp_path)
    assert not any(type(layer).__name__ == "BatchNormalization" for layer, _ in numpy_model.layers)
    check_parity(model, numpy_model, rng.normal(0, 1, (4, 10, 9, 3)).astype(np.float32), tmp_path)


def test_batchnorm_after_activation_is_not_folded(tmp_path):
    rng = np.random.default_rng(8)
    inputs = keras.Input((6, 6, 3), name="input")
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, L.BatchNormalization(name="bn")(x))
    randomise(model, rng)
    numpy_model = export_and_load(model, tmp_path)
    check_parity(model, numpy_model, rng.normal(0, 1, (2, 6, 6, 3)).astype(np.float32), tmp_path)


@pytest.mark.parametrize(
    "activation",
    [lambda: L.Activation("relu6"), lambda: L.Activation("relu"), lambda: L.ReLU(max_value=6.0), lambda: L.Activation("tanh")],
    ids=["relu6", "relu", "ReLU6-layer", "tanh"],
)
def test_activation_of_a_tensor_another_layer_also_reads(tmp_path, activation):
    """An activation must not overwrite its input: here the residual branch reads it too (NumPy once differed from
    Keras by 8.0 on this graph when ReLU6 ran in place)."""
    rng = np.random.default_rng(10)
    inputs = keras.Input((5, 6, 3), name="input")
    x = L.Rescaling(1 / 16.0, offset=-8.0, name="scale")(inputs)
    y = L.Conv2D(3, 1, activation="relu6", name="conv")(x)  # a fused ReLU6 on the conv's own output
    model = keras.Model(inputs, L.Add(name="add")([x, activation()(x), y]))
    randomise(model, rng)
    numpy_model = export_and_load(model, tmp_path)
    check_parity(model, numpy_model, rng.integers(0, 256, (2, 5, 6, 3)).astype(np.float32), tmp_path)


def test_residual_functional_model(tmp_path):
    rng = np.random.default_rng(9)
    inputs = keras.Input((15, 13, 3), name="input")
    x = L.Rescaling(1 / 255.0, name="scale")(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    shortcut = x
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="res_conv")(x)
    y = L.BatchNormalization(name="res_bn")(y)
    y = L.ReLU(name="res_relu")(y)
    x = L.Add(name="add")([shortcut, y])
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    randomise(model, rng)
    numpy_model = export_and_load(model, tmp_path)
    batch = rng.integers(0, 256, (5, 15, 13, 3)).astype(np.float32)
    check_parity(model, numpy_model, batch, tmp_path)
    _, features = numpy_model.forward(batch, return_features=True)
    assert features.shape == (5, 4, 3, 8)  # the last spatial map (after the pooling), for heatmaps


def test_default_architecture_random_weights(tmp_path):
    from rendernet_train.model import build_model

    rng = np.random.default_rng(10)
    model = build_model(3, widths=(16, 32, 64), dropout=0.2)
    high_pass = model.get_layer("high_pass").get_weights()  # a fixed filter, never trained: keep it
    randomise(model, rng)
    model.get_layer("high_pass").set_weights(high_pass)
    numpy_model = export_and_load(model, tmp_path)
    batch = rng.integers(0, 256, (4, 200, 200, 3)).astype(np.uint8)
    check_parity(model, numpy_model, batch.astype(np.float32), tmp_path)
    np.testing.assert_allclose(numpy_model.forward(batch), numpy_model.forward(batch.astype(np.float32)))


def test_relu_on_the_bits_is_the_float_relu():
    """relu_bits (ReLU and ReLU6 as an integer clip of the float32 bits) equals NumPy's float clip, infinities,
    zeros of both signs and the limit itself included."""
    from rendernet.layers import SIX_BITS, relu_bits

    values = np.random.default_rng(0).normal(0, 5, 10_000).astype(np.float32)
    values[:6] = [np.inf, -np.inf, -0.0, 0.0, 6.0, np.nextafter(np.float32(6), np.float32(7))]
    for limit, expected in ((None, np.maximum(values, 0)), (SIX_BITS, np.clip(values, 0, 6))):
        found = relu_bits(values.copy(), limit)
        assert found.dtype == np.float32 and np.array_equal(found, expected)
