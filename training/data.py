"""Find, preprocess, cache and stream a folder of labelled images.

DATA_DIR has one sub-folder per class. Every file is read once, preprocessed
with rendernet.preprocess (the function the browser runs too) and cached as raw
size x size x 3 bytes (the model's input size) under the cache folder, keyed by the sha256 of the file's
content, so a second run decodes nothing. With random crops on, training images
are also cached as a larger centre square (CROP_SOURCE_SIZE, same rule) to cut
them from. Unreadable files are skipped and listed. Training then streams the cached
files with tf.data, so a folder of any size never has to fit in memory.

Splits: a dataset built by `rendernet dataset build` carries a manifest.json
with each file's split and source; any other folder is split by a hash of each
file's path (70% train, 15% validation, 15% test), so the split is deterministic.
"""

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rendernet.cache import cache_root
from rendernet.errors import ImageError
from rendernet.evaluate import class_files
from rendernet.preprocess import INPUT_SIZE, RESIZE_FILTER, RULE_VERSION, load_image, preprocess

from .errors import TrainingError

SPLIT_BOUNDS = (("train", 0.70), ("validation", 0.85), ("test", 1.0))
CROP_SOURCE_SIZE = 320  # random crops of 200..320 px from this square are scaled to 200 (bilinear, as preprocess does)
DEFAULT_CACHE = cache_root() / "preprocessed"


@dataclass
class Example:
    path: Path
    label: int
    split: str
    source: str
    family: str = "other"  # the dataset manifest's family: rooms, exteriors, objects, other
    cache_file: Path = None
    crop_source_file: Path = None


@dataclass
class Dataset:
    classes: list
    examples: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)

    def split(self, name: str) -> list:
        return [example for example in self.examples if example.split == name]


def hash_split(key: str) -> str:
    """The one split rule: a key's sha256 picks train, validation or test (70/15/15), the same on every run.

    The dataset builder keys by source picture (so crops and re-renders of one picture share a split);
    for folders without a manifest, the key is the file's path under DATA_DIR."""
    fraction = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
    return next(name for name, upper in SPLIT_BOUNDS if fraction < upper)


def scan(data_dir) -> Dataset:
    """List the class folders and files, with each file's split and source."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir} is not a folder")
    classes = sorted(path.name for path in data_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    if len(classes) < 2:
        raise TrainingError(f"{data_dir} needs at least 2 class sub-folders, found {classes}")
    manifest_path = data_dir / "manifest.json"
    known = {}
    if manifest_path.exists():
        known = {entry["path"]: entry for entry in json.loads(manifest_path.read_text())["files"]}
    dataset = Dataset(classes)
    for label, name in enumerate(classes):
        for path in class_files(data_dir / name, dataset.skipped):
            relative = path.relative_to(data_dir).as_posix()
            entry = known.get(relative, {})
            dataset.examples.append(
                Example(
                    path, label, entry.get("split") or hash_split(relative), entry.get("source", name), entry.get("family", "other")
                )
            )
    return dataset


def _cache_one(job):
    """Preprocess one file into the cache (runs in a worker process); returns (path, cache files, error)."""
    path, cache_dir, size, with_crop_source = job
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return path, None, f"cannot read: {error.strerror}"
    digest = hashlib.sha256(data).hexdigest()
    targets = {"input": Path(cache_dir) / f"{digest}.{size}.v{RULE_VERSION}.u8"}
    if with_crop_source:
        targets["crop_source"] = Path(cache_dir) / f"{digest}.{CROP_SOURCE_SIZE}.v{RULE_VERSION}.u8"
    sizes = {"input": size, "crop_source": CROP_SOURCE_SIZE}
    try:
        for kind, target in targets.items():
            if target.exists():
                continue
            pixels = preprocess(load_image(data, size=sizes[kind]), sizes[kind])
            temporary = target.with_suffix(f".tmp{os.getpid()}")
            temporary.write_bytes(pixels.tobytes())
            temporary.replace(target)
    except ImageError as error:
        return path, None, str(error)
    except Exception as error:  # one odd file must not end the run; it is reported as skipped
        return path, None, f"unexpected error: {type(error).__name__}: {error}"
    return path, targets, None


def cache_images(dataset: Dataset, cache_dir, size: int, workers=None, progress=True, crop_sources=False) -> None:
    """Preprocess every example at the model's input `size` into the cache (and, with crop_sources, the
    training images' larger squares too); drop and record the ones that fail."""
    import keras

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    bar = keras.utils.Progbar(len(dataset.examples), unit_name="image") if progress else None
    results = {}
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        jobs = [
            (str(example.path), str(cache_dir), size, crop_sources and example.split == "train") for example in dataset.examples
        ]
        for done, (path, targets, error) in enumerate(pool.map(_cache_one, jobs, chunksize=8), start=1):
            results[path] = (targets, error)
            if bar:
                bar.update(done)
    kept = []
    for example in dataset.examples:
        targets, error = results[str(example.path)]
        if error:
            dataset.skipped.append((str(example.path), error))
        else:
            example.cache_file = targets["input"]
            example.crop_source_file = targets.get("crop_source")
            kept.append(example)
    dataset.examples = kept


