"""Nested config sections, old keys, and values no real experiment means (issues M and R)."""

import math

import pytest

import learnloop
from learnloop.cli import main
from learnloop.errors import UserError
from learnloop.recipes import get_recipe
from learnloop.recipes.config import apply_overrides, describe, from_dict, to_dict, with_defaults
from learnloop.recipes.runtime import build_config
from learnloop.recipes.sections import TrainConfig


def cfg_of(name="mlp-fashion"):
    return get_recipe(name).config()


def test_sections_are_addressed_by_dotted_keys():
    cfg = apply_overrides(cfg_of(), {"train.optim.lr": "3e-3", "train.schedule.kind": "cosine",
                                     "model.hidden": "64,32", "data.subset": "100"})
    assert cfg.train.optim.lr == 3e-3 and cfg.train.schedule.kind == "cosine"
    assert cfg.model.hidden == (64, 32) and cfg.data.subset == 100
    fresh = cfg_of()                                  # the defaults were not touched
    assert fresh.train.optim.lr == 2e-3 and fresh.model.hidden == (512, 256)


def test_recipe_defaults_keep_the_sections_other_defaults():
    cfg = cfg_of("mlp-digits")
    assert cfg.train.schedule.kind == "one-cycle"      # from ClassifierConfig, not TrainConfig's "constant"
    assert cfg.train.optim.lr == 3e-3 and cfg.train.epochs == 30 and cfg.data.dataset == "digits"
    derived = with_defaults(type(cfg), "Tiny", train=dict(epochs=2))()
    assert derived.train.epochs == 2 and derived.train.optim.lr == 3e-3
    with pytest.raises(TypeError):
        with_defaults(type(cfg), "Bad", train=dict(no_such=1))


@pytest.mark.parametrize("old, new", [("lr", "train.optim.lr"), ("epochs", "train.epochs"),
                                      ("optimizer", "train.optim.name"), ("data_path", "data.path"),
                                      ("train_subset", "data.subset"), ("hidden", "model.hidden"),
                                      ("model", "model.arch"), ("schedule", "train.schedule.kind")])
def test_old_flat_keys_name_the_new_key(old, new):
    with pytest.raises(UserError, match=f"it is now '{new}'"):
        apply_overrides(cfg_of(), {old: "1"})


@pytest.mark.parametrize("key, value, message", [
    ("train.optim.lr", "nan", "must be a finite number"),
    ("train.optim.lr", "inf", "must be a finite number"),
    ("train.optim.lr", "-inf", "must be a finite number"),
    ("model.dropout", "nan", "must be a finite number"),
    ("train.optim.lr", "-1", "out of range"),
    ("train.epochs", "1e400", "expected int"),
    ("train.epochs", "9" * 400, "expected int"),
    ("train.epochs", "10000000000", "out of range"),
    ("train.batch_size", "0", "out of range"),
    ("train.optim.betas", "0.9", "expected 2 comma-separated values"),
    ("train.optim.betas", "0.9,nan", "must be a finite number"),
    ("data.dataset", "mnist\nrm -rf", "is not valid"),
    ("data.path", "a\nb", "control characters"),
    ("train.precision", "", "is not valid"),
    ("label_smoothing", "", "expected float"),
])
def test_bad_values_are_rejected(key, value, message):
    with pytest.raises(UserError, match=message) as e:
        apply_overrides(cfg_of(), {key: value})
    assert "\n" not in str(e.value)


def test_bad_values_from_the_command_line_make_no_folder(tmp_path, capsys):
    for bad in ("train.optim.lr=nan", "train.optim.lr=inf", "model.dropout=nan", "data.classes=1,1",
                "data.classes=99,1", "data.classes=3", "data.subset=1"):
        code = main(["run", "mlp-digits", "--out", str(tmp_path), "--set", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("learnloop: error:"), (bad, err)
    made = [p for p in tmp_path.rglob("metrics.json")]
    assert not made


def test_from_dict_treats_the_file_as_untrusted():
    cls = get_recipe("mlp-digits").config
    good = to_dict(cls())
    assert from_dict(cls, good) == cls()
    with pytest.raises(UserError, match="must be an object"):
        from_dict(cls, [1, 2])
    with pytest.raises(UserError, match="older learnloop"):
        from_dict(cls, {"lr": 0.1, "epochs": 3})
    bad = to_dict(cls())
    bad["train"]["optim"]["lr"] = "fast"
    with pytest.raises(UserError, match="train.optim.lr: expected float"):
        from_dict(cls, bad)
    deep = {}
    node = deep
    for _ in range(50):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(UserError, match="nested too deeply"):
        from_dict(cls, deep)


def test_show_lists_nested_keys_and_epochs_shortcut():
    keys = [row[0] for row in describe(cfg_of())]
    assert "train.optim.lr" in keys and "data.path" in keys and "lr" not in keys
    cfg = build_config(get_recipe("mlp-digits"), {}, epochs=3)
    assert cfg.train.epochs == 3
    assert isinstance(cfg.train, TrainConfig) and not math.isnan(cfg.train.optim.lr)


def test_python_api_takes_double_underscore_keys(tmp_path):
    run = learnloop.run("mlp-digits", out=tmp_path, train__epochs=1, model__hidden=(16,), progress=False, quiet=True)
    assert run.config.model.hidden == (16,) and run.metrics["epochs_trained"] == 1
