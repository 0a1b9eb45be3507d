"""`rendernet train DATA_DIR --out models/NAME`: train, evaluate and export in one run.

Two architectures: "efficientnet-lite0" (the default: a frozen ImageNet
backbone and a trained softmax head, training/transfer.py) and "small" (the
from-scratch high-pass CNN of training/model.py, 50x fewer multiply-adds).

Sections: data (scan, preprocess at the model's input size into the cache,
report skipped files and class balance), fit (class weights, EarlyStopping on
validation loss with the best weights restored), weights rounded to the stored
dtype, threshold (chosen on the leave-one-source-out scores when they are
computed, else on validation), evaluation (test metrics, per source,
held-out sources, leave-one-source-out), export (every format, from this same
run so nothing can drift).
"""

import json
import os
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
from rendernet.cache import cache_root
from rendernet.metrics import balanced_weights, evaluate, predict_labels, roc_auc

from . import data as data_module
from .config import ARCHITECTURES, TrainConfig
from .errors import TrainingError
from .metrics import choose_threshold, family_summary, plot_confusion, plot_history, scored_by_source, selection_score


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":  # the cluster and this worker's place in it come from the TF_CONFIG variable
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise TrainingError(f"unknown strategy {name!r} (choose default, mirrored or multi-worker)")


def fit(
    classes,
    train_examples,
    validation_examples,
    *,
    epochs,
    batch_size,
    patience,
    learning_rate,
    seed,
    strategy,
    widths,
    dropout,
    random_crops,
    verbose,
):
    """Build and train one model; returns (model, history) with the best validation-loss weights restored."""
    import keras

    from .model import build_model

    keras.utils.set_random_seed(seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    counts = np.bincount([example.label for example in train_examples], minlength=len(classes))
    if counts.min() == 0:
        raise TrainingError(f"class {classes[int(counts.argmin())]!r} has no training images")
    labels = np.array([example.label for example in train_examples])
    weights = balanced_weights(labels, len(classes))
    class_weight = {index: float(weights[np.argmax(labels == index)]) for index in range(len(classes))}
    if verbose:
        print(
            "train images per class: "
            + ", ".join(f"{name} {count}" for name, count in zip(classes, counts, strict=False))
            + "; class weights "
            + ", ".join(f"{weight:.2f}" for weight in class_weight.values())
        )
    distribution = make_strategy(strategy)
    replicas = distribution.num_replicas_in_sync
    if replicas > 1 and len(validation_examples) < replicas:
        raise TrainingError(
            f"{len(validation_examples)} validation image(s) cannot be shared by {replicas} replicas; add more images"
        )
    with distribution.scope():
        model = build_model(len(classes), widths, dropout)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    train_data = data_module.tf_dataset(train_examples, len(classes), batch_size, True, seed, replicas, random_crops)
    if strategy == "multi-worker":
        history = fit_across_workers(
            model,
            distribution,
            train_data,
            validation_examples,
            class_weight,
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            learning_rate=learning_rate,
            verbose=verbose,
        )
        return model, history
    validation_data = data_module.tf_dataset(validation_examples, len(classes), batch_size, False, seed, replicas)
    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)]
    history = model.fit(
        train_data, validation_data=validation_data, epochs=epochs, class_weight=class_weight, callbacks=callbacks, verbose=verbose
    )
    return model, history


def fit_across_workers(
    model, distribution, train_data, validation_examples, class_weight, *, epochs, patience, batch_size, learning_rate, verbose
):
    """What model.fit does (class weights, early stopping on validation loss, best weights restored), as a custom
    loop: Keras 3's fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585). Gradients are
    all-reduced over every worker's replicas each step and batch-norm statistics averaged each epoch, so all
    workers hold the same weights; each one scores the whole validation split itself. Returns an object with
    a Keras-like `history` dict."""
    import keras
    import tensorflow as tf

    with distribution.scope():
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(model.trainable_variables)
    weights = tf.constant([class_weight[index] for index in range(len(class_weight))], tf.float32)

    @tf.function
    def step(batch):
        def replica(pixels, labels):
            with tf.GradientTape() as tape:
                probabilities = model(pixels, training=True)
                per_image = keras.losses.categorical_crossentropy(labels, probabilities)
                per_image *= tf.gather(weights, tf.argmax(labels, axis=1))
                loss = tf.nn.compute_average_loss(per_image, global_batch_size=batch_size)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.argmax(probabilities, 1) == tf.argmax(labels, 1), tf.float32))
            return loss, correct, tf.cast(tf.shape(labels)[0], tf.float32)

        return [
            distribution.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in distribution.run(replica, args=batch)
        ]

    @tf.function
    def average_statistics():
        """Batch-norm moving statistics are updated from each worker's own batches: average them over workers."""
        local = distribution.run(lambda: [tf.identity(variable.value) for variable in model.non_trainable_variables])
        for variable, value in zip(model.non_trainable_variables, local, strict=True):
            variable.assign(distribution.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

    labels = np.array([example.label for example in validation_examples])
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    best, best_weights, waited = np.inf, model.get_weights(), 0
    for epoch in range(epochs):
        steps = [step(batch) for batch in distribution.experimental_distribute_dataset(train_data)]
        average_statistics()
        probabilities = predict(model, validation_examples, len(class_weight), batch_size)
        val_loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0))))
        history["loss"].append(float(np.mean([float(loss) for loss, _, _ in steps])))
        history["accuracy"].append(sum(float(correct) for _, correct, _ in steps) / sum(float(n) for _, _, n in steps))
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(float(np.mean(probabilities.argmax(axis=1) == labels)))
        if verbose:
            print(f"epoch {epoch + 1}: " + ", ".join(f"{key} {values[-1]:.4f}" for key, values in history.items()))
        if val_loss < best:
            best, best_weights, waited = val_loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best_weights)
    return types.SimpleNamespace(history=history)


