"""`rendernet train DATA_DIR --out models/NAME`: train, evaluate and export in one run.

Sections: data (scan, preprocess into the cache, report skipped files and class
balance), model (under the chosen distribution strategy), fit (class weights,
EarlyStopping on validation loss with the best weights restored), threshold
(chosen on validation), evaluation (test metrics, per source, held-out sources),
export (every format, from this same run so nothing can drift).
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from . import data as data_module
from .metrics import choose_threshold, evaluate, plot_confusion, plot_history


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise SystemExit(f"error: unknown strategy {name!r} (choose default or mirrored)")


def fit(classes, train_examples, validation_examples, *, epochs, batch_size, patience, learning_rate, seed,
        strategy, widths, random_crops, verbose):
    """Build and train one model; returns (model, history) with the best validation-loss weights restored."""
    import keras

    from .model import build_model

    keras.utils.set_random_seed(seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    counts = np.bincount([example.label for example in train_examples], minlength=len(classes))
    if counts.min() == 0:
        raise SystemExit(f"error: class {classes[int(counts.argmin())]!r} has no training images")
    class_weight = {index: len(train_examples) / (len(counts) * count) for index, count in enumerate(counts)}
    if verbose:
        print("train images per class: " + ", ".join(f"{name} {count}" for name, count in zip(classes, counts, strict=False))
              + "; class weights " + ", ".join(f"{weight:.2f}" for weight in class_weight.values()))
    distribution = make_strategy(strategy)
    replicas = distribution.num_replicas_in_sync
    if replicas > 1 and len(validation_examples) < replicas:
        raise SystemExit(f"error: {len(validation_examples)} validation image(s) cannot be shared by {replicas} "
                         "replicas; add more images")
    with distribution.scope():
        model = build_model(len(classes), widths=widths)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])
    train_data = data_module.tf_dataset(train_examples, len(classes), batch_size, True, seed, replicas, random_crops)
    validation_data = data_module.tf_dataset(validation_examples, len(classes), batch_size, False, seed, replicas)
    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)]
    history = model.fit(train_data, validation_data=validation_data, epochs=epochs, class_weight=class_weight,
                        callbacks=callbacks, verbose=verbose)
    return model, history


def predict(model, examples, num_classes: int, batch_size: int) -> np.ndarray:
    """Class probabilities, calling the model directly: `model.predict` under MirroredStrategy fails on a last
    batch smaller than the replica count."""
    pixels = data_module.load_pixels(examples).astype(np.float32)
    chunks = [np.asarray(model(pixels[start:start + batch_size], training=False))
              for start in range(0, len(pixels), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, num_classes))


def leave_one_source_out(dataset, splits, settings) -> dict:
    """For each source: train without it, then score every image of that source (all splits)."""
    results = {}
    sources = sorted({example.source for example in dataset.examples})
    for number, source in enumerate(sources, start=1):
        held_out = [example for example in dataset.examples if example.source == source]
        train_examples = [example for example in splits["train"] if example.source != source]
        validation_examples = [example for example in splits["validation"] if example.source != source]
        print(f"leave-one-source-out [{number}/{len(sources)}]: {source} ({len(held_out)} images)")
        model, _ = fit(dataset.classes, train_examples, validation_examples, **{**settings, "verbose": 0})
        results[source] = evaluate_examples(model, held_out, dataset.classes, settings["batch_size"])["per_source"][source]
    return results


def evaluate_examples(model, examples, classes, batch_size: int, threshold=None) -> dict:
    """metrics.evaluate on some examples: their labels, the model's probabilities and their sources."""
    return evaluate(np.array([example.label for example in examples], dtype=int),
                    predict(model, examples, len(classes), batch_size), classes, threshold,
                    [example.source for example in examples])


