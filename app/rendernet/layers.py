"""The layers of the NumPy forward pass, one small class per Keras layer type.

Tensors are float32 NHWC, as in Keras. Each layer class knows its Keras name,
checks the config options it supports (`check`; export calls the same method,
so a model the forward pass cannot run is refused before it is written), and
turns its inputs into its output.

Speed notes. Pyodide's NumPy has no BLAS and no SIMD: there `a @ b` is slower
than `np.einsum`, while natively `@` (BLAS) wins by ~10x. In the page, once the
worker has loaded Pyodide's own OpenBLAS (`use_blas`), `matmul` calls its
cblas_sgemm through ctypes instead: 1.5-2.3x einsum's speed on the shipped
model's 1x1 shapes. `pack` lays each weight matrix out once for the platform's
`matmul` (see there). Convolutions become one matrix product: a plain
reshape when stride == kernel size (1x1 convolutions), else an im2col copy of
kernel_h * kernel_w shifted views. Depthwise convolutions: see `DepthwiseConv2D.depthwise`.
"""

import sys

import numpy as np

from .errors import ModelError

if sys.platform == "emscripten":
    BLAS = {}  # "sgemm": OpenBLAS's cblas_sgemm, once use_blas has loaded it

    def use_blas(library: str = "libopenblas.so") -> None:
        """Route matmul through `library`'s cblas_sgemm (Pyodide's OpenBLAS: the page's worker loads it after ready,
        with pyodide.loadPackage, which checks it against the lock's sha256)."""
        import ctypes

        sgemm = ctypes.CDLL(library).cblas_sgemm
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        sgemm.argtypes = [integer] * 6 + [ctypes.c_float, pointer, integer, pointer, integer, ctypes.c_float, pointer, integer]
        sgemm.restype = None
        BLAS["sgemm"] = sgemm

    def pack(w_t: np.ndarray):
        """(N, K) weights -> the layout `matmul` is fastest with in Pyodide: einsum's inner loop runs along
        the output channels when K <= N ("ij,jk", measured up to 1.8x faster there), else along K ("ij,kj");
        sgemm takes either (as B, or B transposed)."""
        return ("ij,jk->ik", np.ascontiguousarray(w_t.T)) if w_t.shape[1] <= w_t.shape[0] else ("ij,kj->ik", w_t)

    def matmul(a: np.ndarray, packed) -> np.ndarray:
        """(M, K) x packed (N, K) weights -> (M, N): OpenBLAS's sgemm once loaded, else einsum."""
        sgemm = BLAS.get("sgemm")
        if sgemm is None:
            return np.einsum(packed[0], a, packed[1])
        spec, weights = packed
        a = np.ascontiguousarray(a, dtype=np.float32)
        (m, k), transposed = a.shape, spec == "ij,kj->ik"
        n = weights.shape[0] if transposed else weights.shape[1]
        product = np.empty((m, n), np.float32)
        row_major, plain, transpose = 101, 111, 112  # CBLAS's constants
        sgemm(
            row_major,
            plain,
            transpose if transposed else plain,
            m,
            n,
            k,
            1.0,
            a.ctypes.data,
            k,
            weights.ctypes.data,
            weights.shape[1],
            0.0,
            product.ctypes.data,
            n,
        )
        return product

else:

    def pack(w_t: np.ndarray):
        return np.ascontiguousarray(w_t.T)

    def matmul(a: np.ndarray, packed) -> np.ndarray:
        """(M, K) x packed (K, N) weights -> (M, N) through BLAS."""
        return a @ packed


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


SIX_BITS = np.float32(6.0).view(np.int32)


def relu_bits(x: np.ndarray, limit=None) -> np.ndarray:
    """ReLU (up to `limit`, a float32's bits as int32) of a float32 array, in place, on its bits seen as int32:
    a negative float is a negative int32, and non-negative floats order as their bits do, so the integer clip is
    the float one (exactly, for the finite values and infinities a forward pass holds). In Pyodide's NumPy, without
    SIMD, it takes 0.49 ms on 112x112x96 where np.clip takes 6.0 (natively both 0.08)."""
    bits = x.view(np.int32)
    if limit is None:
        np.maximum(bits, 0, out=bits)
    else:
        np.clip(bits, 0, limit, out=bits)
    return x


