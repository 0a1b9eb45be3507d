"""Read a Keras.js model folder (the archived 2017 browser runtime) into a Keras model.

Keras.js's Python encoder wrote three files:
- `model.json`: Keras 2's own `model.to_json()`: {"class_name": "Sequential", "config": [layer, ...]} (Keras 2.0.x;
  2.1+ wrote {"name", "layers"}), or {"class_name": "Model", "config": {"layers", "input_layers", ...}}, each layer
  {"class_name", "config"} with Keras 2 options (`batch_input_shape` on the first layer, `data_format`, ...);
- `metadata.json`: one entry per weight, [{"weight_name": "conv2d_1/kernel:0", "layer_name": "conv2d_1",
  "shape": [3, 3, 3, 32], "offset": bytes into weights.buf, "length": elements, "type": "float32"}, ...];
- `weights.buf`: the weights, little-endian float32, concatenated.

Keras 3 builds the layers from the Keras 2 config (its legacy deserializer), then every weight is set from the
buffer by layer and weight name, shapes checked. Anything that does not add up is a ConvertError naming the
file and the entry; nothing is guessed.
"""

import json
import math
from pathlib import Path

import keras
import numpy as np
from rendernet.manifest import MAX_MODEL_BYTES

from .errors import ConvertError
from .export import leaf_layers

FILES = ("model.json", "metadata.json", "weights.buf")
MAX_JSON_BYTES = 64 * 1000 * 1000
MODEL_CLASSES = ("Sequential", "Model", "Functional")  # a model, used as the whole or as a layer
CONTAINERS = (*MODEL_CLASSES, "InputLayer")  # the layer classes not in keras.layers by these names


def is_kerasjs(path) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in FILES)


def read_json(path: Path):
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ConvertError(f"{path} is {size / 1e6:,.0f} MB; a model's JSON holds at most {MAX_JSON_BYTES / 1e6:,.0f} MB")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConvertError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise ConvertError(f"{path} is nested too deeply to be a Keras model's JSON") from None


def layer_list(config: dict) -> list:
    """A Keras 2 model config's own layer entries: its "config" is the list (Sequential, Keras 2.0.x) or holds it."""
    inner = config.get("config")
    layers = inner if isinstance(inner, list) else inner.get("layers", []) if isinstance(inner, dict) else None
    if not isinstance(layers, list) or not all(isinstance(entry, dict) for entry in layers):
        raise ConvertError(f"model.json: {config.get('class_name')!r} has no list of layers")
    return layers


def layer_entries(config: dict) -> list:
    """The layer entries of a Keras 2 model config (nested models walked into)."""
    found = []
    for entry in layer_list(config):
        found.append(entry)
        if entry.get("class_name") in MODEL_CLASSES:
            found += layer_entries(entry)
    return found


def keras3_config(config) -> dict:
    """A Keras 2 model config as Keras 3's legacy deserializer reads it: a Sequential's list of layers in an
    object, its first layer's batch_input_shape as an InputLayer; every layer class checked first."""
    if not isinstance(config, dict) or config.get("class_name") not in MODEL_CLASSES:
        raise ConvertError("model.json is not a Keras model config ({'class_name': 'Sequential' or 'Model', ...})")
    for entry in layer_entries(config):
        kind, name = entry.get("class_name"), entry.get("config", {}).get("name", "?")
        if kind == "Lambda":
            raise ConvertError(
                f"model.json: layer {name!r} is a Lambda layer, which holds Python code; "
                "rendernet never runs code from a model file"
            )
        if not isinstance(kind, str) or not (kind in CONTAINERS or hasattr(keras.layers, kind)):
            raise ConvertError(f"model.json: layer {name!r} has class {kind!r}, which Keras does not have")
        if entry.get("config", {}).get("activation") == "hard_sigmoid":
            raise ConvertError(
                f"model.json: layer {name!r} uses Keras 2's hard_sigmoid (clip(0.2 x + 0.5, 0, 1)), which Keras 3 computes "
                "differently; it is not converted"
            )
        if entry.get("config", {}).get("data_format", "channels_last") != "channels_last":
            raise ConvertError(
                f"model.json: layer {name!r} has data_format={entry['config']['data_format']!r}; rendernet runs channels_last"
            )
    inner = config["config"]
    if config["class_name"] != "Sequential":
        return config
    layers = [dict(entry, config=dict(entry.get("config", {}))) for entry in layer_list(config)]
    if layers and "batch_input_shape" in layers[0]["config"]:
        shape = layers[0]["config"].pop("batch_input_shape")
        layers.insert(0, {"class_name": "InputLayer", "config": {"batch_input_shape": shape, "name": "input", "dtype": "float32"}})
    name = inner.get("name", "sequential") if isinstance(inner, dict) else "sequential"
    return {"class_name": "Sequential", "config": {"name": name, "layers": layers}}


