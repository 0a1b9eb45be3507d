"""The default rendernet network: a fixed high-pass filter, then a small CNN.

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

import keras
import numpy as np
from rendernet.preprocess import INPUT_SIZE

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
