"""Typed recipe configs: nested dataclasses whose fields carry help text and valid ranges/choices.

Every recipe config nests the shared sections (`train` with `optim` and `schedule`, `data`; see
`learnloop.recipes.sections`), addressed with dotted keys: `--set train.optim.lr=3e-3`.
`apply_overrides(cfg, {"a.b": "3"})` converts each string to the field's type and checks it, raising a
one-line `UserError` that names the valid keys, the expected type, range or choices. A key from before the
sections existed (`lr`, `epochs`, `lr_g`) is answered with the key it moved to.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import fields, is_dataclass

from learnloop.errors import UserError
from learnloop.utils.params import param, section

__all__ = ["param", "section", "with_defaults", "apply_overrides", "validate", "parse_set", "to_dict",
           "from_dict", "describe", "flat_fields"]

# flat keys of the first releases -> where the value lives now (recipe configs add their own in MOVED)
MOVED = {
    "epochs": "train.epochs", "batch_size": "train.batch_size", "optimizer": "train.optim.name",
    "lr": "train.optim.lr", "weight_decay": "train.optim.weight_decay", "momentum": "train.optim.momentum",
    "schedule": "train.schedule.kind", "accumulate": "train.accumulate", "clip_grad_norm": "train.clip_grad_norm",
    "precision": "train.precision", "patience": "train.patience", "dataset": "data.dataset",
    "data_path": "data.path", "train_subset": "data.subset", "val_fraction": "data.val_fraction",
    "test_fraction": "data.test_fraction",
}


def _defaults_tree(overrides: dict) -> dict:
    """{"train.optim.lr": 1, "z": 2} or {"train": {"optim": {"lr": 1}}} -> the nested form."""
    tree: dict = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict):
            node.setdefault(leaf, {}).update(_defaults_tree(value))
        else:
            node[leaf] = value
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def with_defaults(base: type, name: str, **defaults) -> type:
    """A subclass of config dataclass `base` with other defaults (same fields, help and ranges): how one
    recipe's parts serve several named recipes. Sections take dicts: `train=dict(epochs=30, optim=dict(lr=3e-3))`
    (or dotted keys through `**{"train.optim.lr": 3e-3}`); what a dict leaves out keeps `base`'s default."""
    tree = _defaults_tree(defaults)
    changed = []
    hints = typing.get_type_hints(base)
    for f in fields(base):
        if f.name not in tree:
            continue
        value = tree.pop(f.name)
        if isinstance(value, dict):
            if f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{base.__name__}.{f.name} is not a section")
            start = f.default_factory()
            try:
                apply_overrides(start, _flatten(value))
            except UserError as e:
                raise TypeError(f"{name}: {e}") from None
            factory = functools.partial(apply_overrides, start, _flatten(value))
            changed.append((f.name, hints[f.name], dataclasses.field(default_factory=factory, metadata=f.metadata)))
        else:
            changed.append((f.name, hints[f.name], dataclasses.field(default=value, metadata=f.metadata)))
    if tree:
        raise TypeError(f"unknown {base.__name__} fields {sorted(tree)}")
    return dataclasses.make_dataclass(name, changed, bases=(base,))


def flat_fields(cfg, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (type, value, metadata)} for every leaf field, nested sections expanded."""
    out = {}
    hints = typing.get_type_hints(type(cfg))
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


def _shown(raw) -> str:
    """A user's value quoted for a one-line message (newlines and control characters escaped)."""
    text = repr(raw) if not isinstance(raw, str) else repr(raw)[1:-1]
    return f"'{text[:80]}{'...' if len(text) > 80 else ''}'"


def convert(key: str, raw, tp):
    """Convert a string (or a Python value) to type `tp`; a failure names the key and the type."""
    origin = typing.get_origin(tp)
    try:
        if origin is tuple:
            elem = typing.get_args(tp)[0]
            if isinstance(raw, str):
                parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
            elif isinstance(raw, (list, tuple)):
                parts = list(raw)
            else:
                raise TypeError
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
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError
                return int(raw)
            if isinstance(raw, int):
                return raw
            if isinstance(raw, str) and len(raw) <= 40:
                return int(raw.strip())
            raise ValueError
        if tp is float:
            if isinstance(raw, bool) or isinstance(raw, (dict, list, tuple)) or raw is None:
                raise ValueError
            if isinstance(raw, str) and len(raw) > 60:
                raise ValueError
            return float(raw)
        if tp is str:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        raise UserError(f"{key}: unsupported field type {tp}")
    raise UserError(f"{key}: expected {_type_name(tp)}, got {_shown(raw)}")