def _hard_sigmoid(x):
    """Keras 3's hard sigmoid, relu6(x + 3) / 6 (Keras 2's was clip(0.2 x + 0.5, 0, 1): not this one)."""
    return np.clip(x + np.float32(3.0), 0.0, 6.0) * np.float32(1 / 6)


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


ACTIVATIONS = {  # Keras's activations by name, as Keras 3 computes them
    "linear": lambda x: x,
    "relu": lambda x: relu_bits(x.astype(np.float32)),  # astype: a copy, the input is another layer's
    "relu6": lambda x: relu_bits(x.astype(np.float32), SIX_BITS),
    "leaky_relu": lambda x: np.where(x > 0, x, np.float32(0.2) * x),
    "elu": _elu,
    "selu": lambda x: np.float32(1.0507009873554805) * np.where(x > 0, x, np.float32(1.6732632423543772) * _elu(x)),
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "softmax": _softmax,
    "softplus": lambda x: np.logaddexp(x, np.float32(0.0)).astype(x.dtype),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "tanh": np.tanh,
}
IN_PLACE = {  # for an array no other layer reads (a Linear's output)
    "relu": relu_bits,
    "relu6": lambda x: relu_bits(x, SIX_BITS),
}


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def same_padding(size: int, kernel: int, stride: int) -> tuple:
    """TensorFlow's 'same' padding: (before, after) so that out = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def dilated(kernel, dilation) -> tuple:
    """The extent of a kernel whose taps are `dilation` apart."""
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))


def pad_for(x: np.ndarray, kernel, strides, padding: str, value: float = 0.0) -> np.ndarray:
    """Pad an NHWC tensor as Keras does for `padding` ('valid' or 'same'; `kernel` is its extent, see dilated)."""
    if padding == "valid":
        return x
    (top, bottom), (left, right) = same_padding(x.shape[1], kernel[0], strides[0]), same_padding(x.shape[2], kernel[1], strides[1])
    return pad_edges(x, ((top, bottom), (left, right)), value)


def pad_edges(x: np.ndarray, edges, value: float = 0.0) -> np.ndarray:
    """Pad an NHWC tensor by ((top, bottom), (left, right)); one allocation and one copy (np.pad is several
    times slower in Pyodide)."""
    (top, bottom), (left, right) = edges
    if top == bottom == left == right == 0:
        return x
    n, h, w, c = x.shape
    shape = (n, h + top + bottom, w + left + right, c)
    padded = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    padded[:, top : top + h, left : left + w] = x
    return padded


def windows(x: np.ndarray, kernel, strides, dilation=(1, 1)) -> np.ndarray:
    """All kernel windows of a padded NHWC tensor: (N, out_h, out_w, kh, kw, C), taps `dilation` apart.

    When stride == kernel and the windows tile the input, this is a reshape
    and a transpose; otherwise kh * kw strided copies.
    """
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    extent_h, extent_w = dilated(kernel, dilation)
    out_h, out_w = (h - extent_h) // sh + 1, (w - extent_w) // sw + 1
    if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1):
        tiles = x[:, : out_h * kh, : out_w * kw].reshape(n, out_h, kh, out_w, kw, c)
        return tiles.transpose(0, 1, 3, 2, 4, 5)
    cols = np.empty((n, out_h, out_w, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            cols[:, :, :, i, j] = x[:, top : top + sh * (out_h - 1) + 1 : sh, left : left + sw * (out_w - 1) + 1 : sw]
    return cols


class Layer:
    """A layer: `config` is the Keras config subset written by export; `weights` maps names to arrays."""

    keras_type = ""
    weight_names: tuple = ()
    activation_key = None  # config key naming a fused activation, if any

    def __init__(self, name: str, config: dict, weights: dict):
        self.name = name
        self.config = config
        self.check(config, name)
        missing = [key for key in self.weight_names if key not in weights]
        if missing:
            raise ModelError(f"layer {name!r} ({self.keras_type}) has no weights {missing} in weights.npz")
        self.weights = {key: np.asarray(value, dtype=np.float32) for key, value in weights.items()}
        self.activation = ACTIVATIONS[config.get(self.activation_key, "linear")] if self.activation_key else None

    @classmethod
    def check(cls, config: dict, name: str) -> None:
        """Raise ModelError naming the layer if an option is one the forward pass does not implement."""
        if config.get("data_format", "channels_last") != "channels_last":
            raise ModelError(f"layer {name!r}: only data_format='channels_last' is supported")
        if cls.activation_key and config.get(cls.activation_key, "linear") not in ACTIVATIONS:
            raise ModelError(
                f"layer {name!r}: activation {config.get(cls.activation_key)!r} is not supported "
                f"(supported: {', '.join(sorted(ACTIVATIONS))})"
            )
        if config.get("groups", 1) != 1:
            raise ModelError(f"layer {name!r}: groups={config['groups']} is not supported (only 1)")
        if isinstance(config.get("padding"), str) and config["padding"] not in ("valid", "same"):
            raise ModelError(f"layer {name!r}: padding={config['padding']!r} is not supported")

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _numbers(value) -> bool:
    """A number, or a (nested) list of numbers: a constant that broadcasts against the channels."""
    if isinstance(value, (list, tuple)):
        return all(_numbers(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Rescaling(Layer):
    """x * scale + offset, each a number or one per channel (also a Keras op with a constant: x + c, x * c)."""

    keras_type = "Rescaling"

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        for key in ("scale", "offset"):
            if not _numbers(config.get(key, 0)):
                raise ModelError(f"layer {name!r}: Rescaling {key}={config.get(key)!r} is not a number or a list of numbers")

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        self.scale = np.asarray(config.get("scale", 1.0), np.float32)
        self.offset = np.asarray(config.get("offset", 0.0), np.float32)

    def __call__(self, x):
        return x * self.scale + self.offset


class InputPixels(Rescaling):
    """rendernet's own first layer for converted models (`rendernet convert --input-range`): the 0-255 RGB
    pixels in the channel order the network was trained on ("RGB" or "BGR"), then * scale + offset."""

    keras_type = "InputPixels"

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        if config.get("channel_order", "RGB") not in ("RGB", "BGR"):
            raise ModelError(f"layer {name!r}: channel_order must be 'RGB' or 'BGR'")

    def __call__(self, x):
        return super().__call__(x[..., ::-1] if self.config.get("channel_order") == "BGR" else x)


class _ChannelAffine(Layer):
    """A per-channel affine map x * scale + shift (scale and shift set by the subclass), on the channel axis only."""

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        if config.get("axis", -1) not in (-1, 3, [-1], [3], (-1,), (3,)):
            raise ModelError(f"layer {name!r}: only {cls.keras_type} on the channel axis is supported")

    def __call__(self, x):
        return x * self.scale + self.shift


class Normalization(_ChannelAffine):
    """Keras's Normalization: (x - mean) / max(sqrt(variance), 1e-7), per channel; mean and variance from its
    config when it was given them, else from its weights."""

    keras_type = "Normalization"

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        if config.get("invert"):
            raise ModelError(f"layer {name!r}: Normalization with invert=True is not supported")

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        stats = []
        for key in ("mean", "variance"):
            value = config.get(key) if config.get(key) is not None else self.weights.get(key)
            if value is None:
                raise ModelError(f"layer {name!r} (Normalization) has no {key}")
            stats.append(np.asarray(value, np.float32).reshape(-1))
        mean, variance = stats
        self.scale = (1 / np.maximum(np.sqrt(variance), np.float32(1e-7))).astype(np.float32)
        self.shift = (-mean * self.scale).astype(np.float32)


class Linear(Layer):
    """A layer that ends in bias + activation: Conv2D, DepthwiseConv2D, SeparableConv2D, Dense.

    A BatchNormalization right after one folds into it (scale_outputs). Layers that
    multiply by `kernel_t`, a (filters, inputs) matrix, share its packing and folding."""

    activation_key = "activation"

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        self.bias = self.weights.get("bias")
        self.activation = IN_PLACE.get(config.get("activation"), self.activation)  # its output is its own
        self.kernel_t = None
        self._packed = None
        self.scaled = False  # a BatchNormalization was folded in: the weights are no longer the stored ones

    def set_activation(self, name: str) -> None:
        """Apply the activation `name` to this layer's output (a following ReLU or Activation folded in)."""
        self.config = dict(self.config, activation=name)
        self.activation = IN_PLACE.get(name, ACTIVATIONS[name])

    def packed(self):
        """kernel_t laid out for matmul, once (after any BatchNormalization was folded in)."""
        if self._packed is None:
            self._packed = pack(self.kernel_t)
        return self._packed

    def replace_weights(self, kernel_t: np.ndarray, bias: np.ndarray) -> None:
        """Another kernel (filters, inputs) and bias of the same shapes (an adapted head); packed again on use."""
        self.kernel_t, self.bias = np.ascontiguousarray(kernel_t, np.float32), np.asarray(bias, np.float32)
        self._packed = None

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Fold a following per-channel affine map (a BatchNormalization) into this layer."""
        self._packed = None
        self.kernel_t = np.ascontiguousarray(self.kernel_t * scale[:, None], dtype=np.float32)
        self._fold_bias(scale, shift)

    def _fold_bias(self, scale, shift) -> None:
        self.scaled = True
        bias = self.bias if self.bias is not None else np.zeros_like(shift)
        self.bias = (bias * scale + shift).astype(np.float32)

    def epilogue(self, y: np.ndarray, shape) -> np.ndarray:
        """Add the bias, apply the activation, give the output its shape."""
        if self.bias is not None:
            y += self.bias
        return self.activation(y.reshape(shape))


class Conv2D(Linear):
    """Conv2D as one matrix product over kernel windows; kernel kept as (filters, kh*kw*C)."""

    keras_type = "Conv2D"
    weight_names = ("kernel",)

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        kernel = self.weights["kernel"]
        self.kernel_size = kernel.shape[:2]
        self.strides = _pair(config["strides"])
        self.dilation = _pair(config.get("dilation_rate", 1))
        self.kernel_t = np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T)

    def __call__(self, x):
        x = pad_for(x, dilated(self.kernel_size, self.dilation), self.strides, self.config["padding"])
        cols = windows(x, self.kernel_size, self.strides, self.dilation)
        n, out_h, out_w = cols.shape[:3]
        y = matmul(cols.reshape(n * out_h * out_w, -1), self.packed())
        return self.epilogue(y, (n, out_h, out_w, -1))


class DepthwiseConv2D(Linear):
    """Depthwise conv over kh*kw windows, one kernel tap per channel; output channel c*multiplier + m, as Keras."""

    keras_type = "DepthwiseConv2D"
    weight_names = ("kernel",)

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        kernel = self.weights["kernel"]  # (kh, kw, C, multiplier)
        self.kernel_size = kernel.shape[:2]
        self.strides = _pair(config["strides"])
        self.dilation = _pair(config.get("dilation_rate", 1))
        self.multiplier = kernel.shape[3]
        self.kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)

    def scale_outputs(self, scale, shift):
        self.kernel = (self.kernel * scale).astype(np.float32)
        self._fold_bias(scale, shift)

    def depthwise(self, x):
        """NumPy's cost here is per inner loop, so the loops should run along the longer axis.

        Deep, narrow layers (more channels than output columns): one einsum over a strided view of the
        windows, no copy, its inner loop along the channels (than summing shifted views: 0.6x the time in
        Pyodide, 0.75x natively). Wide, shallow layers: the sum of kh*kw shifted, per-channel-scaled views
        channels-first, each inner loop along an image row; taps that are zero everywhere are skipped."""
        extent = dilated(self.kernel_size, self.dilation)
        x = pad_for(x, extent, self.strides, self.config["padding"])
        if self.multiplier > 1:
            x = np.repeat(x, self.multiplier, axis=3)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        out_h, out_w = (x.shape[1] - extent[0]) // sh + 1, (x.shape[2] - extent[1]) // sw + 1
        if x.shape[3] >= out_w:
            views = np.lib.stride_tricks.sliding_window_view(x, extent, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
            return np.einsum("nhwcij,ijc->nhwc", views, self.kernel)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
        y = np.zeros((*x.shape[:2], out_h, out_w), dtype=np.float32)
        product = np.empty_like(y)
        for i in range(kh):
            for j in range(kw):
                if self.kernel[i, j].any():
                    top, left = i * dh, j * dw
                    view = x[:, :, top : top + sh * (out_h - 1) + 1 : sh, left : left + sw * (out_w - 1) + 1 : sw]
                    np.multiply(view, self.kernel[i, j][:, None, None], out=product)
                    y += product
        return y.transpose(0, 2, 3, 1)

    def __call__(self, x):
        y = self.depthwise(x)
        return self.epilogue(y, y.shape)


class SeparableConv2D(DepthwiseConv2D):
    """Depthwise conv followed by a 1x1 pointwise conv (one matrix product)."""

    keras_type = "SeparableConv2D"
    weight_names = ("depthwise_kernel", "pointwise_kernel")

    def __init__(self, name, config, weights):
        weights = dict(weights, kernel=weights.get("depthwise_kernel"))
        super().__init__(name, config, weights)
        pointwise = self.weights["pointwise_kernel"]  # (1, 1, C*m, filters)
        self.kernel_t = np.ascontiguousarray(pointwise.reshape(pointwise.shape[2], -1).T)

    scale_outputs = Linear.scale_outputs  # a following batch norm scales the pointwise product's outputs

    def __call__(self, x):
        y = self.depthwise(x)
        n, h, w, c = y.shape
        return self.epilogue(matmul(y.reshape(-1, c), self.packed()), (n, h, w, -1))


class Dense(Linear):
    """Dense on the last axis, as a matrix product with the pre-transposed kernel."""

    keras_type = "Dense"
    weight_names = ("kernel",)

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        self.kernel_t = np.ascontiguousarray(self.weights["kernel"].T)

    def __call__(self, x):
        return self.epilogue(matmul(x.reshape(-1, x.shape[-1]), self.packed()), (*x.shape[:-1], -1))


class BatchNormalization(_ChannelAffine):
    """Inference-mode batch norm as a per-channel affine map; usually folded into the layer before."""

    keras_type = "BatchNormalization"

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        mean, variance = self.weights["moving_mean"], self.weights["moving_variance"]
        gamma = self.weights.get("gamma", np.ones_like(mean))
        beta = self.weights.get("beta", np.zeros_like(mean))
        self.scale = (gamma / np.sqrt(variance + np.float32(config["epsilon"]))).astype(np.float32)
        self.shift = (beta - mean * self.scale).astype(np.float32)


class _Pooling(Layer):
    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        self.pool_size = _pair(config["pool_size"])
        self.strides = _pair(config.get("strides") or config["pool_size"])

    def window_view(self, x, fill):
        x = pad_for(x, self.pool_size, self.strides, self.config["padding"], value=fill)
        return windows(x, self.pool_size, self.strides)


class MaxPooling2D(_Pooling):
    keras_type = "MaxPooling2D"

    def __call__(self, x):
        return self.window_view(x, -np.inf).max(axis=(3, 4))


class AveragePooling2D(_Pooling):
    """Average pooling; with 'same' padding the padded cells are not counted, as in Keras."""

    keras_type = "AveragePooling2D"

    def __call__(self, x):
        total = self.window_view(x, 0.0).sum(axis=(3, 4))
        if self.config["padding"] == "valid":
            return total / np.float32(self.pool_size[0] * self.pool_size[1])
        counts = self.window_view(np.ones((1, *x.shape[1:3], 1), np.float32), 0.0).sum(axis=(3, 4))
        return total / counts


class GlobalAveragePooling2D(Layer):
    keras_type = "GlobalAveragePooling2D"

    def __call__(self, x):
        return x.mean(axis=(1, 2), dtype=np.float32, keepdims=bool(self.config.get("keepdims")))


class GlobalMaxPooling2D(Layer):
    keras_type = "GlobalMaxPooling2D"

    def __call__(self, x):
        return x.max(axis=(1, 2), keepdims=bool(self.config.get("keepdims")))


def _edges(value, name: str, key: str) -> tuple:
    """ZeroPadding2D's padding or Cropping2D's cropping (n, (h, w) or ((top, bottom), (left, right))) as the last."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        pairs = tuple(_pair(item) for item in value)
        if all(len(pair) == 2 and all(isinstance(n, int) and n >= 0 for n in pair) for pair in pairs):
            return pairs
    raise ModelError(f"layer {name!r}: {key}={value!r} is not a count, (rows, columns) or ((top, bottom), (left, right))")


