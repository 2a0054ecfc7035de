"""GAN recipes: six variants of one config, old keys named, tiny end-to-end runs, evaluation of best and last,
the sample predictor, the studies on a generator run."""

import json

import pytest
from PIL import Image

import learnloop
from learnloop.cli import main
from learnloop.engine.callbacks import SampleGrid, WeightClipping
from learnloop.engine.ema import EMA
from learnloop.errors import UserError
from learnloop.recipes import get_recipe, load_run, predict_run, recipes
from learnloop.recipes.config import flat_fields
from learnloop.recipes.gan import GANS, STAGE, GanConfig, GanParts, build_task, evaluator_available

FAST = {"progress": False, "quiet": True}
TINY = {"train.epochs": 1, "train.steps_per_epoch": 4, "train.batch_size": 16, "monitor_samples": 200,
        "eval.samples": 200, "data.subset": 500}
INFO = {"dataset": "fashion-mnist", "shape": [1, 28, 28], "classes": [str(i) for i in range(10)]}

needs_evaluator = pytest.mark.skipif(not evaluator_available(),
                                     reason="learnloop/assets/fashion_evaluator.safetensors not built yet")


def test_six_gans_are_one_configuration_with_different_defaults():
    all_recipes = recipes()
    for name in GANS:
        r = all_recipes[name]
        assert type(r.parts) is GanParts and issubclass(r.config, GanConfig) and r.family == "gan"
    cfg = {n: all_recipes[n].config() for n in GANS}
    assert (cfg["wgan-gp"].loss, cfg["wgan-gp"].regularizer) == ("wasserstein", "gp")
    assert (cfg["sngan"].loss, cfg["sngan"].spectral_norm) == ("hinge", True)
    assert (cfg["wgan-clip"].regularizer, cfg["wgan-clip"].n_critic) == ("clip", 5)
    assert cfg["cgan"].conditional and cfg["gan-mlp"].arch == "mlp"
    assert set(flat_fields(cfg["dcgan"])) == set(flat_fields(cfg["sngan"]))
    for part in ("generator", "discriminator"):                  # WGAN: RMSprop without momentum, as published
        optim = getattr(cfg["wgan-clip"], part).optim
        assert (optim.name, optim.lr, optim.momentum) == ("rmsprop", 5e-5, 0.0)
        assert getattr(cfg["wgan-gp"], part).optim.betas == (0.0, 0.9)
    assert (cfg["sngan"].generator.optim.lr, cfg["sngan"].discriminator.optim.lr) == (2e-4, 4e-4)
    assert (cfg["dcgan"].train.epochs, cfg["sngan"].train.epochs, cfg["gan-mlp"].train.epochs) == (30, 45, 15)
    assert cfg["dcgan"].discriminator.optim.betas == (0.5, 0.999) and cfg["dcgan"].generator.optim.name == "adam"


def test_the_nine_recipes_are_the_gan_package(capsys):
    studies = ("truncation", "gan-bias-probe", "controllable")
    gan = {n for n, r in recipes().items() if r.family == "gan"}
    assert gan == set(GANS) | set(studies)
    for name in gan:
        assert type(recipes()[name].parts).__module__.startswith("learnloop.recipes.gan.")
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("[gan]\n", 1)[1].split("\n[", 1)[0]
    assert sorted(line.split()[0] for line in listed.splitlines() if line.strip()
                  and not line.strip().startswith("target:")) == sorted(gan)


@pytest.mark.parametrize("old, new", [("lr_g", "generator.optim.lr"), ("lr_d", "discriminator.optim.lr"),
                                      ("beta1", "generator.optim.betas"), ("epochs", "train.epochs"),
                                      ("steps_per_epoch", "train.steps_per_epoch"), ("train_subset", "data.subset"),
                                      ("time_budget_min", "train.time_budget_min"), ("optimizer", "generator.optim.name"),
                                      ("batch_size", "train.batch_size"), ("schedule", "train.schedule.kind"),
                                      ("eval_samples", "eval.samples"), ("k", "eval.k")])
def test_old_keys_name_their_new_place(tmp_path, old, new):
    with pytest.raises(UserError, match=f"it is now '{new}'"):
        learnloop.run("dcgan", out=tmp_path, set={old: "1"}, **FAST)


