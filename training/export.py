"""Export a trained Keras model to every format rendernet ships, in one place.

`export_numpy` writes the rendernet weights format (weights.npz + model.json,
read by app/rendernet/model.py), refusing any layer or option the NumPy forward
pass does not implement: it calls the same `check` the forward pass runs on
load, so the two cannot drift. `export_tflite` writes model.tflite, optionally
quantized to float16 or int8.
"""

import contextlib
import io
from collections import namedtuple
from pathlib import Path

import keras
import numpy as np
from rendernet import __version__
from rendernet.errors import ModelError
from rendernet.layers import LAYER_TYPES
from rendernet.manifest import FORMAT_NAME, FORMAT_VERSION, INPUT_NAME
from rendernet.model import model_files
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
    "cropping",
    "target_shape",
    "alpha",
    "invert",
    "mean",
    "variance",
)
QUANTIZATIONS = ("float16", "int8")
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")  # the arrays weights_dtype applies to; the rest stay float32


def leaf_layers(model: keras.Model):
    """Every layer that is not itself a model, nested models walked into."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def round_weights(model: keras.Model, dtype: str) -> None:
    """Replace every kernel by the values `dtype` stores (int8 per channel, or float16), in place, so the
    model that is evaluated and exported to Keras and TFLite is exactly the one weights.npz holds."""
    if dtype == "float32":
        return
    for layer in leaf_layers(model):
        for variable in layer.weights:
            if variable.name in KERNELS:
                stored = encode(variable.numpy(), dtype, channel_axes(type(layer).__name__))
                variable.assign(decode({f"w{suffix}": value for suffix, value in stored.items()}, "w", dtype))


Node = namedtuple("Node", ("name", "kind", "config", "variables", "inputs", "output_shape"))  # one layer of the export
CONSTANT_OPS = {  # a Keras op on a tensor and a number, as Rescaling's (scale, offset); the number is c
    ("Add", 1): lambda c: (1.0, c),
    ("Add", 0): lambda c: (1.0, c),
    ("Subtract", 1): lambda c: (1.0, -c),
    ("Subtract", 0): lambda c: (-1.0, c),
    ("Multiply", 1): lambda c: (c, 0.0),
    ("Multiply", 0): lambda c: (c, 0.0),
    ("Divide", 1): lambda c: (1.0 / c, 0.0),
    ("TrueDivide", 1): lambda c: (1.0 / c, 0.0),
}
TENSOR_OPS = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")  # a Keras op on two tensors, as the merge layer


def _call_arguments(entry: dict) -> list:
    """The arguments of a functional model's layer call, in order: layer names (str) for tensors, numbers as they are."""
    nodes = entry.get("inbound_nodes", [])
    if len(nodes) != 1:
        raise ModelError(
            f"cannot export layer {entry['name']!r}: it is called {len(nodes)} times (shared layers are not supported)"
        )
    found = []

    def walk(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            layer_name, _, tensor_index = value["config"]["keras_history"]
            if tensor_index != 0:
                raise ModelError(f"cannot export layer {entry['name']!r}: it reads output {tensor_index} of {layer_name!r}")
            found.append(layer_name)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append(float(value))

    walk(nodes[0].get("args", []) if isinstance(nodes[0], dict) else nodes[0])
    return found


def _layer_node(layer, name: str, inputs: list) -> Node:
    kind = type(layer).__name__
    config = {key: value for key, value in layer.get_config().items() if key in CONFIG_KEYS}
    if isinstance(config.get("activation"), dict):
        raise ModelError(f"cannot export layer {layer.name!r}: custom activation objects are not supported")
    variables = {
        variable.name: np.asarray(variable.numpy(), dtype=np.float32)
        for variable in layer.weights
        if "float" in str(variable.dtype) and variable.name != "count"  # Normalization's count is not used
    }
    return Node(name, kind, config, variables, inputs, list(layer.output.shape[1:]))


def _op_node(operation, name: str, arguments: list) -> Node:
    """A Keras op in a functional graph (x + 3.0, x * y, ...) as the layer that computes the same."""
    kind = type(operation).__name__
    tensors = [argument for argument in arguments if isinstance(argument, str)]
    numbers = [(index, argument) for index, argument in enumerate(arguments) if not isinstance(argument, str)]
    shape = list(operation.output.shape[1:])
    if len(tensors) == 1 and len(numbers) == 1 and (kind, numbers[0][0]) in CONSTANT_OPS:
        scale, offset = CONSTANT_OPS[kind, numbers[0][0]](numbers[0][1])
        return Node(name, "Rescaling", {"scale": scale, "offset": offset}, {}, tensors, shape)
    if len(tensors) == 2 and not numbers and kind in TENSOR_OPS:
        return Node(name, kind, {}, {}, tensors, shape)
    raise ModelError(
        f"cannot export {name!r}: the Keras operation {kind} on {len(tensors)} tensor(s) and {len(numbers)} number(s) "
        "is not implemented by the NumPy forward pass (use a layer)"
    )


def graph_nodes(model: keras.Model, prefix: str = "", feeds: str = INPUT_NAME) -> tuple:
    """The model as layers the forward pass runs, in topological order: (nodes, name of the output node).

    Each Keras layer becomes one Node and each op in a functional graph (x + 3.0) the layer computing it; a nested
    model (one used as a layer) is replaced by its own nodes, named "<model>/<layer>", its input fed by `feeds`."""
    nodes, names = [], {}

    def add(item, name: str, inputs: list) -> str:
        if isinstance(item, keras.Model):
            if len(inputs) != 1:
                raise ModelError(f"cannot export the nested model {name!r}: it takes {len(inputs)} inputs")
            inner, output = graph_nodes(item, f"{prefix}{name}/", inputs[0])
            nodes.extend(inner)
            return output
        nodes.append(_layer_node(item, prefix + name, inputs))
        return prefix + name

    if isinstance(model, keras.Sequential):
        previous = feeds
        for layer in model.layers:
            previous = add(layer, layer.name, [previous])
        return nodes, previous
    config = model.get_config()
    operations = {operation.name: operation for operation in model.operations}
    inputs, outputs = (
        [ends] if ends and not isinstance(ends[0], list) else ends for ends in (config["input_layers"], config["output_layers"])
    )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError("export needs a model with exactly one input and one output")
    for entry in config["layers"]:
        name = entry["name"]
        if entry["class_name"] == "InputLayer":
            names[name] = feeds
            continue
        arguments = [names[argument] if isinstance(argument, str) else argument for argument in _call_arguments(entry)]
        operation = operations[name]
        if isinstance(operation, keras.layers.Layer):
            names[name] = add(operation, name, arguments)
        else:
            nodes.append(_op_node(operation, prefix + name, arguments))
            names[name] = prefix + name
    return nodes, names[outputs[0][0]]


def multiply_adds(node: Node) -> int:
    """Multiply-adds per image of one layer (convolutions and dense layers; the rest is negligible)."""
    out_pixels = int(np.prod(node.output_shape[:-1]))
    return out_pixels * sum(int(node.variables[key].size) for key in KERNELS if key in node.variables)


def numpy_manifest(model: keras.Model, classes, threshold=None, extra=None, weights_dtype="float32"):
    """Build the manifest and the weight arrays; raise ModelError on anything unsupported.

    Kernels are stored as `weights_dtype`; they must already hold values of that dtype (round_weights)."""
    nodes, output = graph_nodes(model)
    layers, arrays = [], {}
    for node in nodes:
        if node.kind not in LAYER_TYPES:
            raise ModelError(
                f"cannot export layer {node.name!r}: type {node.kind} is not implemented by the NumPy forward pass "
                f"(supported: {', '.join(sorted(LAYER_TYPES))})"
            )
        LAYER_TYPES[node.kind].check(node.config, node.name)
        weights = {}
        for name, value in node.variables.items():
            key, dtype = f"{node.name}/{name}", weights_dtype if name in KERNELS else "float32"
            stored = {f"{key}{suffix}": array for suffix, array in encode(value, dtype, channel_axes(node.kind)).items()}
            if not np.array_equal(decode(stored, key, dtype), value):
                raise ModelError(f"cannot export {key} as {dtype}: the model holds other values (call round_weights first)")
            arrays.update(stored)
            weights[name] = {"shape": list(value.shape), "dtype": dtype}
        layers.append(
            {
                "name": node.name,
                "type": node.kind,
                "config": node.config,
                "inputs": node.inputs,
                "weights": weights,
                "output_shape": node.output_shape,
                "macs": multiply_adds(node),
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
        "output": output,
        "params": int(model.count_params()),
        "macs": sum(layer["macs"] for layer in layers),
        "rendernet_version": __version__,
        **(extra or {}),
    }
    return manifest, arrays


def write_numpy(folder, manifest: dict, arrays: dict) -> dict:
    """Write weights.npz and model.json (its "weights" entry filled in) into `folder`; returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in model_files(manifest, arrays).items():
        (folder / name).write_bytes(data)
    return manifest


def export_numpy(model: keras.Model, folder, classes, threshold=None, extra=None, weights_dtype="float32") -> dict:
    """Write weights.npz and model.json into `folder`; returns the manifest."""
    return write_numpy(folder, *numpy_manifest(model, classes, threshold, extra, weights_dtype))


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
