"""Schema checks for what a run folder holds (shared DESIGN.md: "every file in it is read back as
untrusted input: schema-checked, one-line errors"), and for the run settings the CLI takes.

Each check returns the value it was given, or raises one `CorruptFileError` naming the file and the
field, e.g. `runs/x/config.json: seed: must be an integer in [0, 2**63-1], got -1`. Only the fields
learnloop reads are checked; unknown keys are allowed, so a newer learnloop can add some.

    config.json         object: recipe (non-empty string), seed (integer in [0, 2**63-1]), config (object);
                        optional track (string|null), device (string), versions (object),
                        git_commit (string|null), created (string)
    metrics.json,       object; optional status (string), wall_time_s (number|null)
    eval.json
    checkpoint state    object; modules {name: {key: tensor}} with finite floating tensors;
                        epoch in [0, MAX_EPOCH], step in [0, MAX_STEP]; history [object]; best number|null;
                        stop_reason string|null; improved boolean; optimizers/schedules/scaler/task/
                        callbacks objects;
                        rng {torch: uint8 tensor, numpy: {...}, python: [3, [625 ints], gauss]}
"""

from __future__ import annotations

import math

import torch

from learnloop.errors import CorruptFileError, UserError

MAX_SEED = 2 ** 63 - 1
MAX_EPOCH = 10 ** 7           # far beyond any schedule; a larger epoch count is a corrupt file
MAX_STEP = 10 ** 13
DEVICE_TYPES = ("cpu", "cuda", "mps")
TRAINING_STATE_KEYS = ("modules", "optimizers", "schedules", "scaler", "task", "callbacks", "rng", "epoch",
                       "step", "best", "history", "stop_reason")


def corrupt(file, field: str, problem: str) -> CorruptFileError:
    reason = f"{field}: {problem}" if field else problem
    return CorruptFileError(f"{file}: {reason}", path=file, reason=reason)