def train(data_dir, out, epochs=60, batch_size=32, patience=12, learning_rate=2e-3, seed=1234,
          strategy="default", quantize=(), cache_dir=None, widths=(16, 32, 64), random_crops=False, hold_out=(),
          loso=False, verbose=1) -> dict:
    from .export import export_numpy, export_tflite

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # ---- data
    dataset = data_module.scan(data_dir)
    print(f"classes: {dataset.classes}; {len(dataset.examples)} files; preprocessing (cached by content hash)")
    data_module.cache_images(dataset, cache_dir or data_module.DEFAULT_CACHE, progress=verbose > 0,
                             crop_sources=random_crops)
    skipped_log = out / "skipped.txt"
    skipped_log.write_text("".join(f"{path}\t{reason}\n" for path, reason in dataset.skipped))
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} unreadable file(s); list in {skipped_log}")
    unknown = set(hold_out) - {example.source for example in dataset.examples}
    if unknown:
        raise SystemExit(f"error: no images from source(s) {sorted(unknown)} to hold out; sources: "
                         f"{sorted({example.source for example in dataset.examples})}")
    held_out = [example for example in dataset.examples if example.source in hold_out]
    dataset.examples = [example for example in dataset.examples if example.source not in hold_out]
    if held_out:
        print(f"held out from training and validation: {len(held_out)} images of {', '.join(sorted(hold_out))}")
    splits = {name: dataset.split(name) for name in ("train", "validation", "test")}
    if not splits["train"] or not splits["validation"]:
        raise SystemExit("error: need images in both the train and validation splits; add more images")
    print("split sizes: " + ", ".join(f"{name} {len(items)}" for name, items in splits.items()))

    # ---- fit
    settings = {"epochs": epochs, "batch_size": batch_size, "patience": patience, "learning_rate": learning_rate,
                "seed": seed, "strategy": strategy, "widths": widths, "random_crops": random_crops, "verbose": verbose}
    model, history = fit(dataset.classes, splits["train"], splits["validation"], **settings)
    train_seconds = time.time() - started

    # ---- threshold and evaluation (on the restored best weights)
    validation_probabilities = predict(model, splits["validation"], len(dataset.classes), batch_size)
    validation_labels = np.array([example.label for example in splits["validation"]])
    threshold = choose_threshold(validation_labels, validation_probabilities) if len(dataset.classes) == 2 else None
    metrics = {"classes": dataset.classes, "threshold": threshold}
    for name in ("validation", "test"):
        metrics[name] = evaluate_examples(model, splits[name], dataset.classes, batch_size, threshold)
    metrics["epochs_run"] = len(history.history["loss"])
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["skipped_files"] = len(dataset.skipped)
    metrics["split_sizes"] = {name: len(items) for name, items in splits.items()}
    if held_out:
        metrics["held_out"] = evaluate_examples(model, held_out, dataset.classes, batch_size, threshold)["per_source"]
    if loso:
        metrics["leave_one_source_out"] = leave_one_source_out(dataset, splits, settings)

    # ---- export
    model.save(out / "model.keras")
    representative = data_module.load_pixels(splits["train"][:100])
    export_tflite(model, out / "model.tflite")
    for mode in quantize:
        export_tflite(model, out / f"model.{mode}.tflite", mode, representative)
    metrics["params"] = int(model.count_params())
    manifest = export_numpy(model, out, dataset.classes, threshold,
                            {"metrics": {"test_accuracy": metrics["test"].get("accuracy"),
                                         "test_roc_auc": metrics["test"].get("roc_auc")}})
    metrics["macs"] = manifest["macs"]
    metrics["weights_bytes"] = manifest["weights"]["bytes"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_history(history.history, out / "training.png")
    plot_confusion(metrics["test"].get("confusion") or metrics["validation"]["confusion"], dataset.classes,
                   out / "confusion.png")
    print(summary(metrics, out))
    return metrics


def summary(metrics: dict, out: Path) -> str:
    test = metrics["test"]
    lines = [f"exported to {out}/ ({', '.join(sorted(os.listdir(out)))})",
             f"params {metrics['params']}, multiply-adds {metrics['macs']:,} per image, weights {metrics['weights_bytes']:,} bytes",
             f"epochs {metrics['epochs_run']}, {metrics['train_seconds']} s; threshold {metrics['threshold']}",
             (f"validation accuracy {metrics['validation'].get('accuracy')}, test accuracy {test.get('accuracy')}, "
              f"test ROC AUC {test.get('roc_auc')}")]
    for source, values in sorted(test.get("per_source", {}).items()):
        lines.append(f"  test source {source}: accuracy {values['accuracy']} on {values['count']} images")
    for source, values in sorted(metrics.get("held_out", {}).items()):
        lines.append(f"  held-out source {source}: accuracy {values['accuracy']} on {values['count']} images")
    for source, values in sorted(metrics.get("leave_one_source_out", {}).items()):
        lines.append(f"  left out {source}: accuracy {values['accuracy']} on {values['count']} images")
    return "\n".join(lines)