def read_metadata(metadata, buffer_bytes: int) -> dict:
    """metadata.json -> {(layer name, weight name): (shape, offset, length)}, every entry checked against the table
    above and against the buffer's size."""
    if not isinstance(metadata, list):
        raise ConvertError("metadata.json must be a list of weight entries")
    weights = {}
    for index, entry in enumerate(metadata):
        where = f"metadata.json[{index}]"
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("weight_name", "layer_name")):
            raise ConvertError(f"{where} needs string weight_name and layer_name")
        shape, offset, length = entry.get("shape"), entry.get("offset"), entry.get("length")
        where = f"metadata.json: {entry['weight_name']}"
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise ConvertError(f"{where} has shape {shape!r}, not a list of sizes")
        if not (isinstance(offset, int) and isinstance(length, int) and offset >= 0 and length == math.prod(shape)):
            raise ConvertError(f"{where}: offset {offset!r} and length {length!r} do not describe {shape} float32 values")
        if entry.get("type", "float32") != "float32":
            raise ConvertError(f"{where} has type {entry.get('type')!r}; Keras.js weights are float32")
        if offset + 4 * length > buffer_bytes:
            raise ConvertError(f"{where} runs past weights.buf: bytes {offset}-{offset + 4 * length} of {buffer_bytes}")
        short = entry["weight_name"].rsplit("/", 1)[-1].split(":", 1)[0]
        weights[entry["layer_name"], short] = (tuple(shape), offset, length)
    return weights


def load_kerasjs(folder) -> keras.Model:
    """The Keras model a Keras.js folder describes, with its weights."""
    folder = Path(folder)
    buffer_path = folder / "weights.buf"
    size = buffer_path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ConvertError(f"{buffer_path} is {size / 1e6:,.0f} MB; a model's weights hold at most {MAX_MODEL_BYTES / 1e6:,.0f} MB")
    stored = read_metadata(read_json(folder / "metadata.json"), size)
    from keras.src.legacy.saving import saving_utils  # Keras 3's reader of Keras 2 configs

    try:
        model = saving_utils.model_from_config(keras3_config(read_json(folder / "model.json")))
    except (ValueError, TypeError, KeyError) as error:
        raise ConvertError(f"model.json cannot be built by Keras: {str(error).splitlines()[0]}") from None
    buffer = buffer_path.read_bytes()
    used = set()
    for layer in leaf_layers(model):
        for variable in layer.weights:
            key = (layer.name, variable.name)
            if "float" not in str(variable.dtype) or (key not in stored and variable.name == "seed_generator_state"):
                continue
            if key not in stored:
                raise ConvertError(f"metadata.json has no weight {variable.name!r} for layer {layer.name!r}")
            shape, offset, length = stored[key]
            if shape != tuple(variable.shape):
                raise ConvertError(
                    f"metadata.json: {layer.name}/{variable.name} has shape {list(shape)}, "
                    f"model.json's layer needs {list(variable.shape)}"
                )
            variable.assign(np.frombuffer(buffer, "<f4", count=length, offset=offset).reshape(shape))
            used.add(key)
    unused = sorted(f"{layer}/{weight}" for layer, weight in set(stored) - used)
    if unused:
        raise ConvertError(f"metadata.json has weights that no layer of model.json takes: {', '.join(unused[:5])}")
    return model
