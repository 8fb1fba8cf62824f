"""`save` / `load`: nested dicts of arrays and JSON values in one `.npz`, written atomically;
`.safetensors` for flat dicts of arrays; PyTorch `.pth` files read without torch.

Layout of the file (an ordinary `.npz`): the arrays are entries a0, a1, ...; the
entry `__tinyfcn__` holds a JSON header with the format version and the dict's
structure, dicts as {"d": {...}}, arrays as {"a": i}, lists and JSON values as
themselves (tuples load back as lists). Loading never unpickles: it reads only the
entries the header names, each once (a header may name one array many times: the
places share it) and each checked against the size its header declares.

`.safetensors` is read here too (an 8-byte header length, a JSON header of name ->
dtype, shape and byte range, then the bytes), so that bfloat16 widens to float32 as
in `.pth` files and every range is checked before it is read.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tinyfcn.fileio import atomic_write
from tinyfcn.tensor import Tensor
from tinyfcn.torchfile import read_torch_file

FORMAT = "tinyfcn-checkpoint"
VERSION = 2          # 1: arrays named by their path in the dict, dicts untagged (still read)
HEADER = "__tinyfcn__"
MAX_HEADER_BYTES = 16 << 20  # the JSON structure of a checkpoint: kilobytes in practice
MAX_DEPTH = 64
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}


def _flatten(obj, where: str, arrays: list, depth: int = 0):
    """The JSON structure of `obj`: arrays become {"a": index into `arrays`}, dicts
    {"d": {...}}, lists and tuples [...], other values themselves. Every dict is tagged, so
    no user dict can pass for an array and no key can collide with another."""
    if depth > MAX_DEPTH:
        raise ValueError(f"cannot save {where!r}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"cannot save an object array at {where!r}")
        arrays.append(obj)
        return {"a": len(arrays) - 1}
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be strings, got {key!r} at {where!r}")
        return {"d": {k: _flatten(v, f"{where}/{k}", arrays, depth + 1) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{where}/{i}", arrays, depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save a {type(obj).__name__} at {where!r}: only arrays, dicts, "
                    f"lists and JSON values")


def _unflatten(node, read_array, version: int, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, list):
        return [_unflatten(v, read_array, version, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    if version == 1:  # {"__array__": path} or a plain dict
        if set(node) == {"__array__"}:
            return read_array(node["__array__"])
        return {k: _unflatten(v, read_array, version, depth + 1) for k, v in node.items()}
    if set(node) == {"a"} and isinstance(node["a"], int):
        return read_array(f"a{node['a']}")
    if set(node) == {"d"} and isinstance(node["d"], dict):
        return {k: _unflatten(v, read_array, version, depth + 1) for k, v in node["d"].items()}
    raise ValueError(f"malformed header node {str(node)[:60]}")


SAVE_SUFFIXES = (".npz", ".safetensors")


def save(obj: dict, path) -> None:
    """Save a dict of arrays, nested dicts and JSON values to `path` (.npz), atomically; a
    flat dict of arrays to a `.safetensors` path is written in that format. Any other
    suffix (.pth: PyTorch files are read, never written) is refused."""
    if not isinstance(obj, dict):
        raise TypeError(f"save() takes a dict, got {type(obj).__name__}")
    path = Path(path)
    if path.suffix.lower() not in SAVE_SUFFIXES:
        raise ValueError(f"cannot save {path}: tinyfcn writes {' and '.join(SAVE_SUFFIXES)} "
                         f"files (the suffix says which)")
    if path.suffix.lower() == ".safetensors":
        return _save_safetensors(obj, path)
    arrays: list = []
    structure = _flatten(obj, "", arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "structure": structure})
    entries = {f"a{i}": a for i, a in enumerate(arrays)}  # names no savez argument has
    entries[HEADER] = np.frombuffer(header.encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **entries))


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": {...}} etc.


def unwrap_state_dict(state: dict) -> dict:
    """The state dict inside a {"state_dict": ...}, {"model_state_dict": ...} or {"model": ...}
    wrapper (a tinyfcn training checkpoint is the last kind); `state` itself otherwise."""
    for key in WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def _load_torch(path: Path) -> dict:
    state = read_torch_file(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return unwrap_state_dict(state)


def _save_safetensors(obj: dict, path: Path) -> None:
    from safetensors.numpy import save as encode
    bad = [k for k, v in obj.items() if not isinstance(v, (np.ndarray, Tensor))]
    if bad:
        raise TypeError(f"{path}: .safetensors holds a flat dict of arrays; {bad[:3]} are not "
                        f"arrays (save nested dicts and other values as .npz)")
    data = encode({k: np.ascontiguousarray(v.data if isinstance(v, Tensor) else v)
                   for k, v in obj.items()})
    atomic_write(path, lambda f: f.write(data))


# safetensors dtype -> NumPy dtype (little-endian); BF16 is widened to float32
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
                      "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                      "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _load_safetensors(path: Path) -> dict:
    with open(path, "rb") as f:
        index, data_start = _safetensors_index(f, path)
        tensors = {}
        for name, dtype, shape, begin, stop in index:
            f.seek(data_start + begin)
            array = np.frombuffer(f.read(stop - begin), SAFETENSORS_DTYPES[dtype])
            if dtype == "BF16":  # the top half of a float32: widen exactly
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array.astype(array.dtype.newbyteorder("=")).reshape(shape)
    return tensors


def _safetensors_index(f, path) -> tuple[list, int]:
    """(name, dtype, shape, first byte, end byte) of every tensor, in file order, and where
    the data starts; checked before anything is read: dtypes tinyfcn reads, and byte ranges
    that tile the data exactly, as the format requires (no two names share bytes)."""
    size = os.fstat(f.fileno()).st_size
    (header_size,) = struct.unpack("<Q", f.read(8))
    if header_size > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(f"{path} is truncated or not a .safetensors file (a header of "
                         f"{header_size} bytes in a file of {size})")
    header = json.loads(f.read(header_size))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the .safetensors header is not a dict")
    header.pop("__metadata__", None)
    index, end = [], 0
    for begin, stop, name, entry in sorted((*_byte_range(k, v), k, v) for k, v in header.items()):
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {dtype}, which tinyfcn does not read "
                             f"(it reads {', '.join(SAFETENSORS_DTYPES)})")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise ValueError(f"tensor {name!r} has shape {shape!r}")
        nbytes = np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize * int(np.prod(shape, dtype=object))
        if begin != end or stop - begin != nbytes:
            raise ValueError(f"tensor {name!r}: bytes {begin}..{stop} do not follow the "
                             f"previous tensor's (ending at {end}) or do not hold {dtype} "
                             f"{shape}")
        index.append((name, dtype, shape, begin, stop))
        end = stop
    if 8 + header_size + end != size:
        raise ValueError(f"{path} is truncated or has trailing bytes (its header describes "
                         f"{end} bytes of data)")
    return index, 8 + header_size


def _byte_range(name, entry) -> tuple:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"tensor {name!r} has no valid data_offsets")
    return tuple(offsets)


def load(path) -> dict:
    """Load what `save` wrote (.npz or .safetensors), or a PyTorch checkpoint (.pth, .pt;
    read without torch, nothing in it run; a {"state_dict": ...}, {"model_state_dict": ...}
    or {"model": ...} wrapper is unwrapped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file")
    suffix = path.suffix.lower()  # WEIGHTS.PTH is a .pth file
    if suffix in (".pth", ".pt"):
        return _load_torch(path)
    try:
        if suffix == ".safetensors":
            return _load_safetensors(path)
        with zipfile.ZipFile(path) as archive:
            header = _read_header(archive, path)
            version = header.get("version")
            if version not in (1, VERSION):
                raise ValueError(f"{path}: checkpoint format version {version} is not "
                                 f"supported (this tinyfcn reads versions 1 and {VERSION})")
            arrays: dict = {}  # each entry read once, however often the header names it

            def read_array(name):
                if name not in arrays:
                    arrays[name] = _read_entry(archive, name, path)
                return arrays[name]

            state = _unflatten(header["structure"], read_array, version)
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a dict (a "
                             f"checkpoint or state dict)")
        return state
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a tinyfcn checkpoint (not an .npz file)") from None
    except (EOFError, OSError, KeyError, RecursionError, zlib.error, struct.error,
            UnicodeDecodeError) as e:
        raise ValueError(f"{path} is truncated or damaged ({type(e).__name__}: {e})") from None
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(str(path)) else
                         f"{path}: damaged checkpoint ({message})") from None


