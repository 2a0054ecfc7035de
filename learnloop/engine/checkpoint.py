"""Checkpoints as one safetensors file: every tensor of a nested state (model, optimizer, scheduler,
RNG, step counters, callback state) is a named tensor, and the tree around them is JSON in the file's
metadata. Loading therefore never unpickles anything, and a file is written to a temporary name and
renamed, so a crash or Ctrl-C leaves the previous checkpoint intact.

Tree encoding (JSON): a tensor becomes {"$t": "<key>"}; a dict with non-string keys (optimizer state is
keyed by int) becomes {"$d": [[key, value], ...]}; a tuple becomes {"$tuple": [...]}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from learnloop.errors import CorruptFileError
from learnloop.utils.io import atomic_path

_TREE_KEY = "learnloop_tree"


def _encode(obj, tensors: dict, prefix: str):
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        t = obj.detach().cpu()
        tensors[key] = t.contiguous()
        return {"$t": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {"$d": [[k, _encode(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$f": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{prefix}' in a checkpoint")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "$t" in obj:
            return tensors[obj["$t"]]
        if "$d" in obj:
            return {k: _decode(v, tensors) for k, v in obj["$d"]}
        if "$tuple" in obj:
            return tuple(_decode(v, tensors) for v in obj["$tuple"])
        if "$f" in obj:
            return float(obj["$f"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def save_state(path, state: dict) -> Path:
    """Write a nested state atomically as safetensors + JSON tree (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "")
    seen: dict[tuple, str] = {}
    for k, t in tensors.items():               # safetensors refuses tensors that share memory (tied weights)
        if t.numel() == 0:
            continue
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype)
        if ident in seen:
            tensors[k] = t.clone()
        else:
            seen[ident] = k
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_TREE_KEY: json.dumps(tree)})
    return Path(path)


def load_state(path) -> dict:
    """Read a file written by `save_state`; a truncated or foreign file raises CorruptFileError."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tree = json.loads(meta[_TREE_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as e:
        raise CorruptFileError(f"{path}: not a learnloop checkpoint or truncated ({type(e).__name__})") from None
    return _decode(tree, tensors)


def save_weights(path, module: torch.nn.Module) -> Path:
    """Just a module's weights (its state_dict), e.g. to ship a trained model."""
    return save_state(path, {"model": module.state_dict()})


def load_weights(path, module: torch.nn.Module, strict: bool = True) -> torch.nn.Module:
    state = load_state(path)
    sd = state["model"] if "model" in state else state["modules"]["model"]
    try:
        module.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        raise CorruptFileError(f"{path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    return module
