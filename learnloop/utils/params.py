"""Config fields with help text and valid ranges: the one way every config dataclass declares a setting.

`lr: float = param(1e-3, "learning rate", min=0)` is a dataclass field whose metadata the config layer
(`learnloop.recipes.config`) uses to convert `--set` strings, check ranges and choices, and print `show`.
`section(OptimConfig, lr=3e-3)` nests a section (a dataclass of fields) with other defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field


def param(default, help: str = "", min=None, max=None, choices=None, finite: bool = True, length=None):
    """A config field. `finite=False` admits inf/nan (never wanted for a rate or a size); `length` fixes a
    tuple's length."""
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None,
            "finite": finite, "length": length}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


def section(cls: type, help: str = "", **defaults):
    """A nested config section of dataclass `cls`, e.g. `optim: OptimConfig = section(OptimConfig, lr=3e-3)`.
    Defaults are checked against the section's fields when the config is built."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}")
    return field(default_factory=lambda: copy.deepcopy(cls(**defaults)), metadata={"help": help, "section": True})
