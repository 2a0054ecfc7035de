"""The run folder (shared DESIGN.md, "Run folder"): one place per experiment holding its resolved
config, metric log, final metrics, checkpoints, plots, samples and a text log.

    runs/<recipe>/<YYYYmmdd-HHMMSS>-<id>/
      config.json  metrics.jsonl  metrics.json  checkpoints/  plots/  samples/  log.txt

Every write except the append-only logs is atomic (learnloop.utils.io); `metrics.jsonl` lines are
flushed and fsync'd one at a time, and on resume `sync_stage_rows` makes a stage's lines agree with the
checkpoint it restarts from (appending the rows a kill left out; dropping the ones past it, or from
another attempt, with one atomic rewrite). JSON is written strictly: a non-finite metric is written as
null, and log.txt says so.

Every file is read back as untrusted input: config.json and metrics.json are schema-checked
(learnloop.engine.schema), metrics.jsonl lines that are cut, not objects or not UTF-8 are skipped, and
nothing that is not a regular file (a FIFO, a device) is ever opened.
"""

from __future__ import annotations

import math
import os
import secrets
import stat
import time
from pathlib import Path

import torch

from learnloop.engine.schema import check_metric_row, check_metrics, check_run_config, corrupt
from learnloop.errors import UserError
from learnloop.utils.io import (
    MAX_JSON_DEPTH,
    dumps_strict,
    is_temp_name,
    json_depth_exceeds,
    open_regular,
    read_json,
    with_filename,
    write_json,
    write_text,
)

MAX_METRICS_LOG_BYTES = 2 ** 30      # metrics.jsonl: a line per epoch (or per `log_every` steps)
MAX_METRICS_LINE_BYTES = 2 ** 20


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _cannot_create(root, why: str) -> UserError:
    return UserError(f"cannot create a run folder under '{root}': {why}")


def stage_row(metrics: dict, stage: str) -> dict:
    """The metrics.jsonl row of an epoch of stage `stage` ("" in a single-stage run, which logs no stage)."""
    return {**metrics, **({"stage": stage} if stage else {})}


