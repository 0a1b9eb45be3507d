"""`rendernet convert`: any Keras image classifier into the rendernet weights format.

Reads a Keras 3 `.keras` file, an `.h5` whole-model save (Keras 2 or 3), or a Keras.js folder (kerasjs.py), and
writes a model folder that `rendernet classify`, `evaluate`, `build.py --model` and the page run like their own:

1. load the Keras model (safe mode: a file's Python code is never run), fix its input size if it left it open;
2. export its layers with the exporter `rendernet train` uses (the forward pass's own checks: an unsupported layer
   or option is one line, nothing written);
3. feed it what it was trained on: the page gives 0-255 RGB pixels of a square (`--crop`), so an `InputPixels`
   layer first maps them to `--input-range`; the choices go into model.json;
4. end in one probability per class: a final Dense(1, sigmoid) becomes the equal Dense(2, softmax)
   (softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]), and a network ending in logits gets a Softmax;
5. check the result with the loader every reader uses, and against Keras on random images, before writing
   (`pipeline`: the same computation in Keras; `--tflite` writes it as model.tflite and model.keras).
"""

from pathlib import Path

import keras
import numpy as np
from rendernet.manifest import CROPS, INPUT_NAME, MANIFEST_FILE, WEIGHTS_FILE
from rendernet.model import model_files, model_from_bytes
from rendernet.preprocess import preprocessing_rule
from rendernet.weights import channel_axes, decode, encode

from .errors import ConvertError
from .export import QUANTIZATIONS, export_tflite, numpy_manifest, round_weights
from .kerasjs import is_kerasjs, load_kerasjs

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INPUT_RANGES = {  # name: (channel order, scale, offset) taking 0-255 RGB pixels to what the network expects
    "unit": ("RGB", 1 / 255, 0.0),  # pixel / 255
    "signed": ("RGB", 1 / 127.5, -1.0),  # pixel / 127.5 - 1
    "raw": None,  # 0-255 as is
    "imagenet": ("RGB", [1 / (255 * s) for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]),
    "caffe": ("BGR", 1.0, [-103.939, -116.779, -123.68]),  # BGR, ImageNet means subtracted
}
SCALES_ITS_INPUT = ("Rescaling", "Normalization")  # a first layer of these: the network takes 0-255 itself
ENDS_IN_PROBABILITIES = ("softmax", "sigmoid")
PASS_THROUGH = ("Reshape", "Flatten", "Dropout")  # layers between the probabilities and the output
MAX_DIFFERENCE = 1e-3  # the converted model must agree with Keras this closely on random images to be written


def load_keras(source) -> tuple:
    """(Keras model, source format) of a .keras or .h5 file or a Keras.js folder."""
    path = Path(source)
    if is_kerasjs(path):
        return load_kerasjs(path), "kerasjs"
    if path.is_dir():
        raise ConvertError(f"{path} is a folder without Keras.js's model.json, metadata.json and weights.buf")
    if not path.is_file():
        raise ConvertError(f"{path} does not exist")
    kind = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}.get(path.suffix.lower())
    if kind is None:
        raise ConvertError(f"{path}: expected a .keras or .h5 file, or a Keras.js folder")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True), kind
    except Exception as error:  # Keras raises many kinds; any of them means this file is not a model it can build
        raise ConvertError(
            f"{path} cannot be loaded by Keras: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None


def with_input_size(model: keras.Model, size) -> keras.Model:
    """The model with a fixed square RGB input: its own, or `size` when it left the size open."""
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[2] != 3:
        raise ConvertError(f"the model's input is {shape}; rendernet feeds (height, width, 3) RGB images")
    height, width = shape[:2]
    if height is None or width is None:
        if size is None:
            raise ConvertError("the model leaves its input size open: give --input-size")
        clone = keras.models.clone_model(model, input_tensors=keras.Input((size, size, 3)))
        clone.set_weights(model.get_weights())
        return clone
    if height != width:
        raise ConvertError(f"the model's input is {height}x{width}; rendernet feeds square images")
    if size is not None and size != height:
        raise ConvertError(f"--input-size {size}: the model takes {height}x{height} px")
    return model


def pixels_layer(manifest: dict, input_range: str) -> None:
    """Put the InputPixels layer for `input_range` first, feeding what read the input."""
    order, scale, offset = INPUT_RANGES[input_range]
    for layer in manifest["layers"]:
        layer["inputs"] = ["pixels" if name == INPUT_NAME else name for name in layer["inputs"]]
    spec = {"channel_order": order, "scale": scale, "offset": offset}
    manifest["layers"].insert(
        0,
        {
            "name": "pixels",
            "type": "InputPixels",
            "config": spec,
            "inputs": [INPUT_NAME],
            "weights": {},
            "output_shape": manifest["input"]["shape"],
            "macs": 0,
        },
    )


def to_probabilities(manifest: dict, arrays: dict) -> tuple:
    """Make the output one probability per class (see step 4): (what was added, "sigmoid", "softmax" or None; the
    change in words, or None)."""
    layers = {layer["name"]: layer for layer in manifest["layers"]}
    last = layers[manifest["output"]]
    while last["type"] in PASS_THROUGH:
        last = layers[last["inputs"][0]]
    activation = last["config"].get("activation") if last["type"] != "Softmax" else "softmax"
    if activation in ENDS_IN_PROBABILITIES and not (activation == "sigmoid" and last["output_shape"][-1] == 1):
        return None, None
    if activation == "sigmoid":
        if last["type"] != "Dense":
            raise ConvertError(
                f"the model ends in one sigmoid value ({last['name']!r}, {last['type']}); "
                "rendernet converts that from a Dense layer only"
            )
        key, dtype = f"{last['name']}/kernel", last["weights"]["kernel"]["dtype"]
        kernel = decode(arrays, key, dtype)
        for name in [name for name in arrays if name.startswith(key)]:
            del arrays[name]
        kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=1)
        arrays.update({f"{key}{suffix}": value for suffix, value in encode(kernel, dtype, channel_axes("Dense")).items()})
        bias = arrays.get(f"{last['name']}/bias", np.zeros(1, np.float32))
        arrays[f"{last['name']}/bias"] = np.concatenate([np.zeros_like(bias), bias])
        last["weights"] = {"kernel": {"shape": list(kernel.shape), "dtype": dtype}, "bias": {"shape": [2], "dtype": "float32"}}
        last["config"]["activation"], last["output_shape"] = "softmax", [2]
        return "sigmoid", f"the final Dense(1, sigmoid) {last['name']!r} became the equal Dense(2, softmax): [1 - p, p]"
    spec = {"name": "probabilities", "type": "Softmax", "config": {}, "inputs": [manifest["output"]], "weights": {}}
    manifest["layers"].append(dict(spec, output_shape=manifest["layers"][-1]["output_shape"], macs=0))
    manifest["output"] = "probabilities"
    return "softmax", "the model ends in logits: a Softmax layer was added"