class _Edges(Layer):
    """A layer that adds or removes rows and columns at the edges: `edges` ((top, bottom), (left, right))."""

    edges_key, edges_default = "", 0

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        _edges(config.get(cls.edges_key, cls.edges_default), name, cls.edges_key)

    def __init__(self, name, config, weights):
        super().__init__(name, config, weights)
        self.edges = _edges(config.get(self.edges_key, self.edges_default), name, self.edges_key)


class ZeroPadding2D(_Edges):
    keras_type, edges_key, edges_default = "ZeroPadding2D", "padding", 1

    def __call__(self, x):
        return pad_edges(x, self.edges)


class Cropping2D(_Edges):
    keras_type, edges_key = "Cropping2D", "cropping"

    def __call__(self, x):
        (top, bottom), (left, right) = self.edges
        return x[:, top : x.shape[1] - bottom, left : x.shape[2] - right]


class Reshape(Layer):
    keras_type = "Reshape"

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        shape = config.get("target_shape")
        if not (isinstance(shape, (list, tuple)) and all(isinstance(n, int) and (n > 0 or n == -1) for n in shape)):
            raise ModelError(f"layer {name!r}: Reshape target_shape={shape!r} is not a list of sizes")

    def __call__(self, x):
        return x.reshape(x.shape[0], *self.config["target_shape"])


