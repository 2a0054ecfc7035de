"""GAN recipes: six variants of one config, tiny end-to-end runs, evaluation of best and last, the studies."""

import dataclasses
import json

import pytest

import learnloop
from learnloop.cli import main
from learnloop.errors import UserError
from learnloop.recipes import get_recipe, recipes
from learnloop.recipes.gan import GanConfig, evaluator_available, train_gan

GANS = ("gan-mlp", "dcgan", "wgan-clip", "wgan-gp", "sngan", "cgan")
FAST = {"progress": False, "quiet": True}
TINY = {"epochs": 1, "steps_per_epoch": 4, "batch_size": 16, "monitor_samples": 200, "eval_samples": 200,
        "train_subset": 500}

needs_evaluator = pytest.mark.skipif(not evaluator_available(),
                                     reason="learnloop/assets/fashion_evaluator.safetensors not built yet")


def test_six_gans_are_one_function_with_different_defaults():
    all_recipes = recipes()
    for name in GANS:
        r = all_recipes[name]
        assert r.fn is train_gan and issubclass(r.config, GanConfig) and r.evaluate is not None
    cfg = {n: all_recipes[n].config() for n in GANS}
    assert (cfg["wgan-gp"].loss, cfg["wgan-gp"].regularizer) == ("wasserstein", "gp")
    assert (cfg["sngan"].loss, cfg["sngan"].spectral_norm) == ("hinge", True)
    assert (cfg["wgan-clip"].regularizer, cfg["wgan-clip"].n_critic) == ("clip", 5)
    assert cfg["cgan"].conditional and cfg["gan-mlp"].arch == "mlp"
    assert {f.name for f in dataclasses.fields(cfg["dcgan"])} == {f.name for f in dataclasses.fields(cfg["sngan"])}


def test_invalid_combinations_are_user_errors(tmp_path, needs_fashion):
    with pytest.raises(UserError, match="d_norm"):
        learnloop.run("wgan-gp", out=tmp_path, d_norm="batch", **TINY, **FAST)
    with pytest.raises(UserError, match="loss"):
        learnloop.run("dcgan", out=tmp_path, loss="bce", **FAST)


@pytest.mark.parametrize("name", ["dcgan", "sngan", "wgan-gp", "cgan"])
def test_tiny_runs_write_samples_and_both_checkpoints(tmp_path, needs_fashion, name):
    run = learnloop.run(name, out=tmp_path, **{**TINY, "epochs": 2}, **FAST)
    m = run.metrics
    assert m["status"] == "finished" and m["epochs_trained"] == 2 and m["diverged"] == 0.0
    assert sorted(p.name for p in (run.folder / "samples").iterdir()) == ["gan_epoch_001.png", "gan_epoch_002.png"]
    assert {p.name for p in (run.folder / "checkpoints" / "gan").iterdir()} >= {"best.safetensors", "last.safetensors"}
    if evaluator_available():
        for which in ("best", "last"):
            assert {f"{which}_fid", f"{which}_precision", f"{which}_recall", f"{which}_coverage"} <= set(m)
        assert m["floor_fid"] < m["best_fid"] and m["ceiling_fid"] > m["floor_fid"]   # 8 steps: not yet below noise
        if name == "cgan":
            assert 0.0 <= m["best_class_accuracy"] <= 1.0


def test_diverging_gan_is_reported_not_continued(tmp_path, needs_fashion):
    # G frozen (lr 0): D wins outright, the run stops early and says why
    run = learnloop.run("gan-mlp", out=tmp_path, epochs=20, steps_per_epoch=12, batch_size=32, lr_g=0.0, lr_d=2e-3,
                        collapse_patience=2, monitor_samples=0, eval_samples=200, train_subset=500, **FAST)
    m = run.metrics
    assert m["diverged"] == 1.0 and m["epochs_trained"] < 20
    assert "discriminator won" in m["stop_reason"]


@needs_evaluator
def test_eval_cli_and_studies_on_a_trained_generator(tmp_path, needs_fashion, capsys):
    gan = learnloop.run("dcgan", out=tmp_path, **TINY, **FAST)
    assert main(["eval", str(gan.folder)]) == 0
    ev = json.loads((gan.folder / "eval.json").read_text())
    assert "best_fid" in ev and "last_fid" in ev
    trunc = learnloop.run("truncation", out=tmp_path, generator_run=str(gan.folder), study_samples=200,
                          truncations=(0.0, 1.0, 0.25), **FAST)
    assert {"tnone_precision", "t0.25_recall", "precision_rises", "recall_falls"} <= set(trunc.metrics)
    assert (trunc.folder / "plots" / "truncation_precision_recall.png").is_file()
    probe = learnloop.run("gan-bias-probe", out=tmp_path, generator_run=str(gan.folder), study_samples=500, **FAST)
    assert 0 <= probe.metrics["min_class_fraction"] <= 0.1 + 1e-9
    assert "| Trouser |" in (probe.folder / "plots" / "bias_probe.md").read_text()
    ctrl = learnloop.run("controllable", out=tmp_path, generator_run=str(gan.folder), edit_samples=10,
                         edit_steps=2, guide_subset=1000, guide_epochs=1, **FAST)
    assert 0 <= ctrl.metrics["class_edit_success"] <= 1
    assert (ctrl.folder / "plots" / "edits.png").is_file()


def test_study_rejects_a_folder_that_is_not_a_gan_run(tmp_path):
    if not evaluator_available():
        pytest.skip("evaluator weights missing")
    with pytest.raises(UserError, match="not a run folder"):
        learnloop.run("truncation", out=tmp_path, generator_run=str(tmp_path / "nothing"), **FAST)


def test_show_lists_gan_settings(capsys):
    assert main(["show", "wgan-gp"]) == 0
    out = capsys.readouterr().out
    assert "regularizer" in out and "n_critic" in out and get_recipe("wgan-gp").target