def predict(model, examples, num_classes: int, batch_size: int) -> np.ndarray:
    """Class probabilities, calling the model directly: `model.predict` under MirroredStrategy fails on a last
    batch smaller than the replica count."""
    pixels = data_module.load_pixels(examples).astype(np.float32)
    chunks = [np.asarray(model(pixels[start : start + batch_size], training=False)) for start in range(0, len(pixels), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, num_classes))


def unseen_source_report(probabilities: np.ndarray, label: int, other_probabilities: np.ndarray, threshold) -> dict:
    """How a model did on one source it never saw: accuracy by the one decision rule, and the ROC AUC of that
    source against images of the other class(es) it never saw (P(last class) ranks them; two classes only)."""
    accuracy = float(np.mean(predict_labels(probabilities, threshold) == label))
    labels = np.r_[np.full(len(probabilities), label), np.full(len(other_probabilities), 1 - label)]
    two_classes = probabilities.shape[1] == 2
    return {
        "accuracy": round(accuracy, 4),
        "count": len(probabilities),
        "roc_auc": roc_auc(labels, np.r_[probabilities[:, -1], other_probabilities[:, -1]]) if two_classes else None,
    }


def leave_one_source_out(dataset, splits, settings, features=None, priority_families=(), guard_accuracy=0.8) -> tuple:
    """For each source: train without it, score every image of that source (all splits), and rank them
    against the test images of the other class. Returns ({source: report}, threshold).

    The decision threshold is chosen by how it does on sources the model never saw (each image scored by the
    model trained without its source): metrics.choose_threshold, the `priority_families` weighing as much
    as every other source together, and every other source kept at `guard_accuracy` where a cut allows it; within
    those halves each source weighs the same, so a large source cannot outvote the small ones. Each
    source's accuracy is reported at the threshold chosen the same way from the other sources' scores, so
    no source helps choose the threshold it is scored with. With `features` (the pretrained model's pooled
    features) only the head is retrained per source."""
    scored = {}
    sources = sorted({example.source for example in dataset.examples})
    for number, source in enumerate(sources, start=1):
        held_out = [example for example in dataset.examples if example.source == source]
        train_examples = [example for example in splits["train"] if example.source != source]
        validation_examples = [example for example in splits["validation"] if example.source != source]
        label = held_out[0].label
        others = [example for example in splits["test"] if example.label != label]
        print(f"leave-one-source-out [{number}/{len(sources)}]: {source} ({len(held_out)} images)", flush=True)
        if features is not None:
            head, _ = features.fit(train_examples, validation_examples, {**settings, "verbose": 0})
            probabilities = [features.probabilities(head, group) for group in (held_out, others)]
        else:
            model, _ = fit(dataset.classes, train_examples, validation_examples, **{**settings, "verbose": 0})
            probabilities = [predict(model, group, len(dataset.classes), settings["batch_size"]) for group in (held_out, others)]
        scored[source] = (label, *probabilities)

    def threshold_from(chosen):
        """The threshold from these sources' held-out scores (metrics.choose_threshold, the one rule)."""
        if len(dataset.classes) != 2:
            return None
        return choose_threshold(
            {name: (scored[name][0], scored[name][1][:, 1], families[name]) for name in chosen}, priority_families, guard_accuracy
        )

    families = {example.source: example.family for example in dataset.examples}
    results = {}
    for source, (label, held_out, others) in scored.items():
        threshold = threshold_from([name for name in scored if name != source])
        results[source] = {
            **unseen_source_report(held_out, label, others, threshold),
            "threshold": threshold,
            "family": families[source],
            "label": dataset.classes[label],
        }
    return results, threshold_from(list(scored))


