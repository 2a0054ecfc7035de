"""The run folder (shared DESIGN.md, "Run folder"): one place per experiment holding its resolved
config, metric log, final metrics, checkpoints, plots, samples and a text log.

    runs/<recipe>/<YYYYmmdd-HHMMSS>-<id>/
      config.json  metrics.jsonl  metrics.json  checkpoints/  plots/  samples/  log.txt

Every write except the append-only logs is atomic; `metrics.jsonl` lines are flushed and fsync'd one at
a time, and `truncate_metrics` drops lines past the checkpoint a resumed run restarts from.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from learnloop.errors import UserError
from learnloop.utils.io import read_json, write_json, write_text


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | os.PathLike, recipe: str, config: dict) -> "RunFolder":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / recipe / f"{stamp}-{secrets.token_hex(3)}"
        for sub in ("checkpoints", "plots", "samples"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        run = cls(path)
        write_json(run.config_path, config)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
        run = cls(path)
        if not run.config_path.is_file():
            raise UserError(f"{path}: not a run folder (no config.json)")
        return run

    # paths ------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_log(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    # contents ---------------------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.config_path)

    def log(self, message: str) -> None:
        with open(self.path / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def append_metrics(self, row: dict) -> None:
        from learnloop.utils.io import _json_default

        with open(self.metrics_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict]:
        if not self.metrics_log.is_file():
            return []
        rows = []
        for line in self.metrics_log.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:        # a line cut by a crash: ignore it
                continue
        return rows

    def truncate_metrics(self, keep) -> None:
        """Rewrite metrics.jsonl keeping only rows for which `keep(row)` is true (atomic)."""
        rows = [r for r in self.history() if keep(r)]
        write_text(self.metrics_log, "".join(json.dumps(r) + "\n" for r in rows))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_path, metrics)

    def metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.is_file() else {}