class Flatten(Layer):
    keras_type = "Flatten"

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class Dropout(Layer):
    keras_type = "Dropout"

    def __call__(self, x):
        return x


class Activation(Layer):
    keras_type = "Activation"
    activation_key = "activation"

    def activation_name(self):
        return self.config.get("activation", "linear")

    def __call__(self, x):
        return self.activation(x)


class ReLU(Layer):
    """Keras's ReLU: x from `threshold` up to `max_value`, negative_slope * (x - threshold) below it."""

    keras_type = "ReLU"

    def activation_name(self):
        """The named activation this ReLU is ("relu" or "relu6"), or None."""
        if self.config.get("negative_slope") or self.config.get("threshold"):
            return None
        return {None: "relu", 6: "relu6"}.get(self.config.get("max_value"))

    def __call__(self, x):
        if self.activation_name() is not None:
            return ACTIVATIONS[self.activation_name()](x)
        limit = self.config.get("max_value")
        slope, threshold = self.config.get("negative_slope") or 0.0, self.config.get("threshold") or 0.0
        y = np.where(x >= threshold, x, np.float32(slope) * (x - np.float32(threshold))).astype(np.float32)
        return y if limit is None else np.minimum(y, np.float32(limit))


class LeakyReLU(Layer):
    keras_type = "LeakyReLU"

    def __call__(self, x):
        slope = self.config.get("negative_slope", self.config.get("alpha", 0.3))  # alpha: Keras 2's name
        return np.where(x > 0, x, np.float32(slope) * x)


