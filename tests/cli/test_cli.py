"""The command line, end to end, with the quickstart recipe on embedded data (seconds)."""

import json
from pathlib import Path

import pytest

from learnloop.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_quickstart_prints_run_folder_last(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "--out", str(tmp_path), "--epochs", "3", "--seed", "1")
    assert code == 0
    folder = Path(out.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "mlp-digits"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8 and metrics["status"] == "finished"
    for name in ("config.json", "metrics.jsonl", "log.txt", "checkpoints/last.safetensors",
                 "checkpoints/best.safetensors", "plots/curves.png", "plots/confusion_matrix.png",
                 "plots/top_losses.png"):
        assert (folder / name).is_file(), name
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["config"]["train"]["epochs"] == 3 and "torch" in cfg["versions"]

    code, out, _ = run_cli(capsys, "eval", str(folder))
    assert code == 0
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    code, out, _ = run_cli(capsys, "runs", "--out" if False else "--root", str(tmp_path))
    assert code == 0 and "mlp-digits" in out and "test_accuracy" in out

    code, out, _ = run_cli(capsys, "compare", str(folder), str(folder), "--plot", str(tmp_path / "cmp.png"))
    assert code == 0 and "test_accuracy" in out and (tmp_path / "cmp.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["run", "no-such-recipe"], "unknown recipe 'no-such-recipe'; choose from:"),
    (["run", "mlp-digits", "--set", "nope=1"], "unknown config key 'nope'; valid keys:"),
    (["run", "mlp-digits", "--set", "train.optim.lr=fast"], "train.optim.lr: expected float, got 'fast'"),
    (["run", "mlp-fashion", "--set", "lr=1e-3"], "unknown config key 'lr': it is now 'train.optim.lr'"),
    (["run", "mlp-fashion", "--set", "lr_g=1e-3"], "unknown config key 'lr_g'; valid keys:"),
    (["run", "mlp-digits", "--set", "train.epochs=2.5"], "train.epochs: expected int"),
    (["run", "mlp-digits", "--set", "model.dropout=2"], "model.dropout: 2.0 is out of range"),
    (["run", "mlp-digits", "--set", "train.schedule.kind=zigzag"], "choose from: constant, step, cosine, one-cycle"),
    (["run", "mlp-digits", "--set", "lr"], "--set expects key=value"),
    (["run", "mlp-digits", "--epochs", "0"], "--epochs must be >= 1"),
    (["run", "mlp-digits", "--seed", "abc"], "--seed"),
    (["run", "mlp-digits", "--track", "wandb"], "--track must be"),
    (["resume", "/no/such/run"], "no such file or folder"),
    (["eval", "."], "not a run folder"),
    (["compare", "/nope1", "/nope2"], "no such file"),
    (["show", "nope"], "unknown recipe"),
    (["lr-find", "gradient-flow"], "lr-find needs a recipe that trains one model"),
    (["frobnicate"], "No such command"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("learnloop: error:"), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_missing_data_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "softmax-regression", "--set", f"data.path={tmp_path}", "--out", str(tmp_path))
    assert code == 2 and "does not hold the fashion-mnist files" in err


def test_help_explains_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for cmd in ("list", "show", "run", "resume", "eval", "lr-find", "runs", "compare"):
        assert f"  {cmd} " in out
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "--set" in out and "--seed" in out


def test_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("logreg-binary", "softmax-regression", "mlp-fashion", "cnn-fashion", "mlp-digits", "gradient-flow"):
        assert name in out
    assert "target: test_accuracy >= 0.92" in out
    code, out, _ = run_cli(capsys, "show", "cnn-fashion")
    assert code == 0 and "weight_decay" in out and "augment" in out


def test_lr_find(capsys, tmp_path):
    code, out, err = run_cli(capsys, "lr-find", "mlp-digits", "--steps", "40", "--out", str(tmp_path))
    assert code == 0 and "suggested lr" in err and Path(out.strip()).is_file()
