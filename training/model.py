"""The small rendernet network (`--architecture small`): a fixed high-pass filter, then a small CNN; how it is fitted
(one process, MirroredStrategy, or several workers), and `predict`, which every trained Keras model is scored with.

Renders and photographs differ less in what they show than in how their pixels
were made (sensor noise, demosaicing and JPEG traces vs clean, noise-free
shading). Image-forensics work (Yao et al.; Rahmouni et al. 2017, CGvsPhoto)
therefore puts fixed high-pass filters in front of the network, so it sees the
noise residual instead of the scene. Here that is a frozen per-channel 3x3
Laplacian (a DepthwiseConv2D the forward pass already implements).

The rest is shaped for NumPy in WebAssembly, where multiply-adds are what cost:
every convolution has stride == kernel size, so in NumPy it is a reshape and one
matrix product, and the whole network is 5.3M multiply-adds and 11.6k weights (2 classes).
"""

import types

import keras
import numpy as np
from rendernet.metrics import balanced_weights
from rendernet.preprocess import INPUT_SIZE

from . import data as data_module
from .errors import TrainingError

LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def high_pass_kernel(channels: int = 3) -> np.ndarray:
    """The frozen first layer's kernel: one Laplacian per input channel, shape (3, 3, C, 1)."""
    return np.repeat(LAPLACIAN[:, :, None, None], channels, axis=2)


def build_model(num_classes: int, widths, dropout: float) -> keras.Model:
    """High-pass filter -> conv blocks (stride == kernel) -> global average pool -> softmax."""
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    high_pass = keras.layers.DepthwiseConv2D(3, padding="valid", use_bias=False, trainable=False, name="high_pass")
    x = high_pass(x)
    high_pass.set_weights([high_pass_kernel()])
    for index, (width, size) in enumerate(zip(widths, (4, 2, 2, 2, 2), strict=False), start=1):
        x = keras.layers.Conv2D(width, size, strides=size, use_bias=False, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="rendernet")


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
