"""Reusable runs: `load_run` rebuilds any run folder's config and trained modules, and refuses what does
not fit (issue M part 3, issue R class 6)."""

import json
import shutil

import pytest
import torch

import learnloop
from learnloop.errors import CorruptFileError, UserError
from learnloop.recipes import load_run, predict_run

FAST = dict(progress=False, quiet=True)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return learnloop.run("mlp-digits", out=out, train__epochs=2, model__hidden=(32,), **FAST)


def test_load_run_gives_the_trained_model_back(digits_run):
    run = load_run(digits_run.folder)
    assert run.recipe.name == "mlp-digits" and run.cfg == digits_run.config and run.info["shape"] == [1, 8, 8]
    for (k, a), b in zip(run.model.state_dict().items(), digits_run.model.state_dict().values()):
        assert torch.equal(a, b), k                      # best weights, the ones the run evaluated
    last = load_run(digits_run.folder, "last")
    assert last.which == "last" and isinstance(last.model, torch.nn.Module)
    with pytest.raises(UserError, match="best, last"):
        load_run(digits_run.folder, "worst")


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run.folder, dst)
    return dst


def test_a_folder_from_before_the_parts_api_says_re_run(digits_run, tmp_path):
    old = _copy(digits_run, tmp_path)
    (old / "data.json").unlink()
    with pytest.raises(UserError, match="older learnloop, re-run it"):
        load_run(old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["config"] = {"lr": 0.003, "epochs": 30, "hidden": [128]}
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="older learnloop"):
        load_run(old)


def test_weights_of_another_configuration_are_refused(digits_run, tmp_path):
    other = _copy(digits_run, tmp_path)
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["model"]["hidden"] = [64]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptFileError, match="do not fit this model"):
        load_run(other)


def test_data_json_is_untrusted(digits_run, tmp_path):
    bad = _copy(digits_run, tmp_path)
    (bad / "data.json").write_text("[1, 2, 3]")
    with pytest.raises(CorruptFileError, match="expected a JSON object"):
        load_run(bad)


def test_predict_without_checkpoints_says_how_to_finish(digits_run, tmp_path):
    bare = _copy(digits_run, tmp_path)
    shutil.rmtree(bare / "checkpoints")
    with pytest.raises(UserError, match="learnloop resume"):
        predict_run(bare, ["x.png"])


def test_upstream_runs_are_checked_against_needs(digits_run, tmp_path):
    with pytest.raises(UserError, match="expected one of: char-lm"):
        learnloop.run("ulmfit-classify", out=tmp_path, lm_run=str(digits_run.folder), **FAST)
    with pytest.raises(UserError, match="no such run folder"):
        learnloop.run("ulmfit-classify", out=tmp_path, lm_run=str(tmp_path / "nope"), **FAST)


def test_upstream_run_paths_are_recorded_absolute(tmp_path, monkeypatch):
    from learnloop.recipes import get_recipe
    from learnloop.recipes.runtime import build_config

    monkeypatch.chdir(tmp_path)
    cfg = build_config(get_recipe("text-to-image"), {"vae_run": "runs/vae/a", "clip_run": ""})
    assert cfg.vae_run == str(tmp_path / "runs" / "vae" / "a") and cfg.clip_run == ""