def test_gan_callbacks_are_the_engine_callbacks():
    cfg = get_recipe("wgan-clip").config()
    task = build_task(cfg, INFO)
    kinds = [type(cb) for cb in task.callbacks]
    assert kinds == [EMA, SampleGrid, WeightClipping]
    no_ema = build_task(get_recipe("dcgan").config(ema_decay=0.0), INFO)
    assert [type(cb) for cb in no_ema.callbacks] == [SampleGrid]
    assert set(task.modules()) == {"generator", "discriminator"}
    assert [p.name for p in task.players] == ["generator", "discriminator"] and task.players[0].every == 5


def test_shape_and_classes_come_from_the_data_info():
    cfg = get_recipe("cgan").config()
    task = build_task(cfg, {**INFO, "shape": [3, 32, 16], "classes": ["a", "b", "c"]})
    import torch

    g = task.nets["generator"]
    assert g(torch.randn(2, cfg.z_dim), torch.tensor([0, 2])).shape == (2, 3, 32, 16)
    assert task.nets["discriminator"](torch.randn(2, 3, 32, 16), torch.tensor([1, 2])).shape == (2,)
    with pytest.raises(UserError, match="divisible by 4"):
        build_task(cfg, {**INFO, "shape": [1, 30, 30]})


def test_invalid_combinations_are_user_errors(tmp_path, needs_fashion):
    with pytest.raises(UserError, match="d_norm"):
        learnloop.run("wgan-gp", out=tmp_path, set={**TINY, "d_norm": "batch"}, **FAST)
    with pytest.raises(UserError, match="loss"):
        learnloop.run("dcgan", out=tmp_path, loss="bce", **FAST)
    with pytest.raises(UserError, match="need k < samples"):                # before training, not after
        learnloop.run("dcgan", out=tmp_path, set={**TINY, "eval.samples": 5, "eval.k": 5}, **FAST)
    with pytest.raises(UserError, match="unknown extractor"):
        learnloop.run("dcgan", out=tmp_path, set={**TINY, "eval.extractor": "vgg"}, **FAST)


@pytest.mark.parametrize("name", ["dcgan", "sngan", "wgan-gp", "cgan"])
def test_tiny_runs_write_samples_and_both_checkpoints(tmp_path, needs_fashion, name):
    run = learnloop.run(name, out=tmp_path, set={**TINY, "train.epochs": 2}, **FAST)
    m = run.metrics
    assert m["status"] == "finished" and m["epochs_trained"] == 2 and m["diverged"] == 0.0
    assert sorted(p.name for p in (run.folder / "samples").iterdir()) == ["gan_epoch_001.png", "gan_epoch_002.png"]
    assert {p.name for p in (run.folder / "checkpoints" / "gan").iterdir()} >= {"best.safetensors", "last.safetensors"}
    assert m["generator_steps"] == (8 if name != "wgan-gp" else 1)    # wgan-gp: n_critic = 5, 8 batches
    if evaluator_available():
        for which in ("best", "last"):
            assert {f"{which}_fid", f"{which}_precision", f"{which}_recall", f"{which}_coverage"} <= set(m)
        assert m["floor_fid"] < m["best_fid"] and m["ceiling_fid"] > m["floor_fid"]   # 8 steps: not yet below noise
        if name == "cgan":
            assert 0.0 <= m["best_class_accuracy"] <= 1.0


def test_diverging_gan_is_reported_not_continued(tmp_path, needs_fashion):
    # G frozen (lr 0): D wins outright, the run stops early and says why
    run = learnloop.run("gan-mlp", out=tmp_path, set={
        "train.epochs": 20, "train.steps_per_epoch": 12, "train.batch_size": 32, "generator.optim.lr": 0.0,
        "discriminator.optim.lr": 2e-3, "collapse_patience": 2, "monitor_samples": 0, "eval.samples": 200,
        "data.subset": 500}, **FAST)
    m = run.metrics
    assert m["diverged"] == 1.0 and m["epochs_trained"] < 20
    assert "discriminator won" in m["stop_reason"]


