"""`rendernet train DATA_DIR --out models/NAME`: train, evaluate and export in one run.

Two architectures: "efficientnet-lite0" (the default: a frozen ImageNet backbone whose features are computed once,
features.py, and a trained softmax head, transfer.py) and "small" (the from-scratch high-pass CNN of model.py, 50x
fewer multiply-adds). Sources left out (held_out.py) choose the threshold.

Sections: data (scan, preprocess at the model's input size into the cache,
report skipped files and class balance), fit (class weights, EarlyStopping on
validation loss with the best weights restored), weights rounded to the stored
dtype, threshold (chosen on the leave-one-source-out scores when they are
computed, else on validation), evaluation (test metrics, per source,
held-out sources, leave-one-source-out), export (every format, from this same
run so nothing can drift, and the reference set the adaptation keeps to).
"""

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rendernet.cache import cache_root
from rendernet.metrics import evaluate

from . import data as data_module
from .config import ARCHITECTURES, TrainConfig
from .errors import TrainingError
from .metrics import choose_threshold, family_summary, plot_confusion, plot_history, scored_by_source, selection_score


def evaluate_examples(model, examples, classes, batch_size: int, threshold=None) -> dict:
    """metrics.evaluate on some examples: their labels, the model's probabilities and their sources."""
    from .model import predict

    return evaluate(
        np.array([example.label for example in examples], dtype=int),
        predict(model, examples, len(classes), batch_size),
        classes,
        threshold,
        [example.source for example in examples],
    )


def fit_settings(config: TrainConfig) -> dict:
    """What fit, PooledFeatures.fit and leave_one_source_out read from a resolved config."""
    settings = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "patience": config.patience,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "verbose": config.verbose,
    }
    if config.architecture != "small":
        settings.update(
            fine_tune_epochs=config.fine_tune_epochs,
            fine_tune_learning_rate=config.fine_tune_learning_rate,
            balance_sources=config.balance_sources,
            heads=config.heads,
        )
    return settings