class PooledFeatures:
    """The pretrained model's pooled features of every example (and augmented views of the training ones),
    computed once; heads train on them (transfer.fit_heads). With `fine_tune` blocks, also the activations those
    blocks read, and a fit is a head and then a tail (transfer.tail_of) trained on them."""

    def __init__(
        self,
        model,
        examples,
        train_examples,
        views: int,
        seed: int,
        progress: bool,
        client=None,
        features: str = "block11_add",
        fine_tune: int = 0,
    ):
        import keras

        from .efficientnet import block_outputs
        from .transfer import copy_weights, in_batches, pooled_features, tail_of

        if fine_tune > block_outputs().index(features):
            raise TrainingError(
                f"--fine-tune {fine_tune}: {features} has only {block_outputs().index(features)} blocks before it that can train"
            )
        self.model, self.features_layer = model, features
        self.after = block_outputs()[block_outputs().index(features) - fine_tune] if fine_tune else None
        layer = self.after or "pool"
        print(
            f"backbone {'activations at ' + layer if fine_tune else 'features'}: {len(examples)} images + "
            f"{views - 1} augmented views of {len(train_examples)} training images",
            flush=True,
        )
        self.rows = {id(example): row for row, example in enumerate(examples)}
        self.inputs, _ = pooled_features(model, examples, progress=progress, client=client, layer=layer)
        self.augmented_inputs, rows = (
            pooled_features(model, train_examples, augmented=views - 1, seed=seed, progress=progress, client=client, layer=layer)
            if views > 1
            else (None, [])
        )
        self.augmented_of = {}
        for row, index in enumerate(rows):
            self.augmented_of.setdefault(id(train_examples[index]), []).append(row)
        self.pooled, self.augmented_pooled = self.inputs, self.augmented_inputs
        if fine_tune:  # the pretrained tail, kept to start every fine-tuning from, pools the activations for the heads
            self.pretrained_tail = tail_of(model, features, self.after)
            copy_weights(model, self.pretrained_tail)
            pool = keras.Model(self.pretrained_tail.input, self.pretrained_tail.get_layer("pool").output)
            self.pooled, self.augmented_pooled = (
                None if inputs is None else in_batches(pool, inputs) for inputs in (self.inputs, self.augmented_inputs)
            )

    def of(self, examples, with_augmented=False, pooled=True) -> tuple:
        """(features, labels) of some examples (pooled, or the activations fine-tuning reads); with_augmented adds
        their augmented views."""
        features, augmented = (self.pooled, self.augmented_pooled) if pooled else (self.inputs, self.augmented_inputs)
        rows = [features[self.rows[id(example)]] for example in examples]
        labels = [example.label for example in examples]
        if with_augmented:
            for example in examples:
                extra = self.augmented_of.get(id(example), [])
                rows += [augmented[row] for row in extra]
                labels += [example.label] * len(extra)
        return np.array(rows, dtype=np.float32), np.array(labels, dtype=int)

    def sources_of(self, train_examples) -> list:
        """The source of each row that of(train_examples, with_augmented=True) gives, in its order."""
        return [example.source for example in train_examples] + [
            example.source for example in train_examples for _ in self.augmented_of.get(id(example), [])
        ]

    def fit(self, train_examples, validation_examples, settings):
        """A head on the pooled features; with fine-tuning, then a tail from it. Returns (head or tail, history)."""
        from .export import round_weights
        from .transfer import FINE_TUNE_PATIENCE, copy_weights, fit_heads, fit_part, tail_of

        part_settings = {key: settings[key] for key in ("epochs", "batch_size", "patience", "learning_rate", "verbose")}
        if settings["balance_sources"]:
            part_settings["train_groups"] = self.sources_of(train_examples)
        head, history = fit_heads(
            self.model,
            *self.of(train_examples, with_augmented=True),
            *self.of(validation_examples),
            seed=settings["seed"],
            heads=settings["heads"],
            **part_settings,
        )
        if self.after is None:
            return head, history
        tail = tail_of(self.model, self.features_layer, self.after)
        copy_weights(self.pretrained_tail, tail)
        copy_weights(head, tail)
        tail, tuned = fit_part(
            tail,
            *self.of(train_examples, with_augmented=True, pooled=False),
            *self.of(validation_examples, pooled=False),
            **{
                **part_settings,
                "epochs": settings["fine_tune_epochs"],
                "patience": FINE_TUNE_PATIENCE,
                "learning_rate": settings["fine_tune_learning_rate"],
            },
        )
        round_weights(tail, "int8")  # what the exported model stores: a change smaller than a step of int8 is lost
        for key, values in tuned.history.items():
            history.history[key] = history.history.get(key, []) + values
        return tail, history

    def probabilities(self, part, examples) -> np.ndarray:
        from .transfer import in_batches

        inputs = self.of(examples, pooled=self.after is None)[0]
        return in_batches(part, inputs)


def evaluate_examples(model, examples, classes, batch_size: int, threshold=None) -> dict:
    """metrics.evaluate on some examples: their labels, the model's probabilities and their sources."""
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
