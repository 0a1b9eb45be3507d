"""The `rendernet` command: `train`, `classify`, `evaluate`, `dataset build`, `dataset sample`.

Imports are lazy so `rendernet classify` and `evaluate` need NumPy and Pillow
only, and `--help` answers without loading TensorFlow. This is the one place
where errors become messages and exit codes.
"""

import argparse
import json
import sys
from pathlib import Path

from rendernet import RendernetError, load_model
from rendernet.cache import cache_root
from rendernet.decision import SURE

from .config import TrainConfig

DEFAULT_CACHE = cache_root()


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .train import train

    train(args.data_dir, args.out, TrainConfig.from_args(args))
    return 0


def cmd_classify(args) -> int:
    import csv

    from rendernet.decision import decide
    from rendernet.report import csv_header, csv_row, safe_cell

    from .evaluate import classify_paths, image_paths

    model = load_model(args.model)
    names = image_paths(args.files)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow([safe_cell(cell) for cell in csv_header(model.classes)])
    failed = 0
    for number, result in enumerate(classify_paths(model, args.model, names, args.jobs), start=1):
        failed += "error" in result
        if writer:
            writer.writerow(csv_row(result, model.classes, model.threshold, args.sure))
        else:
            if "error" not in result:
                decision = decide(result["probabilities"], model.classes, model.threshold, args.sure)
                result.update(label=decision.label, confidence=round(decision.confidence, 4), not_sure=decision.not_sure)
            print(json.dumps(result))
        sys.stdout.flush()
        if progress:
            print(f"\rclassified {number}/{len(names)}, {failed} failed", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_folder

    report = evaluate_folder(load_model(args.model), args.data_dir)
    print(json.dumps(report, indent=1))
    return 0


def cmd_dataset_build(args) -> int:
    from .dataset.build import build

    manifest = build(Path(args.out), Path(args.cache), only=args.only, contact_sheet=args.contact_sheet,
                     render_new=not args.cached_renders_only)
    print(json.dumps({"stats": manifest["stats"], "skipped": len(manifest["skipped"]),
                      "build_seconds": manifest["build_seconds"]}, indent=1))
    return 0


def cmd_dataset_sample(args) -> int:
    from .dataset.sample import make_sample

    make_sample(Path(args.dataset), Path(args.out), args.per_class)
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="rendernet", description="Train small image classifiers and run them "
                                   "in the browser with NumPy.")
    commands = main.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on DATA_DIR/<class>/*, export every format to --out")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True, help="model folder to write, e.g. models/mine")
    TrainConfig.add_arguments(train)
    train.set_defaults(run=cmd_train)

    classify = commands.add_parser("classify", help="classify image files; one JSON object (or CSV row) per file")
    classify.add_argument("--model", default="models/default", help="model folder (default models/default)")
    classify.add_argument("--sure", type=float, default=SURE,
                          help=f"confidence below which a result is marked not_sure (default {SURE})")
    classify.add_argument("--csv", action="store_true", help="write CSV (spreadsheet-safe) instead of JSON lines")
    classify.add_argument("--jobs", type=int, default=1, help="processes to classify with (default 1; e.g. the "
                          "number of cores for a large folder)")
    classify.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="show progress on stderr (default: when stderr is a terminal)")
    classify.add_argument("files", nargs="+", help="image files, and folders to walk for images")
    classify.set_defaults(run=cmd_classify)

    evaluate = commands.add_parser("evaluate", help="score a model on a labelled folder DATA_DIR/<class>/*; JSON report")
    evaluate.add_argument("--model", default="models/default", help="model folder (default models/default)")
    evaluate.add_argument("data_dir")
    evaluate.set_defaults(run=cmd_evaluate)

    dataset = commands.add_parser("dataset", help="build the default render-vs-photo dataset")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dataset_commands.add_parser("build", help="fetch packages, render scenes, write real/ and render/")
    build.add_argument("--out", required=True)
    build.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"download/render cache (default {DEFAULT_CACHE})")
    build.add_argument("--only", nargs="+", help="build only these sources (names in sources.json)")
    build.add_argument("--contact-sheet", help="also write a PNG grid of thumbnails here")
    build.add_argument("--cached-renders-only", action="store_true",
                       help="use the POV-Ray/Blender renders already in the cache; render nothing new")
    build.set_defaults(run=cmd_dataset_build)
    sample = dataset_commands.add_parser("sample", help="pick the small committed sample from a built dataset")
    sample.add_argument("dataset")
    sample.add_argument("--out", default="data/sample")
    sample.add_argument("--per-class", type=int, default=70)
    sample.set_defaults(run=cmd_dataset_sample)
    return main


def main(argv=None) -> int:
    """Run one command; the one place where errors become messages and exit codes (1; usage errors 2)."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except RendernetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
