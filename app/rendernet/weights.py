"""Compact weight storage: int8 with one float32 scale per output channel, or float16.

int8 rounding is symmetric: scale = max |w| / 127 over everything but the output
channel, q = round(w / scale). Output channels are a kernel's last axis (Conv2D
(kh, kw, in, out), Dense (in, out)) and, for DepthwiseConv2D (kh, kw, C, m), its
last two. Rounding a tensor that is already dequantized gives back the same int8
values and scales, so export can check that a model holds exactly the values it
stores, and Keras, TFLite and the NumPy pass all run the same numbers.
"""

import numpy as np

from .errors import ModelError

DTYPES = ("float32", "float16", "int8")


def channel_axes(layer_type: str) -> tuple:
    """The axes of a kernel that index output channels (kept apart when quantizing)."""
    return (-2, -1) if layer_type == "DepthwiseConv2D" else (-1,)


def quantize(values: np.ndarray, axes=(-1,)) -> tuple:
    """float32 array -> (int8 array, float32 scales shaped to broadcast against it)."""
    values = np.asarray(values, dtype=np.float32)
    keep = {axis % values.ndim for axis in axes}
    reduce = tuple(axis for axis in range(values.ndim) if axis not in keep)
    peak = np.abs(values).max(axis=reduce, keepdims=True)
    scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(values / scale), -127, 127).astype(np.int8), scale


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


def encode(values: np.ndarray, dtype: str, axes=(-1,)) -> dict:
    """One weight array -> {suffix: stored array}: {"": values} or, for int8, {"": q, ":scale": scales}."""
    if dtype == "int8":
        q, scale = quantize(values, axes)
        return {"": q, ":scale": scale}
    if dtype in ("float16", "float32"):
        return {"": np.asarray(values, dtype=dtype)}
    raise ModelError(f"unknown weight dtype {dtype!r} (choose from {', '.join(DTYPES)})")


def decode(arrays: dict, key: str, dtype: str) -> np.ndarray:
    """The float32 values of the array stored under `key` with `dtype` (the inverse of encode)."""
    if dtype not in DTYPES:
        raise ModelError(f"weights.npz: {key} has unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    stored = arrays[key]
    if str(stored.dtype) != dtype:
        raise ModelError(f"weights.npz: {key} is stored as {stored.dtype}, model.json says {dtype}")
    if dtype == "int8":
        scale = arrays[f"{key}:scale"]
        fits = scale.ndim == stored.ndim and all(s in (1, n) for s, n in zip(scale.shape, stored.shape, strict=True))
        if scale.dtype != np.float32 or not fits:
            raise ModelError(f"weights.npz: {key}:scale (shape {list(scale.shape)}) does not fit {key} {list(stored.shape)}")
        return dequantize(stored, scale)
    return stored.astype(np.float32)
