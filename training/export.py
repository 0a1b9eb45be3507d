"""Export a trained Keras model to every format rendernet ships, in one place.

`export_numpy` writes the rendernet weights format (weights.npz + model.json,
read by app/rendernet/model.py), refusing any layer or option the NumPy forward
pass does not implement: it calls the same `check` the forward pass runs on
load, so the two cannot drift. `export_tflite` writes model.tflite, optionally
quantized to float16 or int8.
"""

import contextlib
import io
import json
from pathlib import Path

import keras
import numpy as np
from rendernet import __version__
from rendernet.errors import ModelError
from rendernet.layers import LAYER_TYPES
from rendernet.manifest import FORMAT_NAME, FORMAT_VERSION, INPUT_NAME, MANIFEST_FILE, WEIGHTS_FILE, sha256_bytes
from rendernet.preprocess import preprocessing_rule
from rendernet.weights import channel_axes, decode, encode

from .errors import TrainingError

CONFIG_KEYS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "activation",
    "use_bias",
    "depth_multiplier",
    "dilation_rate",
    "groups",
    "data_format",
    "pool_size",
    "units",
    "epsilon",
    "axis",
    "scale",
    "offset",
    "max_value",
    "negative_slope",
    "threshold",
    "keepdims",
    "rate",
    "center",
)
QUANTIZATIONS = ("float16", "int8")
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")  # the arrays weights_dtype applies to; the rest stay float32


def round_weights(model: keras.Model, dtype: str) -> None:
    """Replace every kernel by the values `dtype` stores (int8 per channel, or float16), in place, so the
    model that is evaluated and exported to Keras and TFLite is exactly the one weights.npz holds."""
    if dtype == "float32":
        return
    for layer in model.layers:
        for variable in layer.weights:
            if variable.name in KERNELS:
                stored = encode(variable.numpy(), dtype, channel_axes(type(layer).__name__))
                variable.assign(decode({f"w{suffix}": value for suffix, value in stored.items()}, "w", dtype))


def _inbound_names(layer_config: dict) -> list:
    """Names of the layers feeding a functional-model layer, from its serialized inbound node."""
    names = []

    def walk(value):
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
            if history:
                names.append(history[0])
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(layer_config.get("inbound_nodes", []))
    return names


def layer_graph(model: keras.Model) -> list:
    """(layer, input names) in topological order, the input layer mapped to INPUT_NAME."""
    if isinstance(model, keras.Sequential):
        graph, previous = [], INPUT_NAME
        for layer in model.layers:
            graph.append((layer, [previous]))
            previous = layer.name
        return graph
    config = {entry["name"]: entry for entry in model.get_config()["layers"]}
    input_names = {layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)}
    if len(input_names) != 1 or len(model.outputs) != 1:
        raise ModelError("export needs a model with exactly one input and one output")
    return [
        (layer, [INPUT_NAME if name in input_names else name for name in _inbound_names(config[layer.name])])
        for layer in model.layers
        if layer.name not in input_names
    ]


def multiply_adds(layer, input_shape, output_shape) -> int:
    """Multiply-adds per image of one layer (convolutions and dense layers; the rest is negligible)."""
    out_pixels = int(np.prod(output_shape[1:-1])) if len(output_shape) == 4 else 1
    kind = type(layer).__name__
    if kind == "Conv2D":
        kh, kw, cin, cout = layer.kernel.shape
        return out_pixels * kh * kw * cin * cout
    if kind == "DepthwiseConv2D":
        kh, kw, cin, mult = layer.kernel.shape
        return out_pixels * kh * kw * cin * mult
    if kind == "SeparableConv2D":
        kh, kw, cin, mult = layer.depthwise_kernel.shape
        return out_pixels * (kh * kw * cin * mult + cin * mult * layer.pointwise_kernel.shape[-1])
    if kind == "Dense":
        return int(np.prod(input_shape[1:])) * layer.units
    return 0


