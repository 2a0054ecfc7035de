"""What several transformer recipes share: their `train` sections (AdamW, cosine schedule, clipped gradient
norm), data.json checks, history summaries and curves, and the checks of raw predictor input."""

from __future__ import annotations

from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import CorruptFileError, UserError
from learnloop.recipes.config import section
from learnloop.recipes.sections import TrainConfig
from learnloop.utils.plots import plot_curves


# --- config ------------------------------------------------------------------------------------------------
def adamw_cosine(help: str, *, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.01,
                 warmup: float = 0.05, **optim):
    """A `train` section: AdamW (`optim` adds e.g. betas), cosine schedule after a linear warm-up over the
    `warmup` fraction of the steps, global gradient norm clipped to 1."""
    return section(TrainConfig, help, epochs=epochs, batch_size=batch_size, clip_grad_norm=1.0,
                   optim=OptimConfig(name="adamw", lr=lr, weight_decay=weight_decay, **optim),
                   schedule=ScheduleConfig(kind="cosine", warmup=warmup))


# --- data.json (read back as untrusted) --------------------------------------------------------------------
def info_strings(info: dict, key: str, least: int, shape: str) -> list[str]:
    """info[key], checked to be a list of at least `least` strings (`shape` says so in the error)."""
    values = info.get(key)
    if not isinstance(values, list) or len(values) < least or not all(isinstance(t, str) for t in values):
        raise CorruptFileError(f"data.json: '{key}' must be {shape}")
    return values


def info_tokens(info: dict, key: str) -> list[str]:
    """A vocabulary (list of tokens) from a run's data info."""
    return info_strings(info, key, 4, "a list of at least 4 token strings")


def info_int(info: dict, key: str) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 63:
        raise CorruptFileError(f"data.json: '{key}' must be a non-negative integer")
    return value


# --- training history --------------------------------------------------------------------------------------
def best_value(history: list[dict], key: str, mode: str = "min"):
    """The best value of `key` over the history rows (None when no row has it)."""
    values = [r[key] for r in history if isinstance(r.get(key), (int, float))]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def epochs_trained(history: list[dict]) -> int:
    return max((int(r["epoch"]) for r in history if "time" in r and isinstance(r.get("epoch"), (int, float))),
               default=0)


def stage_curves(run, stage: str, name: str, title: str) -> None:
    """plots/<name>_curves.png from a stage's epoch rows (none when it has none)."""
    rows = run.history(stage)
    if any("time" in r for r in rows):
        plot_curves(rows, run.plots / f"{name}_curves.png", title=title)


# --- predictor input ---------------------------------------------------------------------------------------
def input_texts(raw: list[str], what: str) -> list[str]:
    for text in raw:
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"empty input; give {what}")
    return list(raw)


def check_length(text: str, n: int, unit: str, limit: int) -> None:
    if n > limit:
        raise UserError(f"{text[:40]!r}...: {n} {unit}; the model reads at most {limit}")


def check_chars(text: str, known, problem: str) -> None:
    """A UserError listing the characters of `text` not in `known` (`problem` says why they are unknown)."""
    unknown = sorted({c for c in text if c not in known})
    if unknown:
        raise UserError(f"{text[:60]!r}: character(s) {problem}: {', '.join(map(repr, unknown[:10]))}")