def check(key: str, value, meta) -> None:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    values = value if isinstance(value, tuple) else (value,)
    length = meta.get("length")
    if length is not None and len(values) != length:
        raise UserError(f"{key}: expected {length} comma-separated values, got {len(values)}")
    for v in values:
        if isinstance(v, float) and not math.isfinite(v) and meta.get("finite", True):
            raise UserError(f"{key}: must be a finite number, got {v}")
        if isinstance(v, str) and any(ord(c) < 32 for c in v) and choices is None:
            raise UserError(f"{key}: control characters are not allowed in {_shown(v)}")
        if choices and v not in choices:
            raise UserError(f"{key}: {_shown(v)} is not valid; choose from: {', '.join(map(str, choices))}")
        if lo is not None and v < lo:
            raise UserError(f"{key}: {v} is out of range (must be >= {lo})")
        if hi is not None and v > hi:
            raise UserError(f"{key}: {v} is out of range (must be <= {hi})")


def _unknown_key(cfg, key: str, leaves: dict) -> UserError:
    moved = {**MOVED, **getattr(cfg, "MOVED", {})}
    target = moved.get(key)
    if target is None:                          # a leaf of the same name in exactly one section
        same = [k for k in leaves if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        target = same[0] if len(same) == 1 else None
    if target in leaves:
        return UserError(f"unknown config key {_shown(key)}: it is now '{target}' (--set {target}=...)")
    return UserError(f"unknown config key {_shown(key)}; valid keys: {', '.join(leaves)}")


def apply_overrides(cfg, overrides: dict[str, object]):
    """Return a copy of `cfg` with dotted-key overrides applied and checked."""
    cfg = _deep_copy(cfg)
    leaves = flat_fields(cfg)
    for key, raw in overrides.items():
        if key not in leaves:
            raise _unknown_key(cfg, key, leaves)
        tp, _, meta = leaves[key]
        value = convert(key, raw, tp)
        check(key, value, meta)
        *parents, leaf = key.split(".")
        target = cfg
        for p in parents:
            target = getattr(target, p)
        setattr(target, leaf, value)
    return cfg


def _deep_copy(cfg):
    return dataclasses.replace(cfg, **{f.name: _deep_copy(getattr(cfg, f.name)) for f in fields(cfg)
                                       if is_dataclass(getattr(cfg, f.name))})


def validate(cfg) -> None:
    for key, (_, value, meta) in flat_fields(cfg).items():
        check(key, value, meta)


def parse_set(items) -> dict[str, str]:
    """['a.b=3', 'c=x'] -> {'a.b': '3', 'c': 'x'}; a malformed item is a UserError."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {_shown(item)}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data, source: str = "config.json"):
    """Rebuild a config from a run folder's resolved config (untrusted: every key and value is checked like
    `--set`; a config from before the nested sections names what to do)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: 'config' must be an object, got {type(data).__name__}")
    flat: dict = {}

    def walk(d, prefix="", depth=0):
        if depth > 8:
            raise UserError(f"{source}: config is nested too deeply at '{prefix}'")
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, prefix + str(k) + ".", depth + 1)
            else:
                flat[prefix + str(k)] = tuple(v) if isinstance(v, list) else v

    walk(data)
    cfg = cls()
    leaves = flat_fields(cfg)
    if any(k not in leaves and k in MOVED for k in flat):
        raise UserError(f"{source}: this run was written by an older learnloop (flat config keys); re-run it")
    try:
        return apply_overrides(cfg, flat)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


def describe(cfg) -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) rows for `learnloop show`."""
    rows = []
    for key, (tp, value, meta) in flat_fields(cfg).items():
        extra = ""
        if meta.get("choices"):
            extra = f" [{'|'.join(map(str, meta['choices']))}]"
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)
        rows.append((key, _type_name(tp), shown, (meta.get("help") or "") + extra))
    return rows