def train(data_dir, out, config: TrainConfig | None = None, cache_dir=None, client=None, **overrides) -> dict:
    """Train on DATA_DIR/<class>/* with `config` (TrainConfig's defaults, with `overrides` applied), export every
    format into `out`, and return the metrics (also written to out/metrics.json, with the config). With a Dask
    `client`, the pretrained backbone's features are computed on its workers (training/cluster.py)."""
    from .export import export_numpy, export_tflite, round_weights
    from .held_out import leave_one_source_out, unseen_source_report
    from .model import fit, predict

    config = replace(config or TrainConfig(), **overrides)
    if config.architecture not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {config.architecture!r} (choose from {', '.join(ARCHITECTURES)})")
    pretrained = config.architecture != "small"
    if client is not None and not pretrained:
        raise TrainingError(
            "--scheduler runs the pretrained backbone's features on a cluster; the small architecture "
            "has none (it trains end to end)"
        )
    if config.input_size and not pretrained and config.input_size != ARCHITECTURES["small"]["input_size"]:
        raise TrainingError(
            f"the small architecture takes {ARCHITECTURES['small']['input_size']} px input; --input-size is for efficientnet-lite0"
        )
    if config.fine_tune and not pretrained:
        raise TrainingError(
            "--fine-tune trains blocks of the pretrained backbone; the small architecture trains all of itself anyway"
        )
    if config.heads < 1:
        raise TrainingError(f"--heads {config.heads}: at least one head must train")
    if config.heads > 1 and (not pretrained or config.hidden or config.fine_tune):
        raise TrainingError(
            "--heads averages linear heads on frozen features: not with the small architecture, --hidden or --fine-tune"
        )
    config = config.resolved()
    architecture, features, hidden, size, views = (
        config.architecture,
        config.features,
        config.hidden,
        config.input_size,
        config.views,
    )
    batch_size, seed = config.batch_size, config.seed
    weights_dtype = ARCHITECTURES[architecture]["weights_dtype"]
    strategy, widths, random_crops, quantize = config.strategy, config.widths, config.random_crops, config.quantize
    hold_out, loso, verbose = config.hold_out, config.loso, config.verbose
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone_cache = cache_root()  # downloaded and converted pretrained weights go under backbones/

    # ---- data
    dataset = data_module.scan(data_dir)
    print(f"classes: {dataset.classes}; {len(dataset.examples)} files; preprocessing at {size} px (cached by content hash)")
    data_module.cache_images(
        dataset, cache_dir or data_module.DEFAULT_CACHE, size, progress=verbose > 0, crop_sources=random_crops or pretrained
    )
    skipped_log = out / "skipped.txt"
    skipped_log.write_text("".join(f"{path}\t{reason}\n" for path, reason in dataset.skipped))
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} unreadable file(s); list in {skipped_log}")
    unknown = set(hold_out) - {example.source for example in dataset.examples}
    if unknown:
        raise TrainingError(
            f"no images from source(s) {sorted(unknown)} to hold out; sources: "
            f"{sorted({example.source for example in dataset.examples})}"
        )
    held_out = [example for example in dataset.examples if example.source in hold_out]
    dataset.examples = [example for example in dataset.examples if example.source not in hold_out]
    if held_out:
        print(f"held out from training and validation: {len(held_out)} images of {', '.join(sorted(hold_out))}")
    splits = {name: dataset.split(name) for name in ("train", "validation", "test")}
    if not splits["train"] or not splits["validation"]:
        raise TrainingError("need images in both the train and validation splits; add more images")
    print("split sizes: " + ", ".join(f"{name} {len(items)}" for name, items in splits.items()))

    # ---- fit
    settings = fit_settings(config)
    pooled = None
    if pretrained:
        from .transfer import build_classifier, copy_weights

        model = build_classifier(size, len(dataset.classes), backbone_cache, features, hidden, config.dropout)
        from .features import PooledFeatures

        pooled = PooledFeatures(
            model, dataset.examples + held_out, splits["train"], views, seed, verbose > 0, client, features, config.fine_tune
        )
        trained, history = pooled.fit(splits["train"], splits["validation"], settings)
        copy_weights(trained, model)
    else:
        settings.update(strategy=strategy, widths=widths, dropout=config.dropout, random_crops=random_crops)
        model, history = fit(dataset.classes, splits["train"], splits["validation"], **settings)
    round_weights(model, weights_dtype)
    train_seconds = time.time() - started

    # ---- threshold (on sources left out, else on validation) and evaluation (the weights as stored)
    metrics = {
        "architecture": architecture,
        "input_size": size,
        "features": features if pretrained else None,
        "hidden": hidden if pretrained else None,
        "views": views if pretrained else None,
        "classes": dataset.classes,
        "config": config.as_dict(),
    }
    if loso:
        metrics["leave_one_source_out"], threshold = leave_one_source_out(
            dataset, splits, settings, pooled, config.priority_families, config.guard_accuracy
        )
        metrics["leave_one_source_out_families"] = family_summary(metrics["leave_one_source_out"])
        metrics["selection"] = selection_score(
            metrics["leave_one_source_out"], dataset.classes, config.priority_families, config.guard_accuracy
        )
        metrics["threshold_rule"] = (
            f"on the leave-one-source-out scores: every source outside {list(config.priority_families)} "
            f"at {config.guard_accuracy} or more where a cut allows it, then the best balanced "
            "accuracy with those families weighing as much as every other source together"
        )
    elif len(dataset.classes) == 2:
        validation = predict(model, splits["validation"], len(dataset.classes), batch_size)
        threshold = choose_threshold(scored_by_source(splits["validation"], validation))
        metrics["threshold_rule"] = "best balanced accuracy on the validation split, every source weighing the same"
    else:
        threshold = None
    metrics["threshold"] = threshold
    for name in ("validation", "test"):
        metrics[name] = evaluate_examples(model, splits[name], dataset.classes, batch_size, threshold)
    metrics["epochs_run"] = len(history.history["loss"])
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["skipped_files"] = len(dataset.skipped)
    metrics["split_sizes"] = {name: len(items) for name, items in splits.items()}
    if held_out:
        held_out_probabilities = predict(model, held_out, len(dataset.classes), batch_size)
        metrics["held_out"] = {}
        for source in sorted(hold_out):
            chosen = np.array([example.source == source for example in held_out])
            label = next(example.label for example in held_out if example.source == source)
            others = [example for example in splits["test"] if example.label != label]
            metrics["held_out"][source] = unseen_source_report(
                held_out_probabilities[chosen], label, predict(model, others, len(dataset.classes), batch_size), threshold
            )

    # ---- export
    model.save(out / "model.keras")
    representative = data_module.load_pixels(splits["train"][:100], size)
    export_tflite(model, out / "model.tflite")
    for mode in quantize:
        export_tflite(model, out / f"model.{mode}.tflite", mode, representative)
    metrics["params"] = int(model.count_params())
    extra = {
        "metrics": {
            "test_accuracy": metrics["test"].get("accuracy"),
            "test_roc_auc": metrics["test"].get("roc_auc"),
            "unseen_sources": {**metrics.get("held_out", {}), **metrics.get("leave_one_source_out", {})},
        }
    }
    if pretrained:
        from .efficientnet import CREDIT

        extra["credits"] = [CREDIT]
    manifest = export_numpy(model, out, dataset.classes, threshold, extra, weights_dtype)
    if pooled is not None and not hidden and not config.fine_tune:  # the head reads the pooled features it trained on
        from rendernet.reference import write_reference

        features_of_train, labels_of_train = pooled.of(splits["train"])
        manifest = write_reference(
            out, manifest, features_of_train, labels_of_train, [example.source for example in splits["train"]], seed
        )
        print(f"reference set: {manifest['reference']['count']} training images ({manifest['reference']['bytes']:,} bytes)")
    metrics["macs"] = manifest["macs"]
    metrics["weights_bytes"] = manifest["weights"]["bytes"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_history(history.history, out / "training.png")
    plot_confusion(metrics["test"].get("confusion") or metrics["validation"]["confusion"], dataset.classes, out / "confusion.png")
    print(summary(metrics, out))
    return metrics


def summary(metrics: dict, out: Path) -> str:
    test = metrics["test"]
    lines = [
        f"exported to {out}/ ({', '.join(sorted(os.listdir(out)))})",
        f"params {metrics['params']}, multiply-adds {metrics['macs']:,} per image, weights {metrics['weights_bytes']:,} bytes",
        f"epochs {metrics['epochs_run']}, {metrics['train_seconds']} s; threshold {metrics['threshold']}",
        (
            f"validation accuracy {metrics['validation'].get('accuracy')}, test accuracy {test.get('accuracy')}, "
            f"test ROC AUC {test.get('roc_auc')}"
        ),
    ]
    for source, values in sorted(test.get("per_source", {}).items()):
        lines.append(f"  test source {source}: accuracy {values['accuracy']} on {values['count']} images")
    for source, values in sorted(metrics.get("held_out", {}).items()):
        lines.append(
            f"  held-out source {source}: accuracy {values['accuracy']}, ROC AUC {values['roc_auc']} on {values['count']} images"
        )
    for source, values in sorted(metrics.get("leave_one_source_out", {}).items()):
        lines.append(
            f"  left out {source} ({values['family']}): accuracy {values['accuracy']}, ROC AUC {values['roc_auc']} "
            f"on {values['count']} images"
        )
    for family, values in sorted(metrics.get("leave_one_source_out_families", {}).items()):
        lines.append(
            f"  left out, family {family}: mean accuracy {values['mean_accuracy']} over {values['sources']} "
            f"source(s), worst {values['worst']}"
        )
    if "selection" in metrics:
        selection = metrics["selection"]
        lines.append(
            f"selection score (left out, rooms and exteriors first) {selection['score']}, every source alike "
            f"{selection['plain']}; under the guard: {', '.join(selection['under_guard']) or 'none'}"
        )
    return "\n".join(lines)
