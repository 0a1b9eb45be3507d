"""The frozen pretrained backbone's features, computed once per image view (locally or on a Dask cluster), and the
heads (and, with fine-tuning, the last blocks) trained on them: PooledFeatures."""

import keras
import numpy as np

from .errors import TrainingError
from .transfer import FINE_TUNE_PATIENCE, copy_weights, fit_heads, fit_part, tail_of
from .views import chunk_features


def in_batches(part: keras.Model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """`part` (inference mode) on `inputs`, a batch at a time so that a large array never goes through at once."""
    outputs = [np.asarray(part(inputs[start : start + batch_size], training=False)) for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, *part.output_shape[1:]), np.float32)


def pooled_features(
    model: keras.Model,
    examples,
    augmented: int = 0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    client=None,
    layer: str = "pool",
) -> tuple:
    """(features, example index of each row): the `layer` output of `model` (by default the pooled features)
    for each example's cached input, or with augmented > 0 for that many augmented views of each example
    instead. With a Dask `client`, the batches run on its workers (training/cluster.py) and give the same
    features."""
    extractor = keras.Model(model.input, model.get_layer(layer).output)
    size = model.input_shape[1]
    jobs = [
        (index, view, str(examples[index].cache_file), str(examples[index].crop_source_file))
        for index in range(len(examples))
        for view in (range(1, augmented + 1) if augmented else [0])
    ]
    chunks = [jobs[start : start + batch_size] for start in range(0, len(jobs), batch_size)]
    bar = keras.utils.Progbar(len(jobs), unit_name="view") if progress and jobs else None
    if client is not None:
        from .cluster import features_on_cluster

        parts = features_on_cluster(client, extractor, chunks, size, seed)
    else:
        parts = (chunk_features(extractor, chunk, size, seed) for chunk in chunks)
    features = []
    for chunk, part in zip(chunks, parts, strict=True):
        features.append(part)
        if bar:
            bar.add(len(chunk))
    rows = np.array([index for index, *_ in jobs], dtype=int)
    return (np.concatenate(features) if features else np.zeros((0, *extractor.output_shape[1:]), np.float32)), rows


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
        from .efficientnet import block_outputs

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
        inputs = self.of(examples, pooled=self.after is None)[0]
        return in_batches(part, inputs)