def _read_header(archive: zipfile.ZipFile, path) -> dict:
    name = f"{HEADER}.npy"
    if name not in archive.namelist():
        raise ValueError(f"{path} is not a tinyfcn checkpoint (no {HEADER} header)")
    header = json.loads(_read_entry(archive, HEADER, path, MAX_HEADER_BYTES).tobytes().decode())
    if not isinstance(header, dict) or header.get("format") != FORMAT or "structure" not in header:
        raise ValueError(f"{path} is not a tinyfcn checkpoint (no {HEADER} header)")
    return header


def _read_entry(archive: zipfile.ZipFile, name: str, path, limit=None) -> np.ndarray:
    """One array of the archive, after checking that the size its .npy header declares is
    what the entry holds (a forged shape must not make us allocate it)."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"{path}: the header names an array {name!r} the file does not "
                         f"hold") from None
    if limit is not None and info.file_size > limit:
        raise ValueError(f"{path}: entry {name} is {info.file_size} bytes, more than "
                         f"{limit}")
    with archive.open(info) as f:
        read_header = NPY_HEADER_READERS.get(np.lib.format.read_magic(f))
        if read_header is None:
            raise ValueError(f"{path}: entry {name} is not an .npy array this NumPy reads")
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{path}: entry {name} holds Python objects")
        if any(n < 0 for n in shape):
            raise ValueError(f"{path}: entry {name} declares a negative size {shape}")
        expected = f.tell() + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if expected != info.file_size:
            raise ValueError(f"{path}: entry {name} declares {shape} {dtype} but holds "
                             f"{info.file_size} bytes")
        data = f.read()
    array = np.frombuffer(data, dtype=dtype).copy()
    return array.reshape(shape, order="F" if fortran else "C")
