"""The pretrained classifier: a frozen ImageNet EfficientNet-Lite0, average pooling, a trained softmax head.

Why frozen: with a few hundred training pictures from a dozen sources, a network
trained from scratch learns its sources; ImageNet features carry what a
million photographs look like. Because the backbone never changes, every
image view goes through it once, up front: the head then trains on pooled
features in seconds, and leave-one-source-out is a head per source, not a
network per source.

Training views: the cached input itself, plus `views - 1` augmented copies
per training image (a random square of 224..320 px of the 320 px cache, scaled
to the input size with preprocess's bilinear filter, a random horizontal flip,
and half the time a JPEG re-compression at quality 70..98, so compression
cannot tell the classes apart).

Fine-tuning (`fine_tune` > 0): the last blocks before the pooled layer train too.
Their input, the output of the block before them, is computed once per view and
kept in memory like the pooled features, so a CPU trains only those blocks and
the head. First the head trains on the pooled features as without fine-tuning,
then the blocks and the head together at their own learning rate, with
EarlyStopping on validation loss after FINE_TUNE_PATIENCE epochs.

The exported model is one flat Keras graph (`build_classifier`): the backbone
layers, `pool` (GlobalAveragePooling2D), `dropout`, optionally `hidden` (Dense,
ReLU), `classifier` (Dense, softmax), so every export format and the NumPy pass
run the same network.
"""

import keras
import numpy as np
from rendernet.metrics import balanced_weights

from .efficientnet import backbone_layers, load_pretrained
from .errors import TrainingError

FINE_TUNE_PATIENCE = 2  # epochs without a better validation loss before fine-tuning stops (each is minutes on a CPU)


def add_head(x, num_classes: int, hidden: int, dropout: float):
    """dropout -> (with hidden > 0) a ReLU layer of that width -> softmax: the trained part, on pooled features."""
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)


def build_classifier(size: int, num_classes: int, cache, until: str, hidden: int, dropout: float) -> keras.Model:
    """input -> frozen pretrained backbone up to `until` -> pool -> add_head."""
    inputs = keras.Input((size, size, 3), name="input")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone_layers(inputs, until))
    model = keras.Model(inputs, add_head(x, num_classes, hidden, dropout), name=f"efficientnet_lite0_{until}")
    load_pretrained(model, cache)
    return model


def head_like(model: keras.Model, x):
    """add_head on `x` with `model`'s number of classes, hidden units and dropout rate."""
    hidden = model.get_layer("hidden").units if "hidden" in [layer.name for layer in model.layers] else 0
    return add_head(x, model.output_shape[-1], hidden, model.get_layer("dropout").rate)


def head_of(model: keras.Model) -> keras.Model:
    """A stand-alone copy of `model`'s trained part, taking pooled features (same layer names, fresh weights)."""
    features = keras.Input((model.get_layer("pool").output.shape[-1],))
    return keras.Model(features, head_like(model, features))


def tail_of(model: keras.Model, until: str, after: str) -> keras.Model:
    """A stand-alone copy of `model` from the output of backbone layer `after` (its input) to the softmax: the
    blocks that fine-tuning trains and a head like head_of's (same layer names, fresh weights)."""
    activations = keras.Input(model.get_layer(after).output.shape[1:])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone_layers(activations, until, after))
    return keras.Model(activations, head_like(model, x))


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Set the weights of every layer of `source` that `target` has too (matched by name)."""
    names = {layer.name for layer in target.layers}
    for layer in source.layers:
        if layer.weights and layer.name in names:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def fit_heads(
    model: keras.Model, train_features, train_labels, validation_features, validation_labels, *, seed, heads: int = 1, **settings
):
    """Train `heads` heads like `model`'s on pooled features, from seeds seed, seed + 1, ..., and return (their mean,
    the first one's Keras history); see fit_part. For a linear head the mean of the weights is the mean of the
    logits: an ensemble at the cost of one head, and less of the spread one seed's head has."""
    trained = []
    for offset in range(heads):
        keras.utils.set_random_seed(seed + offset)
        trained.append(fit_part(head_of(model), train_features, train_labels, validation_features, validation_labels, **settings))
    head, history = trained[0]
    if heads > 1:
        head.set_weights([np.mean(arrays, axis=0) for arrays in zip(*(part.get_weights() for part, _ in trained), strict=True)])
    return head, history


def fit_part(
    part: keras.Model,
    train_inputs,
    train_labels,
    validation_inputs,
    validation_labels,
    *,
    epochs,
    batch_size,
    patience,
    learning_rate,
    verbose,
    train_groups=None,
):
    """Train `part` (a head, or a tail for fine-tuning) on its inputs: Adam, balanced_weights (by class, and with
    `train_groups` by group within each class), EarlyStopping on validation loss with the best weights restored;
    returns (part, Keras history)."""
    num_classes = part.output_shape[-1]
    counts = np.bincount(train_labels, minlength=num_classes)
    if counts.min() == 0:
        raise TrainingError(f"class {int(counts.argmin())} has no training images")
    part.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    history = part.fit(
        train_inputs,
        keras.utils.to_categorical(train_labels, num_classes),
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(validation_inputs, keras.utils.to_categorical(validation_labels, num_classes)),
        sample_weight=balanced_weights(train_labels, num_classes, train_groups),
        shuffle=True,
        verbose=verbose,
        callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True)],
    )
    return part, history