def json_type(v) -> str:
    """The JSON name of a value's type, for messages ('object', 'array', 'integer', ...)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, torch.Tensor):
        return "tensor"
    return type(v).__name__


def _join(field: str, key) -> str:
    return f"{field}.{key}" if field else str(key)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expect_object(v, file, field: str = "") -> dict:
    if not isinstance(v, dict):
        raise corrupt(file, field, f"must be a JSON object, got {json_type(v)}" if field else
                      f"must hold a JSON object, got {json_type(v)}")
    return v


def expect_int(v, file, field: str, lo: int, hi: int) -> int:
    if not is_int(v) or not lo <= v <= hi:
        got = repr(v) if is_number(v) else json_type(v)
        raise corrupt(file, field, f"must be an integer in [{lo}, {_bound(hi)}], got {got}")
    return v


def _bound(hi: int) -> str:
    return {MAX_SEED: "2**63-1"}.get(hi, str(hi))


def _expect(obj: dict, key: str, file, field: str, test, what: str, required: bool):
    if key not in obj:
        if required:
            raise corrupt(file, _join(field, key), "missing")
        return
    if not test(obj[key]):
        raise corrupt(file, _join(field, key), f"must be {what}, got {json_type(obj[key])}")


def _str(v) -> bool:
    return isinstance(v, str)


def _str_or_none(v) -> bool:
    return v is None or isinstance(v, str)


# --- config.json, metrics.json -------------------------------------------------------------------------
def check_run_config(data, file) -> dict:
    """config.json of a run folder."""
    obj = expect_object(data, file)
    _expect(obj, "recipe", file, "", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string",
            True)
    if "seed" not in obj:
        raise corrupt(file, "seed", "missing")
    expect_int(obj["seed"], file, "seed", 0, MAX_SEED)
    _expect(obj, "config", file, "", lambda v: isinstance(v, dict), "an object", True)
    _expect(obj, "track", file, "", _str_or_none, "a string or null", False)
    _expect(obj, "device", file, "", _str, "a string", False)
    _expect(obj, "versions", file, "", lambda v: isinstance(v, dict), "an object", False)
    _expect(obj, "git_commit", file, "", _str_or_none, "a string or null", False)
    _expect(obj, "created", file, "", _str, "a string", False)
    return obj


def check_metrics(data, file) -> dict:
    """metrics.json / eval.json: final metrics (an object; non-finite values are null or NaN)."""
    obj = expect_object(data, file)
    _expect(obj, "status", file, "", _str, "a string", False)
    _expect(obj, "wall_time_s", file, "", lambda v: v is None or is_number(v), "a number or null", False)
    return obj


def check_metric_row(row) -> bool:
    """A metrics.jsonl line worth keeping: an object whose epoch/step, if present, are numbers."""
    return isinstance(row, dict) and all(is_number(row[k]) for k in ("epoch", "step") if k in row)


# --- checkpoints ---------------------------------------------------------------------------------------
def nonfinite_count(t: torch.Tensor) -> int:
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return 0
    return int((~torch.isfinite(t)).sum())


def check_finite(t: torch.Tensor, file, field: str) -> None:
    bad = nonfinite_count(t)
    if bad:
        raise corrupt(file, field, f"{bad} of {t.numel()} values are NaN or infinite (refusing these weights)")


def check_module_tree(modules, file, field: str = "modules") -> dict:
    """{module name: {state-dict key: tensor}} with finite floating tensors."""
    expect_object(modules, file, field)
    for name, sd in modules.items():
        where = _join(field, name)
        expect_object(sd, file, where)
        for key, t in sd.items():
            if not isinstance(t, torch.Tensor):
                if str(key).endswith("_extra_state"):
                    continue
                raise corrupt(file, _join(where, key), f"must be a tensor, got {json_type(t)}")
            check_finite(t, file, _join(where, key))
    return modules


def check_rng(rng, file, field: str = "rng") -> dict:
    """The RNG states `learnloop.utils.seed.rng_state` writes (torch, NumPy MT19937, Python)."""
    expect_object(rng, file, field)
    t = rng.get("torch")
    if t is not None:
        n = torch.get_rng_state().numel()
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1 or t.numel() != n:
            raise corrupt(file, _join(field, "torch"), f"must be a uint8 tensor of {n} bytes")
    np_state = rng.get("numpy")
    if np_state is not None:
        where = _join(field, "numpy")
        expect_object(np_state, file, where)
        keys = np_state.get("keys")
        if not isinstance(keys, torch.Tensor) or keys.dim() != 1 or keys.numel() != 624 or \
                keys.is_floating_point() or (keys.numel() and (keys.min() < 0 or keys.max() >= 2 ** 32)):
            raise corrupt(file, _join(where, "keys"), "must be 624 unsigned 32-bit integers")
        expect_int(np_state.get("pos"), file, _join(where, "pos"), 0, 624)
        expect_int(np_state.get("has_gauss"), file, _join(where, "has_gauss"), 0, 1)
        if not is_number(np_state.get("gauss")):
            raise corrupt(file, _join(where, "gauss"), "must be a number")
    py = rng.get("python")
    if py is not None:
        where = _join(field, "python")
        ok = isinstance(py, (list, tuple)) and len(py) == 3 and py[0] == 3 and isinstance(py[1], (list, tuple)) \
            and len(py[1]) == 625 and all(is_int(v) and 0 <= v < 2 ** 32 for v in py[1]) and py[1][-1] <= 624 \
            and (py[2] is None or is_number(py[2]))
        if not ok:
            raise corrupt(file, where, "must be Python's random.getstate() (version 3, 625 integers, gauss)")
    return rng


def check_training_state(state, file, require: tuple[str, ...] = ()) -> dict:
    """A checkpoint's state (see the module docstring). Keys in `require` must be present; every other
    known key is checked when present. Learner.load_checkpoint passes TRAINING_STATE_KEYS."""
    obj = expect_object(state, file)
    for key in require:
        if key not in obj:
            raise corrupt(file, key, "missing")
    if "modules" in obj:
        check_module_tree(obj["modules"], file)
    if "epoch" in obj:
        expect_int(obj["epoch"], file, "epoch", 0, MAX_EPOCH)
    if "step" in obj:
        expect_int(obj["step"], file, "step", 0, MAX_STEP)
    if "history" in obj:
        hist = obj["history"]
        if not isinstance(hist, list):
            raise corrupt(file, "history", f"must be a list of objects, got {json_type(hist)}")
        for i, row in enumerate(hist):
            if not isinstance(row, dict):
                raise corrupt(file, f"history[{i}]", f"must be an object, got {json_type(row)}")
    if "best" in obj and not (obj["best"] is None or is_number(obj["best"])):
        raise corrupt(file, "best", f"must be a number or null, got {json_type(obj['best'])}")
    if "improved" in obj and not isinstance(obj["improved"], bool):
        raise corrupt(file, "improved", f"must be true or false, got {json_type(obj['improved'])}")
    if "stop_reason" in obj and not _str_or_none(obj["stop_reason"]):
        raise corrupt(file, "stop_reason", f"must be a string or null, got {json_type(obj['stop_reason'])}")
    for key in ("optimizers", "schedules", "task", "callbacks", "scaler"):
        if key in obj:
            expect_object(obj[key], file, key)
    for key in ("optimizers", "schedules"):
        for name, sub in obj.get(key, {}).items():
            expect_object(sub, file, _join(key, name))
    if "rng" in obj:
        check_rng(obj["rng"], file)
    return obj


# --- settings from the command line or a config.json ----------------------------------------------------
def check_seed(seed, what: str = "--seed") -> int:
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{what} must be an integer in [0, 2**63-1], got {seed!r}")
    return seed


def check_device(device, what: str = "--device") -> str:
    """A torch device this machine has: cpu, cuda or cuda:N (with CUDA), mps (on Apple silicon)."""
    if not isinstance(device, str) or not device.strip():
        raise UserError(f"{what} must be one of {', '.join(DEVICE_TYPES)} (e.g. cuda:0), got {device!r}")
    try:
        dev = torch.device(device.strip())
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise UserError(f"{what} must be one of {', '.join(DEVICE_TYPES)} (e.g. cuda:0), got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{what} {device!r}: CUDA is not available on this machine (this torch: "
                            f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{what} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"{what} {device!r}: MPS is not available on this machine; use --device cpu")
    return str(dev)


def finite_or_none(v):
    """A metric value for display: finite numbers as they are, anything else (null, nan, inf) None."""
    return v if is_number(v) and math.isfinite(v) else None