class Softmax(Layer):
    keras_type = "Softmax"

    @classmethod
    def check(cls, config, name):
        super().check(config, name)
        if config.get("axis", -1) not in (-1, [-1]):
            raise ModelError(f"layer {name!r}: Softmax only on the last axis is supported")

    def __call__(self, x):
        return _softmax(x)


class Add(Layer):
    keras_type = "Add"

    def __call__(self, *inputs):
        total = inputs[0] + inputs[1]
        for extra in inputs[2:]:
            total += extra
        return total


class Multiply(Layer):
    keras_type = "Multiply"

    def __call__(self, *inputs):
        product = inputs[0] * inputs[1]
        for extra in inputs[2:]:
            product *= extra
        return product


class Subtract(Layer):
    keras_type = "Subtract"

    def __call__(self, first, second):
        return first - second


class Average(Add):
    keras_type = "Average"

    def __call__(self, *inputs):
        return super().__call__(*inputs) / np.float32(len(inputs))


class Maximum(Layer):
    keras_type = "Maximum"

    def __call__(self, *inputs):
        return np.maximum.reduce(np.broadcast_arrays(*inputs))


class Minimum(Layer):
    keras_type = "Minimum"

    def __call__(self, *inputs):
        return np.minimum.reduce(np.broadcast_arrays(*inputs))


class Concatenate(Layer):
    keras_type = "Concatenate"

    def __call__(self, *inputs):
        return np.concatenate(inputs, axis=self.config.get("axis", -1))


LAYER_TYPES = {
    cls.keras_type: cls
    for cls in (
        Rescaling,
        InputPixels,
        Normalization,
        Conv2D,
        DepthwiseConv2D,
        SeparableConv2D,
        Dense,
        BatchNormalization,
        MaxPooling2D,
        AveragePooling2D,
        GlobalAveragePooling2D,
        GlobalMaxPooling2D,
        Flatten,
        Reshape,
        ZeroPadding2D,
        Cropping2D,
        Dropout,
        Activation,
        ReLU,
        LeakyReLU,
        Softmax,
        Add,
        Multiply,
        Subtract,
        Average,
        Maximum,
        Minimum,
        Concatenate,
    )
}
FOLDABLE = (Linear,)  # layer classes a following BatchNormalization, ReLU or Activation folds into
