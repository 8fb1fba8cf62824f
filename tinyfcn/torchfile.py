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

The file is untrusted input, so the work and memory it can cause are bounded by
what it legitimately holds:

* every opcode of a pickle is walked (`pickletools.genops`) before it is run: an
  unknown opcode, or a length beyond the end of the data, fails there (the C unpickler
  would allocate a declared 1 TiB string before finding it missing);
* storage sizes are checked against the bytes the file holds before anything is read;
* every tensor is a read-only view of its storage, as `torch.load` shares storages:
  views of one storage cost nothing, and an expanded tensor (stride 0) stays a view;
* what the pickle shares (its memo) stays shared, cycles and deep nesting are refused;
* the objects the reader hands the pickle are immutable (named tuples), so no opcode
  (BUILD) can change how this or a later file is read.
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a large model is a few MB
MAX_DEPTH = 64               # nesting of dicts and lists (a state dict needs 2 or 3)

# the storage types a checkpoint may name, and the NumPy dtype each holds
STORAGE_DTYPES = {
    "HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16", "CharStorage": np.int8, "ShortStorage": np.int16,
    "IntStorage": np.int32, "LongStorage": np.int64, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType(NamedTuple):
    name: str

    @property
    def itemsize(self) -> int:
        dtype = STORAGE_DTYPES[self.name]
        return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        dtype = STORAGE_DTYPES[self.name]
        if dtype == "bfloat16":  # the top half of a float32: widen exactly
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
            return (halves << 16).view(np.float32)
        little = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return little.astype(little.dtype.newbyteorder("="), copy=False)


class _StorageRef(NamedTuple):
    """A storage named by the pickle; its bytes are read once all of the pickle is known."""
    kind: _StorageType
    key: str
    numel: int


class _LazyTensor(NamedTuple):
    """`_rebuild_tensor_v2`'s arguments, checked when the storages are there."""
    storage: object
    offset: object
    size: object
    stride: object

    def build(self, storages: dict, path) -> np.ndarray:
        if not isinstance(self.storage, _StorageRef):
            raise ValueError(f"{path}: a tensor without a storage")
        if self.storage.key not in storages:
            raise ValueError(f"{path}: damaged checkpoint (storage {self.storage.key!r} "
                             f"missing)")
        flat = storages[self.storage.key]
        offset, size, stride = _index(self.offset), _indices(self.size), _indices(self.stride)
        if None in (offset, size, stride) or len(size) != len(stride):
            raise ValueError(f"{path}: damaged checkpoint (a tensor of size {self.size!r}, "
                             f"stride {self.stride!r}, offset {self.offset!r})")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset > flat.size or (0 not in size and last >= flat.size):
            raise ValueError(f"{path}: a tensor of size {size} reaches outside its storage "
                             f"of {flat.size} elements")
        # a view, never a copy: an expanded tensor (stride 0) stays as small as its storage
        return np.lib.stride_tricks.as_strided(
            flat[offset:], size, [s * flat.itemsize for s in stride], writeable=False)


def _index(value):
    """`value` if it is a non-negative int (not a bool), else None."""
    return value if type(value) is int and value >= 0 else None


def _indices(values):
    if not isinstance(values, tuple) or len(values) > 32:
        return None
    values = tuple(_index(v) for v in values)
    return None if None in values else values


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data  # an nn.Parameter: its tensor


class _Call(NamedTuple):
    """An allowed function as an object no opcode can change (BUILD on a plain function
    could set its defaults for every later load)."""
    function: Callable

    def __call__(self, *args):
        return self.function(*args)


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _Call(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor"): _Call(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
    ("collections", "OrderedDict"): collections.OrderedDict,  # a built-in type: immutable
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path, storages: dict):
        super().__init__(file)
        self.path, self.storages = path, storages

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"{self.path}: refusing to load {module}.{name}: a checkpoint may hold only "
                f"tensors, dicts and lists (nothing in a file is ever run)")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _index(pid[4]) is not None):
            raise pickle.UnpicklingError(f"{self.path}: unsupported storage reference")
        kind, key, numel = pid[1], pid[2], pid[4]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"{self.path}: storage views of the pre-1.0 format "
                                         f"are not supported")
        known = self.storages.setdefault(key, _StorageRef(kind, key, numel))
        if known != (kind, key, numel):
            raise pickle.UnpicklingError(f"{self.path}: storage {key!r} is named with two "
                                         f"types or sizes")
        return known


# opcodes that add to the container below their arguments rather than make a new object
_FILLING = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}


def _walk(stream, path) -> None:
    """Read every opcode of the next pickle without running it, simulating its stack with
    each object's nesting depth. That reads every argument, so an unknown opcode or a
    length past the end fails here; and nesting past MAX_DEPTH (the C unpickler would
    hash a million-deep tuple used as a key, recursing until it crashes) or a memo index
    beyond the opcodes seen (the unpickler grows its memo table to the index) is refused
    before the unpickler allocates anything."""
    stack, memo, mark = [], {}, object()
    for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
        if op.name in _MEMO_PUTS or op.name == "MEMOIZE":
            index = len(memo) if op.name == "MEMOIZE" else arg
            if not 0 <= index <= count:
                raise ValueError(f"{path}: damaged checkpoint (memo index {index})")
            memo[index] = stack[-1] if stack and stack[-1] is not mark else 0
            continue
        if op.name in _MEMO_GETS:
            stack.append(memo.get(arg, 0))
            continue
        if op.name == "DUP":
            stack.append(stack[-1] if stack else 0)
            continue
        before = list(op.stack_before)
        popped = []
        if pickletools.markobject in before:
            while stack and stack[-1] is not mark:
                popped.append(stack.pop())
            if stack:
                stack.pop()
            before = before[:before.index(pickletools.markobject)]
        below = [stack.pop() for _ in before if stack and stack[-1] is not mark]
        for item in op.stack_after:
            if item is pickletools.markobject:
                stack.append(mark)
                continue
            if op.name in _FILLING and below:  # the container keeps its place
                depth = max(below[-1], 1 + max([*popped, *below[:-1]], default=-1))
            else:
                depth = 1 + max([*popped, *below], default=-1)
            if depth > MAX_DEPTH:
                raise ValueError(f"{path}: damaged checkpoint (nested deeper than "
                                 f"{MAX_DEPTH})")
            stack.append(depth)