def read_square(path: Path) -> np.ndarray:
    """One cached uint8 square (side x side x 3; the side follows from the file's length)."""
    data = np.frombuffer(path.read_bytes(), np.uint8)
    side = round((data.size // 3) ** 0.5)
    return data.reshape(side, side, 3)


def load_pixels(examples, size=INPUT_SIZE) -> np.ndarray:
    """Cached pixels of some examples as one uint8 array (N, size, size, 3)."""
    return (
        np.stack([read_square(example.cache_file) for example in examples]) if examples else np.zeros((0, size, size, 3), np.uint8)
    )


def random_resized_crop(square: np.ndarray, side, left, top, size: int) -> np.ndarray:
    """Scale the box (left, top, side x side) of a cached square to `size` with preprocess's filter."""
    box = (int(left), int(top), int(left) + int(side), int(top) + int(side))
    image = Image.fromarray(square).resize((int(size), int(size)), RESIZE_FILTER, box=box)
    return np.asarray(image, dtype=np.uint8)


def tf_dataset(
    examples, num_classes: int, batch_size: int, training: bool, seed: int, replicas: int = 1, random_crops: bool = False
):
    """Stream cached examples as (float32 pixels 0..255, one-hot label) batches.

    Training batches are shuffled and augmented with flips, 90-degree rotations
    and random JPEG re-compression (so compression traces cannot tell the
    classes apart); with random_crops, first with random resized crops (a
    200..320 px square of the larger cached square, scaled to 200 px with the
    bilinear filter preprocess uses, so the model meets several scale factors).
    """
    import tensorflow as tf

    random_crops = random_crops and training
    paths = [str(example.crop_source_file if random_crops else example.cache_file) for example in examples]
    stored_size = CROP_SOURCE_SIZE if random_crops else INPUT_SIZE
    labels = [example.label for example in examples]
    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    if training:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, label):
        pixels = tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), (stored_size, stored_size, 3))
        return pixels, tf.one_hot(label, num_classes)

    def crop(pixels, label):
        side = tf.random.uniform((), INPUT_SIZE, CROP_SOURCE_SIZE + 1, dtype=tf.int32)
        left = tf.random.uniform((), 0, CROP_SOURCE_SIZE - side + 1, dtype=tf.int32)
        top = tf.random.uniform((), 0, CROP_SOURCE_SIZE - side + 1, dtype=tf.int32)
        pixels = tf.numpy_function(random_resized_crop, [pixels, side, left, top, INPUT_SIZE], tf.uint8, stateful=True)
        return tf.ensure_shape(pixels, (INPUT_SIZE, INPUT_SIZE, 3)), label

    def augment(pixels, label):
        pixels = tf.image.random_flip_left_right(pixels)
        pixels = tf.image.rot90(pixels, tf.random.uniform((), 0, 4, dtype=tf.int32))
        recompress = tf.random.uniform(()) < 0.5
        pixels = tf.cond(recompress, lambda: tf.image.random_jpeg_quality(pixels, 70, 98), lambda: pixels)
        return pixels, label

    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if random_crops:
        data = data.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.map(lambda pixels, label: (tf.cast(pixels, tf.float32), label))
    # Training drops a ragged last batch (shuffling varies it each epoch). Under MirroredStrategy every batch
    # must split evenly over the replicas, so the batch size becomes a multiple of their number, and no
    # ragged batch is left.
    if replicas > 1:
        batch_size = max(replicas, min(batch_size, len(examples)) // replicas * replicas)
    drop_remainder = (training or replicas > 1) and len(examples) >= batch_size
    return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