def pipeline(model: keras.Model, input_range: str, added) -> keras.Model:
    """The Keras model of what the converted one computes, 0-255 RGB pixels in, probabilities out (`added`: what
    to_probabilities added): the oracle the conversion is checked against, and what --tflite writes."""
    pixels = keras.Input(model.input_shape[1:])
    x = pixels
    if INPUT_RANGES[input_range] is not None:
        order, scale, offset = INPUT_RANGES[input_range]
        x = keras.layers.Rescaling(scale, offset)(keras.ops.flip(x, axis=-1) if order == "BGR" else x)
    y = model(x)
    if added == "sigmoid":
        y = keras.layers.Concatenate()([1.0 - y, y])
    elif added == "softmax":
        y = keras.layers.Softmax()(y)
    return keras.Model(pixels, y, name=f"{model.name}_pipeline")


def convert(
    source, out, classes=None, input_range=None, crop=CROPS[0], input_size=None, weights_dtype="float32", tflite=False
) -> dict:
    """Convert `source` into the model folder `out`; returns a report: the manifest's summary, the changes made
    and the largest difference to Keras on random images. With `tflite`, model.tflite and model.keras of the same
    computation (see pipeline) are written beside it."""
    if crop not in CROPS:
        raise ConvertError(f"--crop must be one of {', '.join(CROPS)}")
    if weights_dtype not in ("float32", *QUANTIZATIONS):
        raise ConvertError(f"--dtype must be float32, {' or '.join(QUANTIZATIONS)}")
    model, kind = load_keras(source)
    model = with_input_size(model, input_size)
    size = model.input_shape[1]
    round_weights(model, weights_dtype)
    outputs = int(np.prod(model.output_shape[1:]))
    classes = list(classes) if classes else [f"class{index}" for index in range(2 if outputs == 1 else outputs)]
    if len(classes) != (2 if outputs == 1 else outputs):
        raise ConvertError(f"--classes names {len(classes)} classes; the model has {outputs} output{'s' * (outputs != 1)}")
    manifest, arrays = numpy_manifest(model, classes, weights_dtype=weights_dtype)
    if input_range is None:
        if manifest["layers"][0]["type"] not in SCALES_ITS_INPUT:
            raise ConvertError(f"give --input-range ({', '.join(INPUT_RANGES)}): the model does not scale its own input")
        input_range = "raw"
    if input_range not in INPUT_RANGES:
        raise ConvertError(f"--input-range must be one of {', '.join(INPUT_RANGES)}")
    if INPUT_RANGES[input_range] is not None:
        pixels_layer(manifest, input_range)
    added, change = to_probabilities(manifest, arrays)
    manifest.update(
        crop=crop,
        preprocessing=f"{preprocessing_rule(size, crop)}; the network gets them as {input_range!r}",
        source={"format": kind, "file": Path(source).name, "input_range": input_range, "keras_version": keras.__version__},
    )

    files = model_files(manifest, arrays)
    converted = model_from_bytes(files[MANIFEST_FILE], files[WEIGHTS_FILE])  # read back as every reader will
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    oracle = pipeline(model, input_range, added)
    difference = float(np.abs(converted.forward(pixels) - oracle.predict(pixels, verbose=0)).max())
    if not difference <= MAX_DIFFERENCE:
        raise ConvertError(f"the converted model differs from Keras by {difference:.2g} on random images; nothing written")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    if tflite:
        oracle.save(out / "model.keras")
        export_tflite(oracle, out / "model.tflite")
    return {
        "model": str(out),
        "source": manifest["source"],
        "classes": classes,
        "input_size": size,
        "crop": crop,
        "layers": len(manifest["layers"]),
        "params": manifest["params"],
        "changed": change,
        "max_difference_to_keras": difference,
    }