def _load_pickle(stream, path, storages: dict):
    """The next pickle of `stream` (in memory or mapped, so a read never exceeds the data),
    walked first (see `_walk`)."""
    start = stream.tell()
    _walk(stream, path)
    stream.seek(start)
    return _Unpickler(stream, path, storages).load()


def _materialize(root, storages: dict, path):
    """`root` with every tensor an array. An object the pickle shares stays one object
    (30 nested lists that each hold the next twice are 600 bytes with 2^30 paths);
    cycles and nesting deeper than MAX_DEPTH are refused."""
    built, visiting = {}, set()

    def build(obj, depth):
        if obj is None or isinstance(obj, (str, bytes, int, float)):
            return obj
        if id(obj) in built:
            return built[id(obj)]
        if id(obj) in visiting:
            raise ValueError(f"{path}: damaged checkpoint (an object contains itself)")
        if depth > MAX_DEPTH:
            raise ValueError(f"{path}: damaged checkpoint (nested deeper than {MAX_DEPTH})")
        visiting.add(id(obj))
        if isinstance(obj, _LazyTensor):
            result = obj.build(storages, path)
        elif isinstance(obj, dict):
            bad = [k for k in obj if not isinstance(k, (str, int, float))]
            if bad:
                raise ValueError(f"{path}: a dict key of type {type(bad[0]).__name__}")
            result = {k: build(v, depth + 1) for k, v in obj.items()}
        elif type(obj) in (list, tuple):
            result = type(obj)(build(v, depth + 1) for v in obj)
        else:
            raise ValueError(f"{path}: a checkpoint may hold only tensors, dicts, lists and "
                             f"plain values, not a {type(obj).__name__}")
        visiting.discard(id(obj))
        built[id(obj)] = result
        return result

    return build(root, 0)


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if (f"{prefix}byteorder" in names
                and archive.open(f"{prefix}byteorder").read(16) != b"little"):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        compressed = [i.filename for i in archive.infolist()
                      if i.compress_type != zipfile.ZIP_STORED]
        if compressed:  # torch.save stores; a compressed entry could inflate to anything
            raise ValueError(f"{path}: {compressed[0]} is compressed, which torch.save never "
                             f"writes (a damaged or forged checkpoint)")
        info = archive.getinfo(pickles[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"{path}: {pickles[0]} is {info.file_size} bytes, more than "
                             f"a checkpoint's pickle ({MAX_PICKLE_BYTES})")
        refs: dict = {}
        obj = _load_pickle(io.BytesIO(archive.read(info)), path, refs)
        storages = {}
        for key, ref in refs.items():
            info = archive.getinfo(f"{prefix}data/{key}")
            size = ref.numel * ref.kind.itemsize
            if info.file_size != size:  # checked before anything is inflated
                raise ValueError(f"{path}: storage {key} holds {info.file_size} bytes, the "
                                 f"pickle says {ref.numel} elements ({size} bytes)")
            storages[key] = ref.kind.decode(archive.open(info).read(size))
    return obj, storages


def _read_legacy(path: Path):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic, protocol, info = (_load_pickle(data, path, {}) for _ in range(3))
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise ValueError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        refs: dict = {}
        obj = _load_pickle(data, path, refs)
        keys = _load_pickle(data, path, {})
        if not isinstance(keys, list):
            raise ValueError(f"{path}: damaged checkpoint (no storage list)")
        storages = {}
        for key in keys:
            ref = refs.get(key)
            (count,) = struct.unpack("<q", data.read(8))
            if ref is None or count != ref.numel:
                raise ValueError(f"{path}: damaged checkpoint (storage {key} does not match "
                                 f"the pickle)")
            size = count * ref.kind.itemsize
            if size > len(data) - data.tell():
                raise ValueError(f"{path} is truncated (storage {key} needs {size} bytes, "
                                 f"{len(data) - data.tell()} are left)")
            storages[key] = ref.kind.decode(data.read(size))
    return obj, storages


def read_torch_file(path) -> object:
    """The object a `torch.save` file holds, with every tensor a read-only NumPy view of
    its storage (bfloat16 widened to float32; copy an array to change it). Raises
    ValueError naming the file if it is damaged, not a PyTorch file, or names anything
    other than tensors, dicts and lists."""
    path = Path(path)
    try:
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path} is empty")
        obj, storages = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
        return _materialize(obj, storages, path)
    except (pickle.UnpicklingError, ValueError) as e:
        message = str(e)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    except (EOFError, struct.error, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError, OverflowError) as e:
        raise ValueError(f"{path} is truncated or not a PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from None
