"""`save` / `load`: nested dicts of arrays and JSON values in one `.npz`, written atomically.

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
    """Save a dict of arrays, nested dicts and JSON values to `path` (.npz), atomically."""
    if not isinstance(obj, dict):
        raise TypeError(f"save() takes a dict, got {type(obj).__name__}")
    arrays: dict = {}
    structure = _flatten(obj, "", arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "structure": structure})
    arrays[HEADER] = np.frombuffer(header.encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_torch(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: reading a PyTorch file needs torch installed "
                         f"(pip install torch==2.13.0)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]  # the reference port's checkpoint layout
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else v for k, v in state.items()}


def load(path) -> dict:
    """Load what `save` wrote; a `.pth`/`.pt` PyTorch state dict loads too (needs torch)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix in (".pth", ".pt"):
        return _load_torch(path)
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
