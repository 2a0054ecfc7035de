"""Typed recipe configs: dataclasses whose fields carry help text and valid ranges/choices in metadata.

`apply_overrides(cfg, {"a.b": "3"})` converts each string to the field's type and checks it, raising a
one-line `UserError` that names the valid keys, the expected type, range or choices.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field, fields, is_dataclass

from learnloop.errors import UserError


def param(default, help: str = "", min=None, max=None, choices=None):
    """A config field: `lr: float = param(1e-3, "learning rate", min=0)`."""
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def with_defaults(base: type, name: str, **defaults) -> type:
    """A subclass of config dataclass `base` with other defaults (same fields, help and ranges): how one
    recipe function serves several named recipes."""
    changed = []
    for f in fields(base):
        if f.name in defaults:
            changed.append((f.name, f.type, field(default=defaults.pop(f.name), metadata=f.metadata)))
    if defaults:
        raise TypeError(f"unknown {base.__name__} fields {sorted(defaults)}")
    return dataclasses.make_dataclass(name, changed, bases=(base,))


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def flat_fields(cfg, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (type, value, metadata)} for every leaf field, nested dataclasses expanded."""
    out = {}
    hints = _hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        if is_dataclass(value):
            out.update(flat_fields(value, key + "."))
        else:
            out[key] = (hints[f.name], value, f.metadata)
    return out


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"comma-separated {typing.get_args(tp)[0].__name__}s"
    return getattr(tp, "__name__", str(tp))


def convert(key: str, raw, tp):
    """Convert a string (or a Python value) to type `tp`; a failure names the key and the type."""
    origin = typing.get_origin(tp)
    try:
        if origin is tuple:
            elem = typing.get_args(tp)[0]
            if isinstance(raw, str):
                parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
            else:
                parts = list(raw)
            return tuple(convert(key, p, elem) for p in parts)
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if tp is float:
            return float(raw)
        if tp is str:
            return str(raw)
    except (TypeError, ValueError):
        pass
    else:
        raise UserError(f"{key}: unsupported field type {tp}")
    raise UserError(f"{key}: expected {_type_name(tp)}, got '{raw}'")


def check(key: str, value, meta) -> None:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if choices and v not in choices:
            raise UserError(f"{key}: '{v}' is not valid; choose from: {', '.join(map(str, choices))}")
        if lo is not None and v < lo:
            raise UserError(f"{key}: {v} is out of range (must be >= {lo})")
        if hi is not None and v > hi:
            raise UserError(f"{key}: {v} is out of range (must be <= {hi})")


def apply_overrides(cfg, overrides: dict[str, object]):
    """Return a copy of `cfg` with dotted-key overrides applied and checked."""
    cfg = dataclasses.replace(cfg)
    leaves = flat_fields(cfg)
    for key, raw in overrides.items():
        if key not in leaves:
            raise UserError(f"unknown config key '{key}'; valid keys: {', '.join(leaves)}")
        tp, _, meta = leaves[key]
        value = convert(key, raw, tp)
        check(key, value, meta)
        *parents, leaf = key.split(".")
        target = cfg
        for p in parents:
            child = dataclasses.replace(getattr(target, p))
            setattr(target, p, child)
            target = child
        setattr(target, leaf, value)
    return cfg


def validate(cfg) -> None:
    for key, (_, value, meta) in flat_fields(cfg).items():
        check(key, value, meta)


def parse_set(items) -> dict[str, str]:
    """['a.b=3', 'c=x'] -> {'a.b': '3', 'c': 'x'}; a malformed item is a UserError."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Rebuild a config from config.json (unknown keys are an error: the file was not ours)."""
    cfg = cls()
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, prefix + k + ".")
            else:
                flat[prefix + k] = tuple(v) if isinstance(v, list) else v

    walk(data)
    return apply_overrides(cfg, flat)


def describe(cfg) -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) rows for --help style listings."""
    rows = []
    for key, (tp, value, meta) in flat_fields(cfg).items():
        extra = ""
        if meta.get("choices"):
            extra = f" [{'|'.join(map(str, meta['choices']))}]"
        rows.append((key, _type_name(tp), repr(value), (meta.get("help") or "") + extra))
    return rows