def numpy_manifest(model: keras.Model, classes, threshold=None, extra=None, weights_dtype="float32"):
    """Build the manifest and the weight arrays; raise ModelError on anything unsupported.

    Kernels are stored as `weights_dtype`; they must already hold values of that dtype (round_weights)."""
    layers, arrays, total_macs = [], {}, 0
    for layer, inputs in layer_graph(model):
        kind = type(layer).__name__
        if kind not in LAYER_TYPES:
            raise ModelError(
                f"cannot export layer {layer.name!r}: type {kind} is not implemented by the NumPy forward pass "
                f"(supported: {', '.join(sorted(LAYER_TYPES))})"
            )
        config = {key: value for key, value in layer.get_config().items() if key in CONFIG_KEYS}
        if isinstance(config.get("activation"), dict):
            raise ModelError(f"cannot export layer {layer.name!r}: custom activation objects are not supported")
        LAYER_TYPES[kind].check(config, layer.name)
        weights = {}
        for variable in layer.weights:
            value = np.asarray(variable.numpy(), dtype=np.float32)
            key, dtype = f"{layer.name}/{variable.name}", weights_dtype if variable.name in KERNELS else "float32"
            stored = {f"{key}{suffix}": array for suffix, array in encode(value, dtype, channel_axes(kind)).items()}
            if not np.array_equal(decode(stored, key, dtype), value):
                raise ModelError(f"cannot export {key} as {dtype}: the model holds other values (call round_weights first)")
            arrays.update(stored)
            weights[variable.name] = {"shape": list(value.shape), "dtype": dtype}
        input_shapes = [list(tensor.shape) for tensor in (layer.input if isinstance(layer.input, list) else [layer.input])]
        output_shape = list(layer.output.shape)
        macs = multiply_adds(layer, input_shapes[0], output_shape)
        total_macs += macs
        layers.append(
            {
                "name": layer.name,
                "type": kind,
                "config": config,
                "inputs": inputs,
                "weights": weights,
                "output_shape": output_shape[1:],
                "macs": macs,
            }
        )
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": model.name,
        "input": {"shape": list(model.input_shape[1:]), "dtype": "uint8", "range": [0, 255]},
        "preprocessing": preprocessing_rule(model.input_shape[1]),
        "classes": list(classes),
        "threshold": threshold,
        "layers": layers,
        "output": layers[-1]["name"],
        "params": int(model.count_params()),
        "macs": int(total_macs),
        "rendernet_version": __version__,
        **(extra or {}),
    }
    return manifest, arrays


def export_numpy(model: keras.Model, folder, classes, threshold=None, extra=None, weights_dtype="float32") -> dict:
    """Write weights.npz and model.json into `folder`; returns the manifest."""
    folder = Path(folder)
    manifest, arrays = numpy_manifest(model, classes, threshold, extra, weights_dtype)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # uncompressed: it is small, and the server's gzip does better
    weights_bytes = buffer.getvalue()
    manifest["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(weights_bytes), "bytes": len(weights_bytes)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WEIGHTS_FILE).write_bytes(weights_bytes)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def export_tflite(model: keras.Model, path, quantize=None, representative_images=None) -> Path:
    """Convert to TFLite: float32, or with `quantize` 'float16' or 'int8' (needs representative images).

    The input is one image, [1, H, W, C]: LiteRT.js refuses a dynamic batch, and the native interpreter still
    takes any batch after `resize_tensor_input`."""
    import tensorflow as tf

    one_image = keras.Input(model.input_shape[1:], batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(one_image, model(one_image, training=False)))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise TrainingError("int8 quantization needs representative images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in representative_images)
    elif quantize is not None:
        raise TrainingError(f"unknown quantization {quantize!r} (choose from {', '.join(QUANTIZATIONS)})")
    path = Path(path)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its whole signature
        path.write_bytes(converter.convert())
    return path
