"""Read PyTorch checkpoints (`torch.save` files) without torch, and without running them.

A `.pth` file is a pickle, and unpickling runs whatever functions the file names.
This reader admits only the handful that rebuild tensors and dicts, each replaced
by a function of its own; any other global is refused before anything is built.

Two layouts exist:

* the zip format (torch >= 1.6): `<name>/data.pkl` is the pickle, each storage
  a raw little-endian file `<name>/data/<key>`;
* the legacy format (2017-era files such as torchvision's `vgg16-397923af.pth`):
  one stream of pickles, the magic number, the protocol version, system info,
  the object, the list of storage keys, then each storage as an int64 element
  count followed by its raw bytes.

In both, a tensor is `_rebuild_tensor_v2(storage, offset, size, stride, ...)`,
with the storage a persistent reference ('storage', type, key, location, numel).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# the storage types a checkpoint may name, and the NumPy dtype each holds
STORAGE_DTYPES = {
    "HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16", "CharStorage": np.int8, "ShortStorage": np.int16,
    "IntStorage": np.int32, "LongStorage": np.int64, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        if self.dtype == "bfloat16":  # the top half of a float32: widen exactly
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
            return (halves << 16).view(np.float32)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))


class _StorageRef:
    """A storage named by the pickle; its bytes are read once all of the pickle is known."""

    def __init__(self, kind: _StorageType, key: str, numel: int):
        self.kind, self.key, self.numel = kind, key, numel


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _StorageRef):
            raise pickle.UnpicklingError("a tensor without a storage")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def build(self, storages: dict, path) -> np.ndarray:
        flat = storages[self.storage.key]
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)
                                 if n > 0)
        if any(s < 0 for s in self.stride) or self.offset < 0 or (
                0 not in self.size and last >= flat.size):
            raise ValueError(f"{path}: a tensor of size {self.size} reaches outside its "
                             f"storage of {flat.size} elements")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.size, [s * flat.itemsize for s in self.stride])
        return view.astype(flat.dtype.newbyteorder("="), copy=True)  # own, native memory


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data  # an nn.Parameter: its tensor


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path, self.storages = path, {}

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"{self.path}: refusing to load {module}.{name}: a checkpoint may hold only "
                f"tensors, dicts and lists (nothing in a file is ever run)")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"{self.path}: unsupported reference {pid[:1]!r}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"{self.path}: storage views of the pre-1.0 format "
                                         f"are not supported")
        if key not in self.storages:
            self.storages[key] = _StorageRef(kind, key, numel)
        return self.storages[key]


def _build(obj, storages, path):
    if isinstance(obj, _LazyTensor):
        return obj.build(storages, path)
    if isinstance(obj, dict):
        return {k: _build(v, storages, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_build(v, storages, path) for v in obj)
    return obj


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path)
        obj = unpickler.load()
        storages = {}
        for key, ref in unpickler.storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storages[key] = _checked(ref, raw[:ref.numel * ref.kind.itemsize], path)
    return obj, storages


def _read_legacy(path: Path):
    with open(path, "rb") as f:
        magic, protocol, info = (_Unpickler(f, path).load() for _ in range(3))
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise ValueError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        unpickler = _Unpickler(f, path)
        obj = unpickler.load()
        keys = _Unpickler(f, path).load()
        if not isinstance(keys, list):
            raise ValueError(f"{path}: damaged checkpoint (no storage list)")
        storages = {}
        for key in keys:
            ref = unpickler.storages.get(str(key))
            (count,) = struct.unpack("<q", f.read(8))
            if ref is None or count != ref.numel:
                raise ValueError(f"{path}: damaged checkpoint (storage {key} does not match "
                                 f"the pickle)")
            storages[ref.key] = _checked(ref, f.read(count * ref.kind.itemsize), path)
    return obj, storages


def _checked(ref: _StorageRef, raw: bytes, path) -> np.ndarray:
    if len(raw) != ref.numel * ref.kind.itemsize:
        raise ValueError(f"{path} is truncated (storage {ref.key} has {len(raw)} of "
                         f"{ref.numel * ref.kind.itemsize} bytes)")
    return ref.kind.decode(raw)


def read_torch_file(path) -> object:
    """The object a `torch.save` file holds, with every tensor as a NumPy array (bfloat16
    as float32). Raises ValueError naming the file if it is damaged, not a PyTorch file,
    or names anything other than tensors, dicts and lists."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj, storages = _read_zip(path)
        else:
            obj, storages = _read_legacy(path)
    except pickle.UnpicklingError as e:
        message = str(e)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    except (EOFError, struct.error, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError) as e:
        raise ValueError(f"{path} is truncated or not a PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from None
    missing = {t.storage.key for t in _lazy_tensors(obj)} - set(storages)
    if missing:
        raise ValueError(f"{path}: damaged checkpoint (storages {sorted(missing)} missing)")
    return _build(obj, storages, path)


def _lazy_tensors(obj):
    if isinstance(obj, _LazyTensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _lazy_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _lazy_tensors(v)
