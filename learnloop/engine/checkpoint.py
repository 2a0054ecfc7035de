"""Checkpoints as one safetensors file: every tensor of a nested state (model, optimizer, scheduler,
RNG, step counters, callback state) is a named tensor, and the tree around them is JSON in the file's
metadata. Loading therefore never unpickles anything, and a file is written to a temporary name and
renamed, so a crash, Ctrl-C or a full disk leaves the previous checkpoint intact.

Tree encoding (JSON): a tensor becomes {"$t": "<key>"}; a dict with non-string keys (optimizer state is
keyed by int) becomes {"$d": [[key, value], ...]}; a tuple becomes {"$tuple": [...]}; a non-finite float
becomes {"$f": "nan" | "inf" | "-inf"}.

A checkpoint is untrusted input: `load_state` requires a regular file, bounds the tree's nesting, checks
the encoding (every "$t" names a stored tensor, ...) and checks a training state against
`learnloop.engine.schema.check_training_state` (counters in range, finite weights, ...).
`load_module_state` / `load_optimizer_state` load into a module / optimizer only what fits it. Every
failure is one `CorruptFileError` naming the file (and the field or tensor).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from learnloop.engine.schema import check_finite, check_training_state, corrupt, json_type
from learnloop.errors import CorruptFileError
from learnloop.utils.io import atomic_path, parse_json

_TREE_KEY = "learnloop_tree"
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_OPTIMIZER_BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "sum",
                      "acc_delta", "grad_avg", "prev", "step_size", "ax", "eta", "mu")


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


def _decode(obj, tensors: dict, path, at: str = ""):
    """The inverse of `_encode`, checking the encoding: a malformed tree is a CorruptFileError."""
    if isinstance(obj, list):
        return [_decode(v, tensors, path, f"{at}[{i}]") for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    if "$t" in obj:
        key = obj["$t"]
        if not isinstance(key, str) or key not in tensors:
            raise corrupt(path, at or "state", f"refers to a tensor the file does not hold ({json_type(key)})")
        return tensors[key]
    if "$d" in obj:
        pairs = obj["$d"]
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and (p[0] is None or isinstance(p[0], (str, int, float)))
                for p in pairs):
            raise corrupt(path, at or "state", "malformed {\"$d\": [[key, value], ...]} entry")
        return {k: _decode(v, tensors, path, f"{at}.{k}") for k, v in pairs}
    if "$tuple" in obj:
        if not isinstance(obj["$tuple"], list):
            raise corrupt(path, at or "state", "malformed {\"$tuple\": [...]} entry")
        return tuple(_decode(v, tensors, path, f"{at}[{i}]") for i, v in enumerate(obj["$tuple"]))
    if "$f" in obj:
        if obj["$f"] not in _FLOATS:
            raise corrupt(path, at or "state", "malformed {\"$f\": ...} entry (expected nan, inf or -inf)")
        return _FLOATS[obj["$f"]]
    return {k: _decode(v, tensors, path, f"{at}.{k}" if at else k) for k, v in obj.items()}


def _os_error(e: SafetensorError, path) -> Exception:
    """safetensors reports I/O failures as text ('... (os error 28)'); give them back their errno."""
    m = re.search(r"os error (\d+)", str(e))
    if m is None:
        return e
    code = int(m.group(1))
    return OSError(code, os.strerror(code), str(path))


def save_state(path, state: dict) -> Path:
    """Write a nested state atomically as safetensors + JSON tree (no pickle). A failed write (e.g. a full
    disk: an OSError naming `path`) leaves the previous file as it was."""
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
        try:
            save_file(tensors, str(tmp), metadata={_TREE_KEY: json.dumps(tree, allow_nan=False)})
        except SafetensorError as e:
            raise _os_error(e, path) from None
    return Path(path)


def load_state(path, require: tuple[str, ...] = ()) -> dict:
    """Read a file written by `save_state`. A missing, special, truncated or foreign file, a malformed
    tree, or a training state that fails `check_training_state` (e.g. NaN weights, a negative epoch)
    raises CorruptFileError. `require`: keys that must be present (TRAINING_STATE_KEYS for a Learner)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: checkpoint not found", path=path, reason="checkpoint not found") from None
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read ({e.strerror})", path=path, reason=e.strerror) from None
    if not stat.S_ISREG(st.st_mode):
        raise corrupt(path, "", "not a regular file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
            raise
        raise CorruptFileError(f"{path}: not a learnloop checkpoint or truncated ({type(e).__name__})", path=path,
                               reason="not a learnloop checkpoint or truncated") from None
    if _TREE_KEY not in meta:
        raise corrupt(path, "", "not a learnloop checkpoint (no state tree in its metadata)")
    tree = parse_json(meta[_TREE_KEY], path)
    return check_training_state(_decode(tree, tensors, path), path, require)


def load_module_state(module: torch.nn.Module, state, file, name: str = "model", strict: bool = True):
    """Load `state` (a state dict from checkpoint `file`) into `module`, refusing, with one line naming
    the file and the tensor, missing or unexpected keys (when `strict`), shapes that differ from the
    module's, and non-finite values. Returns the module."""
    if not isinstance(state, dict):
        raise corrupt(file, name, f"must be a state dict (an object of tensors), got {json_type(state)}")
    mine = module.state_dict()
    if strict:
        missing = [k for k in mine if k not in state]
        unexpected = [k for k in state if k not in mine]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
            raise corrupt(file, name, f"weights do not fit this model ({'; '.join(parts)}): a checkpoint of "
                                      f"another model or configuration?")
    for key, value in state.items():
        where = f"{name}.{key}"
        if key not in mine:
            continue
        if not isinstance(value, torch.Tensor):
            if key.endswith("_extra_state"):
                continue
            raise corrupt(file, where, f"must be a tensor, got {json_type(value)}")
        if isinstance(mine[key], torch.Tensor) and tuple(value.shape) != tuple(mine[key].shape):
            raise corrupt(file, where, f"weights do not fit this model (shape {tuple(value.shape)} in the file, "
                                       f"{tuple(mine[key].shape)} in the model: another configuration?)")
        check_finite(value, file, where)
    try:
        module.load_state_dict(state, strict=strict)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise corrupt(file, name, f"weights do not fit this model ({first[:160]})") from None
    return module


def load_optimizer_state(optimizer: torch.optim.Optimizer, state, file, name: str = "optimizer"):
    """Load an optimizer's state dict from checkpoint `file`, refusing one of another shape (parameter
    groups, per-parameter buffers) with one line, instead of failing at the next step. Returns it."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) or \
            not isinstance(state.get("param_groups"), list):
        raise corrupt(file, name, "must be an optimizer state dict (state and param_groups)")
    groups = optimizer.param_groups
    saved = state["param_groups"]
    if len(saved) != len(groups) or any(not isinstance(g, dict) or not isinstance(g.get("params"), list) or
                                        len(g["params"]) != len(mine["params"]) for g, mine in zip(saved, groups)):
        raise corrupt(file, name, "its parameter groups do not match this model's parameters")
    params = {pid: p for g, mine in zip(saved, groups) for pid, p in zip(g["params"], mine["params"])}
    for pid, buffers in state["state"].items():
        if pid not in params or not isinstance(buffers, dict):
            raise corrupt(file, f"{name}.state.{pid}", "does not belong to any parameter group")
        for key, t in buffers.items():
            if key in _OPTIMIZER_BUFFERS and isinstance(t, torch.Tensor) and t.dim() > 0 and \
                    tuple(t.shape) != tuple(params[pid].shape):
                raise corrupt(file, f"{name}.state.{pid}.{key}", f"has shape {tuple(t.shape)}, the parameter "
                                                                 f"has {tuple(params[pid].shape)}")
            if isinstance(t, torch.Tensor):
                check_finite(t, file, f"{name}.state.{pid}.{key}")
    try:
        optimizer.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise corrupt(file, name, f"does not fit this optimizer ({first[:160]})") from None
    return optimizer


def save_weights(path, module: torch.nn.Module) -> Path:
    """Just a module's weights (its state_dict), e.g. to ship a trained model."""
    return save_state(path, {"model": module.state_dict()})


def load_weights(path, module: torch.nn.Module, strict: bool = True) -> torch.nn.Module:
    state = load_state(path)
    if isinstance(state.get("model"), dict):
        sd, name = state["model"], "model"
    elif isinstance(state.get("modules"), dict) and isinstance(state["modules"].get("model"), dict):
        sd, name = state["modules"]["model"], "modules.model"
    else:
        raise corrupt(path, "", "holds no 'model' weights")
    return load_module_state(module, sd, path, name, strict=strict)
