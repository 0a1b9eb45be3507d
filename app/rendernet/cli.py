"""The core's commands, `rendernet classify`, `evaluate` and `adapt`: NumPy and Pillow only, no TensorFlow.

`python -m rendernet.cli` runs them alone; the full `rendernet` command
(rendernet_train.cli) adds `train` and `dataset`. `run` is the one place where
errors become messages and exit codes (1; usage errors 2).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from .adapt import ANCHOR, REFERENCE_ANCHOR
from .decision import SURE
from .errors import DataError, RendernetError
from .manifest import default_model
from .model import load_model, read_model_files
from .version import __version__


def cmd_classify(args) -> int:
    import csv
    from collections import Counter

    from .batch import IMAGE_SUFFIXES, classify_paths, image_paths
    from .decision import decide
    from .report import csv_header, csv_row, model_description, safe_cell

    model = load_model(args.model)
    answered_by = model_description(model.manifest.get("adapted", {}).get("corrections"))
    skipped = Counter()
    names = image_paths(args.files, skipped)
    if skipped:
        print(
            f"note: left out of the folder walk: {', '.join(f'{count} ({reason})' for reason, count in sorted(skipped.items()))}"
            "; name a file to try it anyway",
            file=sys.stderr,
        )
    if not names:
        raise DataError(
            f"no image files to classify in {', '.join(args.files)} (a folder is walked for {', '.join(IMAGE_SUFFIXES)})"
        )
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow([safe_cell(cell) for cell in csv_header(model.classes)])
    if args.scheduler:
        from .cluster import classify_on_cluster

        results = classify_on_cluster(args.scheduler, args.model, names)
    else:
        results = classify_paths(model, args.model, names, args.jobs)
    failed = 0
    for number, result in enumerate(results, start=1):
        failed += "error" in result
        if "error" not in result:
            result["model"] = answered_by
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


def number(text: str) -> float:
    """The float `text` spells, nan when it spells none (the argparse types below then refuse it)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    if not 0.0 <= number(text) <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return number(text)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    if not 0.0 < number(text) < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return number(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cmd_adapt(args) -> int:
    from .adapt import NEWTON_STEPS, adapt_head, adaptable_head, adapted_model_files, correction_counts, merge_corrections

    base, out = Path(args.model), Path(args.out)
    if out.exists() and out.resolve() == base.resolve():
        raise DataError("--out must not be the base model's folder: the adapted model is written beside it")
    model = load_model(base)
    dense = adaptable_head(model)
    lists, skipped = [], []
    for examples in map(Path, args.examples):
        lists.append(example_entries(model, examples, skipped))
    entries, conflicts = merge_corrections(*lists)
    for kept, dropped in conflicts:
        print(
            f"note: {dropped.get('file')!s} is labelled {dropped['label']} and {kept['label']} (as "
            f"{kept.get('file')!s}); the newest, {kept['label']}, is kept",
            file=sys.stderr,
        )
    features, labels = entries_arrays(model, entries)
    fit = adapt_head(dense.kernel_t, dense.bias, features, labels, args.anchor, model.reference, model.threshold)
    if not fit.converged:
        print(
            f"warning: the fit was still improving after {NEWTON_STEPS} Newton steps; the head written is the best found",
            file=sys.stderr,
        )
    corrections = correction_counts(labels, model.classes)
    adapted = adapted_model_files(model, read_model_files(base), *fit, corrections)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in adapted.items():
        (out / name).write_bytes(data)
    load_model(out)  # what was written loads with the same checks as any model
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        json.dumps(
            {
                "out": str(out),
                "corrections": corrections,
                "skipped": len(skipped),
                "merged_from": len(lists),
                "conflicts": len(conflicts),
                "reference_examples": 0 if model.reference is None else len(model.reference[1]),
                "converged": fit.converged,
            }
        )
    )
    return 0


def example_entries(model, examples, skipped: list) -> list:
    """Corrections entries from a corrections file (the page's download) or a folder EXAMPLES/<class>/<images>."""
    from .adapt import encode_features, parse_document, read_corrections
    from .batch import printable

    if examples.is_file():
        try:
            document = parse_document(examples.read_bytes())
            read_corrections(document, model)  # checks every entry
        except RendernetError as error:
            raise DataError(f"{examples}: {error}") from None
        return document["corrections"]
    features, labels, paths, found_skipped = example_features(model, examples)
    skipped += found_skipped
    return [
        {"features": encode_features(vector), "label": model.classes[label], "file": printable(path), "time": 0}
        for vector, label, path in zip(features, labels, paths, strict=True)
    ]


def entries_arrays(model, entries) -> tuple:
    """Merged entries -> (features (N, F), class indices (N,)), through the one reader of corrections."""
    from .adapt import corrections_document, read_corrections

    return read_corrections(corrections_document(model.manifest["weights"]["sha256"], model.classes, entries), model)


