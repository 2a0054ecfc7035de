"""The `ddpm` recipe: its config and checks, a tiny run's evaluation files and metrics (EMA weights, the
steps curve with floor and ceiling), the CPU budget, the seed predictor and its one-line errors, and a
short "it learns" run on a Fashion-MNIST subset."""

import json

import pytest
import torch
from PIL import Image

import learnloop
from learnloop.errors import UserError
from learnloop.recipes import evaluate_run, get_recipe, load_run, predict_run
from learnloop.recipes.diffusion.common import EMA_NAME, sampling_model
from learnloop.recipes.diffusion.ddpm import SMOKE
from learnloop.evaluation.generative import evaluator_available

FAST = {"progress": False, "quiet": True}
needs_evaluator = pytest.mark.skipif(not evaluator_available(),
                                     reason="learnloop/assets/fashion_evaluator.safetensors not built yet")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import os

    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("ddpm")
    return learnloop.run("ddpm", out=out, set={**SMOKE, "train.epochs": 2, "ema_decay": 0.5}, **FAST)


def test_recipe_defaults_are_the_papers_settings():
    r = get_recipe("ddpm")
    cfg = r.config()
    assert r.family == "diffusion" and r.main_metric == "fid"
    assert (cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end, cfg.prediction) == ("linear", 1000, 1e-4, 0.02,
                                                                                          "eps")
    assert (cfg.sampler.kind, cfg.sampler.steps, cfg.sampler.eta, cfg.sampler.spacing) == ("ddim", 50, 0.0, "trailing")
    assert cfg.sampler.variance == "beta_tilde" and cfg.sampler.clip_x0 and cfg.cosine_s == 0.008
    assert cfg.train.time_budget_min > 0 and cfg.ema_decay > 0 and cfg.train.clip_grad_norm == 1.0


@pytest.mark.parametrize("key, value, match", [
    ("sampler.steps", "2000", "sampler.steps: sampling steps must be <= timesteps T=10"),
    ("curve.ddpm_steps", "100,1001", "curve.ddpm_steps: sampling steps must be <= timesteps"),
    ("sampler.steps_offset", "1", "steps_offset applies to spacing=leading only"),
    ("eval.samples", "5", "eval.samples: need eval.k < samples"),
    ("sampler.kind", "pndm", "'pndm' is not valid; choose from: ddpm, ddim"),
    ("T", "10", "it is now 'timesteps'"),
])
def test_bad_settings_are_one_line_errors(tmp_path, key, value, match):
    with pytest.raises(UserError, match=match):
        learnloop.run("ddpm", out=tmp_path, set={**SMOKE, key: value}, **FAST)


@needs_evaluator
def test_tiny_run_evaluates_the_ema_weights_and_draws_the_steps_curve(tiny_run):
    m, plots = tiny_run.metrics, tiny_run.folder / "plots"
    for key in ("fid", "precision", "recall", "floor_fid", "ceiling_fid", "curve_ddpm10_fid", "curve_ddim2_fid",
                "curve_ddim2_recall", "curve_floor_fid", "curve_ceiling_recall", "sample_images_per_s",
                "train_cpu_min", "best_val_loss"):
        assert key in m, key
    assert m["epochs_trained"] == 2 and m["floor_fid"] < m["ceiling_fid"]
    for name in ("samples.png", "curves.png", "steps_curve.png", "steps_curve.md"):
        assert (plots / name).is_file(), name
    table = (plots / "steps_curve.md").read_text()
    assert "| ddpm | 10 |" in table and "| ddim | 2 |" in table and "floor (real)" in table
    run = load_run(tiny_run.folder)
    model, state = sampling_model(run)
    ema = state["callbacks"][EMA_NAME]["shadow"]
    assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], state["modules"]["model"][k]) for k in ema)   # EMA != live weights
    again = evaluate_run(tiny_run.folder, **FAST)
    assert again["fid"] == m["fid"] and again["curve_ddim2_fid"] == m["curve_ddim2_fid"]   # seeded sampling


def test_predictor_writes_seeded_pngs_and_rejects_bad_input(tiny_run):
    out = predict_run(tiny_run.folder, ["42", "2x4@ddim2", "5@ddpm"])
    assert [o["samples"] for o in out] == [1, 4, 1] and out[1]["sampler"] == "ddim" and out[1]["steps"] == 2
    assert out[2]["sampler"] == "ddpm" and out[2]["steps"] == 10
    assert Image.open(out[0]["path"]).size == (28, 28)
    json.dumps(out)
    first = Image.open(out[0]["path"]).tobytes()
    assert Image.open(predict_run(tiny_run.folder, ["42"])[0]["path"]).tobytes() == first
    for raw, match in (("abc", "expected SEED or SEEDxN"), ("1x0", "N must be between 1 and 256"),
                       ("1x300", "N must be between"), ("3@ddim99", "steps must be between 1 and T=10"),
                       ("3@ddim0", "steps must be between"), ("99999999999999999999", "expected SEED")):
        with pytest.raises(UserError, match=match) as e:
            predict_run(tiny_run.folder, [raw])
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("variant", [
    {"prediction": "v", "schedule": "cosine", "sampler.kind": "ddpm", "sampler.variance": "beta"},
    {"min_snr_gamma": 5.0, "sampler.spacing": "leading", "sampler.steps_offset": 1, "sampler.eta": 1.0},
    {"sampler.spacing": "linspace", "sampler.clip_x0": False, "ema_decay": 0.0, "data.val_samples": 0},
])
def test_variants_run_end_to_end(tmp_path, needs_fashion, variant):
    run = learnloop.run("ddpm", out=tmp_path, set={**SMOKE, "curve.samples": 0, **variant}, **FAST)
    assert run.metrics["status"] == "finished" and run.metrics["steps"] == 3
    assert ("best_val_loss" in run.metrics) == bool(variant.get("data.val_samples", 1))
    assert predict_run(run.folder, ["1x2"])[0]["samples"] == 2


def test_cpu_budget_stops_after_the_epoch_that_reaches_it(tmp_path, needs_fashion):
    run = learnloop.run("ddpm", out=tmp_path, set={**SMOKE, "train.epochs": 4, "train.time_budget_min": 1e-6,
                                                   "curve.samples": 0}, **FAST)
    assert run.metrics["epochs_trained"] == 1 and "budget of" in run.metrics["stop_reason"]


def test_it_learns_on_a_fashion_subset(tmp_path, needs_fashion):
    """45 steps of a small U-Net on 2k images: the validation loss (fixed t and noise) falls from 1 (the
    zero-initialised network predicts eps_hat = 0) to well below it, and keeps falling."""
    run = learnloop.run("ddpm", out=tmp_path, set={
        "unet.base_channels": 8, "unet.channel_mult": "1,2", "unet.attention_resolutions": "",
        "unet.attention_heads": 2, "unet.norm_groups": 4, "train.epochs": 3, "train.steps_per_epoch": 15,
        "train.batch_size": 32, "train.optim.lr": 3e-3, "ema_decay": 0.0, "data.subset": 2000,
        "data.val_samples": 128, "sampler.steps": 2, "grid_samples": 4, "curve.samples": 0, "eval.samples": 20},
        **FAST)
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows]
    assert val[2] < val[1] < val[0] < 0.5 and val[-1] < 0.16, val
