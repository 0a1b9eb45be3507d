"""model.json, the manifest of the rendernet weights format (version 2; version 1 still loads).

Pure Python (no NumPy): `build.py`, which uses the standard library only, checks
a model with `check_manifest` before bundling it, and `model.load_model` runs
the same checks before reading any weight.

Field by field. R: required; "checked" is what check_manifest enforces, each
failure a ModelError naming the field:

| field | type | checked | meaning |
|---|---|---|---|
| format (R) | str | equals "rendernet-numpy" | the format's name |
| format_version (R) | int | 1 or 2 | 2 adds per-array dtypes (below); 1: every array float32 |
| name | str | a string | the Keras model's name |
| input (R) | object | shape: 3 positive ints | [S, S, 3] for images as `preprocess(file, S)` makes them; "dtype", "range" |
| preprocessing | str | a string | the preprocessing rule, in words |
| classes (R) | [str, ...] | distinct non-empty names, one per output value (on load) | class names, in output order |
| threshold | number or null | null, or 0 <= t <= 1 with 2 classes | classes[1] when its probability >= t (decision.py) |
| layers (R) | [layer, ...] | non-empty list | in topological order; the last one (or `output`) gives the probabilities |
| layer.name, layer.type (R) | str | non-empty, names unique | Keras layer name and class (see layers.LAYER_TYPES) |
| layer.config | object | | the Keras config options the forward pass reads (padding, strides, activation, ...) |
| layer.inputs (R) | [str, ...] | each names "input" or an earlier layer | names of the layers feeding it; "input" is the image |
| layer.weights | {weight: spec} | object | v1: spec = shape; v2: spec = {"shape": [...], "dtype": "float32", "float16" or "int8"} |
| layer.output_shape, layer.macs | list, int | | informative: output shape without the batch, multiply-adds per image |
| output | str | names a layer | the layer whose output is the result (default: the last) |
| params | int | an integer >= 0 | parameters |
| macs | int | an integer >= 0 | multiply-adds per image |
| weights (R) | object | "sha256" is 64 hex digits | the weights file: "file", "sha256" (checked before reading it), "bytes" |
| metrics | object | an object | informative: headline test metrics; its presence says metrics.json ships beside model.json |
| credits | [str, ...] | a list of strings | credits for pretrained weights |
| adapted | object | an object | re-fitted to a user's examples (adapt.py): "base_weights_sha256", "corrections", "anchor" |
| rendernet_version | str | a string | the rendernet version that wrote this model.json (train, adapt, reference) |
| reference | object | file "reference.npz", sha256, count >= 1 | reference examples for the adaptation (reference.py) |
| crop | str | "centre" or "top-left" | the square `preprocess` cuts from an image (default "centre"; converted models may differ) |
| source | object | format "keras", "h5" or "kerasjs"; file a string | what `rendernet convert` read; "input_range" |

The page shows the optional fields, so they are checked too: a model that loads is a model the page can show.

metrics.json (written by `rendernet train`, optional) is informative; `check_metrics` checks what the page shows
of it: "test" {"accuracy", "roc_auc": number or null, "count": int, "confusion": rows of ints}, and "held_out"
and "leave_one_source_out", each {source: {"accuracy", "roc_auc": number or null, "count": int}}.

reference.npz (optional; declared by "reference", which also records its "bytes" and "per_class" counts):
"features", the head's input (pooled features) of `count` training images as float16 (count, features), and
"labels", their class indices as uint8 (count,). Checked on
load like weights.npz (sha256 first), then its keys, shapes, dtypes, finite values and labels (reference.py).

weights.npz: for every layer weight, "<layer>/<weight>" holds the array in its
dtype. An int8 array also has "<layer>/<weight>:scale", float32 scales shaped
to broadcast against it (one per output channel); its values are q * scale
(see weights.py). float16 arrays are widened to float32 on load.
"""

import hashlib
import json
import re
import zipfile
from pathlib import Path

from .errors import ModelError

FORMAT_NAME = "rendernet-numpy"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
REFERENCE_FILE = "reference.npz"
MODEL_FILES = (MANIFEST_FILE, WEIGHTS_FILE, REFERENCE_FILE)  # a model's files; the last is optional
MAX_MODEL_BYTES = 256 * 1000 * 1000  # what a model's files (or its weights' arrays) may unpack to
INPUT_NAME = "input"
REQUIRED = ("format", "format_version", "input", "classes", "layers", "weights")
CROPS = ("centre", "top-left")  # the square preprocess cuts: the project's rule, or the Keras.js experiment's page's
SOURCE_FORMATS = ("keras", "h5", "kerasjs")  # what rendernet convert reads


