"""Read a PyTorch state_dict (`.pth`) into NumPy arrays without PyTorch, and without running its code.

A `.pth` file is pickled Python. Unpickling calls whatever callables the file
names, so a plain `pickle.load` of a downloaded file runs arbitrary code. Here the
unpickler's `find_class` answers only the few names a state_dict of tensors needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the typed storage
classes) with harmless stand-ins, and refuses everything else with a
`TorchWeightsError` naming what the file asked for.

Both layouts `torch.save` has written are read:
- the zip layout (PyTorch >= 1.6): `<root>/data.pkl` plus one `<root>/data/<key>`
  entry of raw little-endian bytes per storage;
- the legacy layout: five pickles back to back (magic number, protocol version,
  system info, the state_dict, the storage keys), each storage's bytes after
  the last one, preceded by its element count as an int64.
"""

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
from rendernet.errors import RendernetError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchWeightsError(RendernetError, ValueError):
    """The file is not a PyTorch state_dict of plain tensors, or asks the unpickler for anything else."""


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor waiting for its storage's bytes: (storage key, offset, shape, strides in elements)."""

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, tuple(shape), tuple(strides)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchWeightsError(f"refusing to unpickle {module}.{name}: a state_dict of tensors never needs it")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TorchWeightsError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, count = pid[:5]
        return (str(key), storage_type.dtype, int(count))


def _unpickle(data) -> object:
    try:
        return _StateDictUnpickler(data if hasattr(data, "read") else io.BytesIO(data)).load()
    except TorchWeightsError:
        raise
    except Exception as error:  # a malformed pickle raises anything from EOFError to UnpicklingError
        raise TorchWeightsError(f"not a readable pickle: {type(error).__name__}: {error}") from None


def _materialise(state, storage_bytes) -> dict:
    """Replace every _TensorRef in the (flat) state_dict by a NumPy array."""
    if not isinstance(state, dict):
        raise TorchWeightsError(f"expected a state_dict (a dict of tensors), found {type(state).__name__}")
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise TorchWeightsError(f"entry {name!r} is not a tensor")
        key, dtype, count = ref.storage
        buffer = np.frombuffer(storage_bytes(key, dtype, count), dtype=dtype.newbyteorder("<"), count=count)
        view = np.lib.stride_tricks.as_strided(
            buffer[ref.offset :], shape=ref.shape, strides=[step * dtype.itemsize for step in ref.strides], writeable=False
        )
        arrays[name] = np.array(view, dtype=dtype)
    return arrays


def read_state_dict(path) -> dict:
    """{parameter name: NumPy array} of a `.pth` state_dict (zip or legacy layout)."""
    path = Path(path)
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
            if not pickles:
                raise TorchWeightsError(f"{path}: a zip without data.pkl is not a PyTorch file")
            root = pickles[0][: -len("data.pkl")]
            state = _unpickle(archive.read(pickles[0]))

            def storage_bytes(key, dtype, count):
                return archive.read(f"{root}data/{key}")[: count * dtype.itemsize]

            return _materialise(state, storage_bytes)
    stream = io.BytesIO(data)
    header = [_unpickle(stream) for _ in range(3)]
    if header[0] != LEGACY_MAGIC:
        raise TorchWeightsError(f"{path}: neither a zip nor a legacy PyTorch file (magic number {header[0]!r:.40})")
    state = _unpickle(stream)
    keys = _unpickle(stream)
    itemsizes = (
        {ref.storage[0]: ref.storage[1].itemsize for ref in state.values() if isinstance(ref, _TensorRef)}
        if isinstance(state, dict)
        else {}
    )
    offsets = {}
    for key in map(str, keys if isinstance(keys, list) else []):
        length = stream.read(8)
        if len(length) < 8 or key not in itemsizes:
            raise TorchWeightsError(f"{path}: storage {key} is missing or truncated")
        (count,) = struct.unpack("<q", length)
        offsets[key] = stream.tell()
        stream.seek(count * itemsizes[key], 1)

    def storage_bytes(key, dtype, count):
        if key not in offsets or offsets[key] + count * dtype.itemsize > len(data):
            raise TorchWeightsError(f"{path}: storage {key} is missing or truncated")
        return data[offsets[key] : offsets[key] + count * dtype.itemsize]

    return _materialise(state, storage_bytes)
