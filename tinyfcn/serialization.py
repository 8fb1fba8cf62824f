"""`save` / `load`: nested dicts of arrays and JSON values in one `.npz`, written atomically;
`.safetensors` for flat dicts of arrays; PyTorch `.pth` files read without torch.

Layout of the file: every array is an npz entry named by its path in the dict
("model/conv1_1.weight"); the entry `__tinyfcn__` holds a JSON header with the
format version and the dict's structure, arrays replaced by {"__array__": name}.
Loading never unpickles (`allow_pickle=False`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from tinyfcn.fileio import atomic_write
from tinyfcn.tensor import Tensor
from tinyfcn.torchfile import read_torch_file

FORMAT = "tinyfcn-checkpoint"
VERSION = 1
HEADER = "__tinyfcn__"


def _flatten(obj, path: str, arrays: dict):
    """The JSON structure of `obj`, with arrays moved into `arrays`."""
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"cannot save an object array at {path!r}")
        arrays[path] = obj
        return {"__array__": path}
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be strings, got {key!r} at {path!r}")
        return {k: _flatten(v, f"{path}/{k}" if path else k, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save a {type(obj).__name__} at {path!r}: only arrays, dicts, "
                    f"lists and JSON values")


def _unflatten(node, arrays):
    if isinstance(node, dict):
        if set(node) == {"__array__"}:
            return arrays[node["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_unflatten(v, arrays) for v in node]
    return node


def save(obj: dict, path) -> None:
    """Save a dict of arrays, nested dicts and JSON values to `path` (.npz), atomically; a
    flat dict of arrays to a `.safetensors` path is written in that format."""
    if not isinstance(obj, dict):
        raise TypeError(f"save() takes a dict, got {type(obj).__name__}")
    path = Path(path)
    if path.suffix == ".safetensors":
        return _save_safetensors(obj, path)
    arrays: dict = {}
    structure = _flatten(obj, "", arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "structure": structure})
    arrays[HEADER] = np.frombuffer(header.encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": {...}} etc.


def _load_torch(path: Path) -> dict:
    state = read_torch_file(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    for key in WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def _save_safetensors(obj: dict, path: Path) -> None:
    from safetensors.numpy import save as encode
    bad = [k for k, v in obj.items() if not isinstance(v, (np.ndarray, Tensor))]
    if bad:
        raise TypeError(f"{path}: .safetensors holds a flat dict of arrays; {bad[:3]} are not "
                        f"arrays (save nested dicts and other values as .npz)")
    data = encode({k: np.ascontiguousarray(v.data if isinstance(v, Tensor) else v)
                   for k, v in obj.items()})
    atomic_write(path, lambda f: f.write(data))


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is truncated or not a .safetensors file ({e})") from None


def load(path) -> dict:
    """Load what `save` wrote (.npz or .safetensors), or a PyTorch checkpoint (.pth, .pt;
    read without torch, nothing in it run; a {"state_dict": ...}, {"model_state_dict": ...}
    or {"model": ...} wrapper is unwrapped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix in (".pth", ".pt"):
        return _load_torch(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            header = json.loads(npz[HEADER].tobytes().decode()) if HEADER in files else None
            arrays = {name: npz[name] for name in files if name != HEADER}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is truncated or not a tinyfcn checkpoint ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tinyfcn checkpoint (no {HEADER} header)")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint format version {header.get('version')} is not "
                         f"supported (this tinyfcn reads version {VERSION})")
    return _unflatten(header["structure"], arrays)