def _fail(where: str, field: str, problem: str):
    raise ModelError(f"{where}: {field} {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest, where: str = MANIFEST_FILE) -> dict:
    """Raise ModelError naming the first field that breaks the table above; return the manifest."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{where}: format must be {FORMAT_NAME!r}, found {found!r}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ModelError(
            f"{where}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this rendernet reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    for key in REQUIRED:
        if key not in manifest:
            _fail(where, f"required key {key!r}", "is missing")

    shape = manifest["input"].get("shape") if isinstance(manifest["input"], dict) else None
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(side) and side > 0 for side in shape)):
        _fail(where, "input.shape", f"must be [height, width, channels], positive integers; found {shape!r}")

    classes = manifest["classes"]
    if not (
        isinstance(classes, list)
        and classes
        and all(isinstance(name, str) and name for name in classes)
        and len(set(classes)) == len(classes)
    ):
        _fail(where, "classes", f"must be a non-empty list of distinct non-empty names, found {classes!r}")

    threshold = manifest.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            _fail(where, "threshold", f"must be null or a number from 0 to 1, found {threshold!r}")
        if len(classes) != 2:
            _fail(where, "threshold", f"applies to 2 classes only; the model has {len(classes)}")

    layers = manifest["layers"]
    if not isinstance(layers, list) or not layers:
        _fail(where, "layers", "must be a non-empty list")
    seen = {INPUT_NAME}
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            _fail(where, f"layers[{index}]", "must be an object")
        for key in ("name", "type"):
            if not isinstance(layer.get(key), str) or not layer[key]:
                _fail(where, f"layers[{index}].{key}", "must be a non-empty string")
        inputs = layer.get("inputs")
        if not (isinstance(inputs, list) and inputs and all(name in seen for name in inputs)):
            _fail(where, f"layers[{index}].inputs", f"must name 'input' or earlier layers, found {inputs!r}")
        if layer["name"] in seen:
            _fail(where, f"layers[{index}].name", f"{layer['name']!r} is used twice")
        if not isinstance(layer.get("config", {}), dict) or not isinstance(layer.get("weights", {}), dict):
            _fail(where, f"layers[{index}]", "config and weights must be objects")
        seen.add(layer["name"])
    if "output" in manifest and manifest["output"] not in seen - {INPUT_NAME}:
        _fail(where, "output", f"names no layer: {manifest['output']!r}")

    weights = manifest["weights"]
    if not isinstance(weights, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(weights.get("sha256"))):
        _fail(where, "weights.sha256", "must be 64 lowercase hex digits")
    for key, (problem, valid) in OPTIONAL_FIELDS.items():
        if key in manifest and not valid(manifest[key]):
            _fail(where, key, f"must be {problem}, found {manifest[key]!r}")
    return manifest


def _is_count(value) -> bool:
    return _is_int(value) and value >= 0


def _is_score(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


OPTIONAL_FIELDS = {  # key: (what it must be, check)
    "name": ("a string", lambda value: isinstance(value, str)),
    "preprocessing": ("a string", lambda value: isinstance(value, str)),
    "params": ("an integer >= 0", _is_count),
    "macs": ("an integer >= 0", _is_count),
    "metrics": ("an object", lambda value: isinstance(value, dict)),
    "credits": ("a list of strings", lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value)),
    "adapted": ("an object", lambda value: isinstance(value, dict)),
    "rendernet_version": ("a string", lambda value: isinstance(value, str)),
    "crop": (" or ".join(map(repr, CROPS)), lambda value: value in CROPS),
    "source": (
        f"{{'format': one of {', '.join(SOURCE_FORMATS)}, 'file': a string}}",
        lambda value: isinstance(value, dict) and value.get("format") in SOURCE_FORMATS and isinstance(value.get("file"), str),
    ),
    "reference": (
        f'{{"file": "{REFERENCE_FILE}", "sha256": 64 hex digits, "count": an integer >= 1}}',
        lambda value: (
            isinstance(value, dict)
            and value.get("file") == REFERENCE_FILE
            and re.fullmatch(r"[0-9a-f]{64}", str(value.get("sha256"))) is not None
            and _is_count(value.get("count"))
            and value["count"] >= 1
        ),
    ),
}


def check_metrics(metrics, where: str = "metrics.json") -> dict:
    """Raise ModelError naming the first field of metrics.json the page could not show (see above); return it."""
    if not isinstance(metrics, dict):
        raise ModelError(f"{where} must be an object, found {type(metrics).__name__}")
    scores = [("test", metrics.get("test", {}))]
    for group in ("held_out", "leave_one_source_out"):
        sources = metrics.get(group, {})
        if not isinstance(sources, dict):
            _fail(where, group, f"must be an object of sources, found {sources!r}")
        scores += [(f"{group}.{source}", value) for source, value in sources.items()]
    for field, value in scores:
        if not isinstance(value, dict):
            _fail(where, field, f"must be an object, found {value!r}")
        for key in ("accuracy", "roc_auc"):
            if not _is_score(value.get(key)):
                _fail(where, f"{field}.{key}", f"must be a number or null, found {value[key]!r}")
        if "count" in value and not _is_count(value["count"]):
            _fail(where, f"{field}.count", f"must be an integer >= 0, found {value['count']!r}")
    confusion = metrics.get("test", {}).get("confusion", [])
    if not (isinstance(confusion, list) and all(isinstance(row, list) and all(map(_is_count, row)) for row in confusion)):
        _fail(where, "test.confusion", f"must be rows of integers, found {confusion!r}")
    return metrics


def manifest_bytes(manifest: dict) -> bytes:
    """model.json's bytes as every writer (train, convert, adapt, reference) writes them."""
    return (json.dumps(manifest, indent=1) + "\n").encode()


def sha256_bytes(data: bytes) -> str:
    """The digest model.json records for weights.npz (`weights.sha256`)."""
    return hashlib.sha256(data).hexdigest()


def check_weights(manifest: dict, weights_bytes: bytes, where: str = WEIGHTS_FILE, field: str = "weights") -> None:
    """The one integrity check of a model's data file (weights.npz; reference.npz with field="reference"): its
    sha256 must be the manifest's."""
    expected, found = manifest[field]["sha256"], sha256_bytes(weights_bytes)
    if found != expected:
        raise ModelError(
            f"{where} does not match model.json: sha256 expected {expected}, found {found} "
            f"({len(weights_bytes)} bytes); the file is altered, truncated or from another model"
        )


def read_manifest(manifest_bytes: bytes, where: str = MANIFEST_FILE) -> dict:
    """Parse model.json's bytes and check them against the table."""
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"{where} is not valid JSON: {error}") from None
    except RecursionError:
        raise ModelError(f"{where} is nested too deeply to be a model's manifest") from None
    return check_manifest(manifest, where)