def _same_row(logged: dict, row: dict) -> bool:
    """A metrics.jsonl row equals a history row (non-finite floats may have been logged as null)."""
    if logged.keys() != row.keys():
        return False
    for k, v in row.items():
        w = logged[k]
        if isinstance(v, torch.Tensor) or isinstance(w, torch.Tensor):
            return False                          # written as numbers: re-log it from the checkpoint
        if isinstance(v, float) and not math.isfinite(v):
            if not (w is None or isinstance(w, float) and (w == v or math.isnan(w) and math.isnan(v))):
                return False
        elif w != v or type(w) is not type(v) and not (isinstance(w, (int, float)) and isinstance(v, (int, float))):
            return False
    return True


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | os.PathLike, recipe: str, config: dict) -> "RunFolder":
        """Make `<root>/<recipe>/<stamp>-<id>/` with its sub-folders and config.json. A root that is a
        file, unwritable or impossible (e.g. inside /proc) is a UserError naming it, and a run folder whose
        config.json could not be written is removed again."""
        root = Path(root)
        if not recipe or recipe in (".", "..") or "/" in recipe or os.sep in recipe:
            raise UserError(f"invalid recipe name for a run folder: '{recipe}'")
        existing = _first_existing(root / recipe)
        if os.path.lexists(existing) and not existing.is_dir():
            raise _cannot_create(root, f"'{existing}' exists and is not a folder")
        try:
            (root / recipe).mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                path = root / recipe / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise _cannot_create(root, "no free run-folder name")
        except OSError as e:
            raise _cannot_create(root, e.strerror or type(e).__name__) from None
        run = cls(path)
        try:
            for sub in ("checkpoints", "plots", "samples"):
                (path / sub).mkdir()
            write_json(run.config_path, config)
        except BaseException as e:
            run._remove_empty_tree()
            if isinstance(e, OSError):
                raise _cannot_create(root, e.strerror or type(e).__name__) from None
            raise
        return run

    def _remove_empty_tree(self) -> None:
        """Undo a failed `create`: the sub-folders, a config.json written so far, and the folder itself."""
        for name in ("checkpoints", "plots", "samples"):
            try:
                (self.path / name).rmdir()
            except OSError:
                pass
        for p in self.path.iterdir() if self.path.is_dir() else ():
            if p.name == "config.json" or is_temp_name(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass
        try:
            self.path.rmdir()
        except OSError:
            pass

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"'{path}': not a run folder (no such folder)")
        if not os.path.lexists(run.config_path):
            raise UserError(f"'{path}': not a run folder (no config.json)")
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
    def eval_path(self) -> Path:
        return self.path / "eval.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

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
        """config.json, schema-checked (learnloop.engine.schema.check_run_config)."""
        return check_run_config(read_json(self.config_path), self.config_path)

    def log(self, message: str) -> None:
        try:
            with open_regular(self.log_path, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as e:                       # e.g. a full disk: name the file
            raise with_filename(e, self.log_path) from None

    def log_nulls(self, file: str, replaced) -> None:
        """Say in log.txt where a strict-JSON writer (learnloop.utils.io.write_json) wrote null for a
        non-finite value: `replaced` is what it returned."""
        for where, value in replaced:
            self.log(f"{file}: {where} was {value}, written as null")

    def append_metrics(self, row: dict) -> None:
        line, replaced = dumps_strict(row)
        path = self.metrics_log
        try:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = 0
            with open_regular(path, "ab") as f:
                if size:                                 # a line cut by a crash must not swallow this one
                    with open_regular(path, "rb") as r:
                        r.seek(size - 1)
                        if r.read(1) != b"\n":
                            f.write(b"\n")
                f.write(line.encode("utf-8") + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise with_filename(e, path) from None
        self.log_nulls("metrics.jsonl", replaced)

    def history(self) -> list[dict]:
        """metrics.jsonl rows. Lines cut by a crash, not UTF-8, not JSON objects, nested too deeply or too
        long are skipped: the log is append-only and a resumed run rewrites it from its checkpoint."""
        import json

        path = self.metrics_log
        if not os.path.lexists(path):
            return []
        rows = []
        with open_regular(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_METRICS_LOG_BYTES:
                raise corrupt(path, "", f"larger than {MAX_METRICS_LOG_BYTES} bytes; not a log learnloop wrote")
            for raw in f:
                if len(raw) > MAX_METRICS_LINE_BYTES:
                    continue
                try:
                    text = raw.decode("utf-8")
                    if json_depth_exceeds(text, MAX_JSON_DEPTH):
                        continue
                    row = json.loads(text)
                except (ValueError, RecursionError):      # JSONDecodeError and UnicodeDecodeError included
                    continue
                if check_metric_row(row):
                    rows.append(row)
        return rows

    def truncate_metrics(self, keep) -> None:
        """Rewrite metrics.jsonl keeping only rows for which `keep(row)` is true (atomic)."""
        rows = [r for r in self.history() if keep(r)]
        write_text(self.metrics_log, "".join(dumps_strict(r)[0] + "\n" for r in rows))

    def sync_stage_rows(self, stage: str, history: list[dict], step: int) -> int:
        """Make the metrics.jsonl rows of stage `stage` ("" in a single-stage run) equal `history` (its epoch
        rows, from a checkpoint) plus its step rows up to `step`; other stages' rows stay as they are. Rows
        the file has but the checkpoint does not are dropped (one atomic rewrite), rows the checkpoint has
        but the file lacks (a kill between checkpoint and row) are appended. Returns how many rows were
        dropped. The learner calls it when resuming (`Learner.try_resume`)."""
        wanted = {(h.get("epoch"), h.get("step")): j for j, h in enumerate(history)}
        found: dict[tuple, int] = {}

        def keep(r) -> bool:                     # for this stage's rows, in file order
            if "time" not in r:                  # a `log_every` step row
                return isinstance(r.get("step"), (int, float)) and r["step"] <= step
            key = (r.get("epoch"), r.get("step"))
            if key in wanted and key not in found and _same_row(r, stage_row(history[wanted[key]], stage)):
                found[key] = wanted[key]
                return True
            return False                         # past the checkpoint, from another attempt, or a duplicate

        mine = [r for r in self.history() if r.get("stage", "") == stage]
        kept = [r for r in mine if keep(r)]
        missing = [h for h in history if (h.get("epoch"), h.get("step")) not in found]
        kept_steps = [r["step"] for r in kept if "time" not in r]
        in_order = not missing or (max(found.values(), default=-1) < wanted[
            (missing[0].get("epoch"), missing[0].get("step"))] and all(s <= missing[0].get("step", 0)
                                                                     for s in kept_steps))
        if in_order:
            append = [stage_row(h, stage) for h in missing]
        else:                                    # rows lost from the middle: rewrite the whole stage
            append = sorted([r for r in kept if "time" not in r] + [stage_row(h, stage) for h in history],
                            key=lambda r: (r.get("step", 0), "time" in r))
        if len(kept) < len(mine) or not in_order:
            found.clear()
            self.truncate_metrics(lambda r: r.get("stage", "") != stage or (in_order and keep(r)))
        for r in append:
            self.append_metrics(r)
        return len(mine) - len(kept)

    def write_metrics(self, metrics: dict) -> None:
        """metrics.json, strict JSON (a non-finite value is written as null, and log.txt says so)."""
        self.log_nulls("metrics.json", write_json(self.metrics_path, metrics))

    def write_eval(self, metrics: dict) -> None:
        """eval.json, like `write_metrics`."""
        self.log_nulls("eval.json", write_json(self.eval_path, metrics))

    def metrics(self) -> dict:
        """metrics.json ({} when there is none yet), schema-checked."""
        if not os.path.lexists(self.metrics_path):
            return {}
        return check_metrics(read_json(self.metrics_path), self.metrics_path)

    def eval_metrics(self) -> dict:
        """eval.json ({} when the run was never re-evaluated), schema-checked."""
        if not os.path.lexists(self.eval_path):
            return {}
        return check_metrics(read_json(self.eval_path), self.eval_path)

    # recovery ---------------------------------------------------------------------------------------
    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files a killed atomic write left in this folder (names `.<file>.<8
        chars>.tmp` and safetensors' `.tmpXXXXXX`: `learnloop.utils.io.is_temp_name`; regular files only,
        nothing else is touched). Returns what was removed. The runtime calls it when resuming, when no
        other process writes to the folder."""
        removed = []
        for folder, _dirs, files in os.walk(self.path):
            for name in files:
                p = Path(folder) / name
                if not is_temp_name(name):
                    continue
                try:
                    if stat.S_ISREG(os.lstat(p).st_mode):
                        p.unlink()
                        removed.append(p)
                except OSError:
                    continue
        return removed

    def mark_interrupted(self, started: float | None = None) -> None:
        """Record a Ctrl-C: metrics.json says "interrupted" and log.txt says how to continue. A metrics.json
        that says "finished" and was written after `started` (a time.time() value: when the interrupted
        command began) is kept: the run did finish. Best effort: a folder that cannot be written keeps what
        it had."""
        try:
            metrics = self.metrics()
        except UserError:
            metrics = {}
        try:
            finished_now = metrics.get("status") == "finished" and (
                started is None or os.stat(self.metrics_path).st_mtime >= started)
            if not finished_now:
                self.write_metrics({**metrics, "status": "interrupted"})
            self.log(f"interrupted (Ctrl-C); `learnloop resume {self.path}` continues from the last checkpoint")
        except (OSError, UserError):
            pass