def example_features(model, examples) -> tuple:
    """EXAMPLES/<class>/<images> -> (pooled features (N, F), class indices (N,), paths, skipped [(path, reason)])."""
    import numpy as np

    from .batch import printable
    from .errors import ImageError
    from .evaluate import class_files, class_folders
    from .preprocess import preprocess

    features, labels, paths, skipped = [], [], [], []
    for folder in class_folders(model, examples):
        for path in class_files(folder, skipped):
            try:
                features.append(model.explain(preprocess(path, model.input_size, model.crop)).pooled)
            except ImageError as error:
                skipped.append((printable(path), str(error)))
                continue
            labels.append(model.classes.index(folder.name))
            paths.append(path)
    if not labels:
        raise DataError(f"no readable images in the class folders of {examples}")
    return np.array(features), np.array(labels), paths, skipped


def cmd_reference(args) -> int:
    """Give a model the reference set of a labelled folder (its manifest.json names each file's source, as the
    dataset builder writes it; else the class folder is the source)."""
    from .reference import write_reference

    model, data_dir = load_model(args.model), Path(args.data_dir)
    if model.head() is None:
        raise DataError(f"{args.model}: its head does not read pooled features, so it has no use for a reference set")
    manifest_path = data_dir / "manifest.json"
    sources = {}
    if manifest_path.is_file():
        sources = {entry["path"]: entry.get("source") for entry in json.loads(manifest_path.read_text())["files"]}
    features, labels, paths, skipped = example_features(model, data_dir)
    origins = [sources.get(path.relative_to(data_dir).as_posix()) or path.relative_to(data_dir).parts[0] for path in paths]
    manifest = write_reference(args.model, model.manifest, features, labels, origins)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(json.dumps({"model": args.model, "reference": manifest["reference"], "skipped": len(skipped)}))
    return 0


def add_commands(commands) -> None:
    """Add `classify`, `adapt` and `evaluate` to an argparse subparsers object."""
    classify = commands.add_parser("classify", help="classify image files; one JSON object (or CSV row) per file")
    classify.add_argument(
        "--model",
        default=default_model(),
        help="model folder, or a .zip of one such as the page's adapted model (default: the shipped one)",
    )
    classify.add_argument(
        "--sure", type=fraction, default=SURE, help=f"confidence below which a result is marked not_sure (default {SURE})"
    )
    classify.add_argument("--csv", action="store_true", help="write CSV (spreadsheet-safe) instead of JSON lines")
    classify.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="processes to classify with (default 1; e.g. the number of cores for a large folder)",
    )
    classify.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        help="classify on the workers of this Dask cluster (needs rendernet[cluster]; the files must "
        "be at the same path on every worker); --jobs is then the cluster's business",
    )
    classify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    classify.add_argument("files", nargs="+", help="image files, and folders to walk for images")
    classify.set_defaults(run=cmd_classify)

    adapt = commands.add_parser(
        "adapt",
        help="re-fit a model's head to your own labelled images (EXAMPLES/<class>/*), "
        "anchored to the base model; writes a model folder",
    )
    adapt.add_argument("--model", default=default_model(), help="base model folder (default: the shipped one)")
    adapt.add_argument(
        "--examples",
        required=True,
        nargs="+",
        help="folders with one sub-folder of images per class, "
        "named as the model's classes, and corrections files downloaded from the page (a colleague's "
        "too): merged, each image counted once, the newest label kept",
    )
    adapt.add_argument("--out", required=True, help="folder for the adapted model")
    adapt.add_argument(
        "--anchor",
        type=positive_float,
        default=None,
        help=f"how strongly the head is held to the base model (default {REFERENCE_ANCHOR} with the "
        f"model's reference set, {ANCHOR} without)",
    )
    adapt.set_defaults(run=cmd_adapt)

    reference = commands.add_parser(
        "reference",
        help="give a model folder the reference set its adaptation keeps to: "
        "the features of labelled images DATA_DIR/<class>/*, balanced over sources",
    )
    reference.add_argument("--model", required=True, help="model folder to add reference.npz to")
    reference.add_argument("data_dir")
    reference.set_defaults(run=cmd_reference)

    evaluate = commands.add_parser("evaluate", help="score a model on a labelled folder DATA_DIR/<class>/*; JSON report")
    evaluate.add_argument("--model", default=default_model(), help="model folder (default: the shipped one)")
    evaluate.add_argument("data_dir")
    evaluate.set_defaults(run=cmd_evaluate)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="rendernet", description="Classify images with a rendernet model folder.")
    add_commands(main.add_subparsers(dest="command", required=True))
    return main


def run(arguments: argparse.ArgumentParser, argv=None) -> int:
    """Parse `argv` and run its command, turning any RendernetError into a message and exit status 1, and a closed
    output pipe into a quiet exit."""
    arguments.add_argument("--version", action="version", version=f"rendernet {__version__}")
    args = arguments.parse_args(argv)
    try:
        return args.run(args)
    except RendernetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head -1`): stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit then fails silently
        return 1


def main(argv=None) -> int:
    return run(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