def unpacked_size_check(archive: zipfile.ZipFile, where: str) -> None:
    """ModelError when a zip's entries would unpack to more than MAX_MODEL_BYTES (a small file that inflates to
    gigabytes), before anything is unpacked."""
    total = sum(entry.file_size for entry in archive.infolist())
    if total > MAX_MODEL_BYTES:
        raise ModelError(f"{where} unpacks to {total / 1e6:,.0f} MB; a model's files hold at most {MAX_MODEL_BYTES / 1e6:,.0f} MB")


def default_model() -> str:
    """The shipped model: inside the installed package (package data), or the checkout's models/default."""
    here = Path(__file__).resolve().parent
    for folder in (here / "default_model", here.parents[1] / "models" / "default"):
        if (folder / MANIFEST_FILE).is_file():
            return str(folder)
    return "models/default"  # not found: load_model names it


def read_model_files(path, names=MODEL_FILES) -> dict:
    """The named files of a model: a folder, or a .zip that holds them at its top or in one folder (the page's
    "Download the adapted model"). {name: bytes} for those present; ModelError when it cannot be read."""
    path = Path(path)
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                found = [
                    entry for entry in archive.namelist() if Path(entry).name in MODEL_FILES + names and len(Path(entry).parts) <= 2
                ]
                names_found = [Path(entry).name for entry in found]
                twice = sorted({name for name in names_found if names_found.count(name) > 1})
                if twice:
                    raise ModelError(f"{path} holds {', '.join(twice)} more than once: which one is the model is unclear")
                if len({Path(entry).parent for entry in found}) > 1:
                    raise ModelError(f"{path} holds a model's files in different folders: {', '.join(sorted(found))}")
                unpacked_size_check(archive, str(path))
                return {Path(entry).name: archive.read(entry) for entry in found if Path(entry).name in names}
        except (zipfile.BadZipFile, OSError) as error:
            raise ModelError(f"{path} is neither a model folder nor a .zip of one: {error}") from None
    files = {}
    for name in names:
        try:
            files[name] = (path / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ModelError(f"cannot read {path / name}: {error.strerror or error}") from None
    return files