def test_predictor_writes_png_samples_and_grids(tmp_path, needs_fashion):
    gan = learnloop.run("cgan", out=tmp_path, set=TINY, **FAST)
    out = predict_run(gan.folder, ["42", "7x6", "3:Sneaker", "5x2:1"])
    assert [o["samples"] for o in out] == [1, 6, 1, 2]
    assert out[2]["class"] == "Sneaker" and out[3]["class"] == "Trouser"
    for o in out:
        assert o["path"].startswith(str(gan.folder / "samples")) and o["path"].endswith(".png")
    assert Image.open(out[0]["path"]).size == (28, 28)
    assert Image.open(out[1]["path"]).size[0] > 28                      # a grid
    again = predict_run(gan.folder, ["42"])                             # a seed is a sample: reproducible
    assert Image.open(again[0]["path"]).tobytes() == Image.open(out[0]["path"]).tobytes()
    for bad, why in [("x", "expected SEED"), ("1x0", "between 1 and"), ("1:Spaceship", "unknown class"),
                     ("1:10", "unknown class")]:
        with pytest.raises(UserError, match=why):
            predict_run(gan.folder, [bad])
    plain = learnloop.run("dcgan", out=tmp_path, set=TINY, **FAST)
    with pytest.raises(UserError, match="unconditional"):
        predict_run(plain.folder, ["3:Sneaker"])
    predictor = get_recipe("dcgan").parts.predictor(load_run(plain.folder))
    assert "SEEDxN" in predictor.inputs and len(predict_run(plain.folder, predictor.examples(tmp_path))) == 2


@needs_evaluator
def test_eval_cli_and_studies_on_a_trained_generator(tmp_path, needs_fashion, capsys):
    gan = learnloop.run("dcgan", out=tmp_path, set=TINY, **FAST)
    assert main(["eval", str(gan.folder)]) == 0
    ev = json.loads((gan.folder / "eval.json").read_text())
    assert "best_fid" in ev and "last_fid" in ev
    assert ev["best_fid"] == gan.metrics["best_fid"] and ev["epochs_trained"] == 1      # eval = run's evaluation
    trunc = learnloop.run("truncation", out=tmp_path, set={"generator_run": str(gan.folder), "study_samples": 200,
                                                           "truncations": "0,1,0.25"}, **FAST)
    assert {"tnone_precision", "t0.25_recall", "precision_rises", "recall_falls"} <= set(trunc.metrics)
    assert (trunc.folder / "plots" / "truncation_precision_recall.png").is_file()
    assert not (trunc.folder / "checkpoints" / STAGE).exists()            # it trained nothing
    probe = learnloop.run("gan-bias-probe", out=tmp_path, generator_run=str(gan.folder), study_samples=500, **FAST)
    assert 0 <= probe.metrics["min_class_fraction"] <= 0.1 + 1e-9
    assert "| Trouser |" in (probe.folder / "plots" / "bias_probe.md").read_text()
    ctrl = learnloop.run("controllable", out=tmp_path, set={
        "generator_run": str(gan.folder), "edit_samples": 10, "edit_steps": 2, "guide_subset": 1000,
        "guide.epochs": 1}, **FAST)
    assert 0 <= ctrl.metrics["class_edit_success"] <= 1
    assert (ctrl.folder / "plots" / "edits.png").is_file()
    assert (ctrl.folder / "checkpoints" / "guide" / "last.safetensors").is_file()    # the guide is a stage
    assert main(["eval", str(ctrl.folder)]) == 0                           # the study again, from its folder
    ev = json.loads((ctrl.folder / "eval.json").read_text())
    assert ev["class_edit_success"] == ctrl.metrics["class_edit_success"]


@needs_evaluator
def test_a_study_trains_its_generator_when_given_none(tmp_path, needs_fashion):
    trunc = learnloop.run("truncation", out=tmp_path, set={**TINY, "study_samples": 200, "truncations": "0,0.5"},
                          **FAST)
    assert trunc.metrics["epochs_trained"] == 1 and "t0.5_precision" in trunc.metrics
    assert (trunc.folder / "checkpoints" / STAGE / "last.safetensors").is_file()


def test_study_rejects_a_folder_that_is_not_a_gan_run(tmp_path):
    if not evaluator_available():
        pytest.skip("evaluator weights missing")
    with pytest.raises(UserError, match="no such run folder"):
        learnloop.run("truncation", out=tmp_path, generator_run=str(tmp_path / "nothing"), **FAST)
    other = learnloop.run("mlp-digits", out=tmp_path, set={"train.epochs": 1}, **FAST)
    with pytest.raises(UserError, match="expected one of: gan-mlp, dcgan"):
        learnloop.run("truncation", out=tmp_path, generator_run=str(other.folder), **FAST)


def test_show_lists_gan_settings(capsys):
    assert main(["show", "wgan-gp"]) == 0
    out = capsys.readouterr().out
    assert "regularizer" in out and "n_critic" in out and "generator.optim.lr" in out and get_recipe("wgan-gp").target
