"""Failure class 10: every file learnloop writes gets the normal umask-respecting mode (atomically written
ones came out 0600), and JSON is strict: a non-finite metric is written as null (and log.txt says so),
while reading accepts both null and the NaN/Infinity tokens of older files."""

import json
import math
import stat

import pytest
import torch

from learnloop.engine.checkpoint import save_state
from learnloop.engine.run import RunFolder
from learnloop.utils.io import read_json, save_figure, to_json_value, write_json, write_text

from hardening_helpers import quick_run, run_cli


def _strict_loads(text: str):
    """A strict RFC 8259 parser: NaN, Infinity and -Infinity are errors."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _reference_mode(tmp_path):
    ref = tmp_path / "reference"
    ref.write_text("x")                       # plain open(): 0666 & ~umask
    return _mode(ref)


def test_every_writer_gives_the_umask_mode(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    want = _reference_mode(tmp_path)
    write_json(tmp_path / "a.json", {"a": 1})
    write_text(tmp_path / "b.txt", "b")
    save_state(tmp_path / "c.safetensors", {"x": torch.zeros(3)})
    save_state(tmp_path / "c.safetensors", {"x": torch.ones(3)})       # replacing keeps it too
    save_figure(plt.figure(), tmp_path / "d.png")
    run = RunFolder.create(tmp_path, "r", {"recipe": "r", "seed": 0, "config": {}})
    run.append_metrics({"epoch": 1})
    run.log("hello")
    run.write_metrics({"status": "finished"})
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 8
    assert {p.name: _mode(p) for p in files} == {p.name: want for p in files}


def test_a_real_run_folder_has_one_mode(capsys, tmp_path):
    folder = quick_run(capsys, tmp_path / "runs")
    want = _reference_mode(tmp_path)
    modes = {str(p.relative_to(folder)): _mode(p) for p in folder.rglob("*") if p.is_file()}
    assert "checkpoints/last.safetensors" in modes and "config.json" in modes
    assert modes == {k: want for k in modes}


def test_non_finite_metrics_are_written_as_null_and_logged(tmp_path):
    run = RunFolder.create(tmp_path, "r", {"recipe": "r", "seed": 0, "config": {}})
    metrics = {"val_loss": math.nan, "best": math.inf, "worst": -math.inf, "ok": 0.5,
               "per_class": [1.0, math.nan], "t": torch.tensor(math.nan), "nested": {"x": float("nan")}}
    run.write_metrics(metrics)
    run.append_metrics({"epoch": 1, "train_loss": math.nan})
    back = _strict_loads(run.metrics_path.read_text())
    assert back == {"val_loss": None, "best": None, "worst": None, "ok": 0.5, "per_class": [1.0, None],
                    "t": None, "nested": {"x": None}}
    assert [_strict_loads(x) for x in run.metrics_log.read_text().splitlines()] == [{"epoch": 1, "train_loss": None}]
    log = run.log_path.read_text()
    for line in ("metrics.json: val_loss was nan, written as null", "metrics.json: best was inf, written as null",
                 "metrics.json: worst was -inf, written as null", "metrics.json: per_class[1] was nan",
                 "metrics.json: nested.x was nan", "metrics.jsonl: train_loss was nan, written as null"):
        assert line in log, log
    run.truncate_metrics(lambda r: True)
    _strict_loads(run.metrics_log.read_text())


def test_reading_accepts_null_and_old_nan_tokens(tmp_path, capsys):
    run = RunFolder.create(tmp_path, "r", {"recipe": "r", "seed": 0, "config": {}})
    run.metrics_path.write_text('{"status": "finished", "a": NaN, "b": Infinity, "c": -Infinity, "d": null}')
    m = run.metrics()
    assert math.isnan(m["a"]) and m["b"] == math.inf and m["c"] == -math.inf and m["d"] is None
    run.metrics_log.write_text('{"epoch": 1, "val_loss": NaN}\n{"epoch": 2, "val_loss": null}\n')
    assert [r["epoch"] for r in run.history()] == [1, 2]
    assert read_json(run.metrics_path)["status"] == "finished"
    code, out, err = run_cli(capsys, "runs", "--root", tmp_path)
    assert code == 0 and "finished" in out, err


@pytest.mark.parametrize("value, want", [
    ({"a": (1, 2), "b": {3}}, {"a": [1, 2], "b": [3]}),
    (torch.tensor([1.0, math.inf]), [1.0, None]),
    ({"n": torch.tensor(7)}, {"n": 7}),
])
def test_to_json_value(value, want):
    got, _ = to_json_value(value)
    assert got == want
    _strict_loads(json.dumps(got, allow_nan=False))
