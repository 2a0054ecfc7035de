"""The `text-to-image` recipe: its config, upstream runs (loaded, missing, of the wrong recipe, with a vector
latent) and the in-run vae/clip stages, the latent scale and caption dropout of the U-Net's inputs, the
captioned batches, classifier-free guidance through the recipe's own sampler, `learnloop generate` / predict
(one code path, seeded PNGs, one-line errors with exit code 2), resume, and a short "it learns" run."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import learnloop
from learnloop.cli import main
from learnloop.data.captions import CLASS_NAMES, CaptionTokenizer
from learnloop.errors import UserError
from learnloop.evaluation.generative import evaluator_available
from learnloop.models.diffusion import sample
from learnloop.recipes import evaluate_run, generate_run, get_recipe, load_run, predict_run, resume_run
from learnloop.recipes.diffusion.latent import CaptionBatches, TextConditioner, run_sampler, scale_images
from learnloop.recipes.diffusion.text_to_image import PREDICT_N, PREDICT_SEED, SMOKE
from learnloop.utils.images import save_image_grid

FAST = {"progress": False, "quiet": True}
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_evaluator = pytest.mark.skipif(not evaluator_available(),
                                     reason="learnloop/assets/fashion_evaluator.safetensors not built yet")
UNET_ONLY = {k: v for k, v in SMOKE.items() if not k.startswith(("vae.", "clip."))}


def _one_line(capsys, args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (args, code, err)
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny text-to-image run that trains its own vae and clip stages, tiny upstream `vae` (spatial and
    vector latents) and `clip` runs, and a text-to-image run on those upstream runs."""
    if not os.path.exists(FASHION):
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("t2i")
    own = learnloop.run("text-to-image", out=out, set={**SMOKE, "train.epochs": 2}, **FAST)
    vae_tiny = {**get_recipe("vae").smoke, "model.width": 4}
    spatial = learnloop.run("vae", out=out, set={**vae_tiny, "model.latent": "spatial", "beta": 0.1}, **FAST)
    vector = learnloop.run("vae", out=out, set=vae_tiny, **FAST)
    clip = learnloop.run("clip", out=out, set={**get_recipe("clip").smoke, "model.text_width": 16,
                                               "model.text_layers": 1, "model.text_heads": 2}, **FAST)
    used = learnloop.run("text-to-image", out=out, set={**UNET_ONLY, "vae_run": str(spatial.folder),
                                                        "clip_run": str(clip.folder)}, **FAST)
    return {"own": own, "spatial": spatial, "vector": vector, "clip": clip, "used": used, "out": out}


def test_recipe_declares_its_parts_and_defaults():
    r = get_recipe("text-to-image")
    cfg = r.config()
    assert r.family == "diffusion" and r.main_metric == "agreement" and ">= 0.8" in r.target
    assert r.parts.needs == {"vae_run": ("vae",), "clip_run": ("clip",)}
    assert (cfg.vae_run, cfg.clip_run, cfg.p_uncond, cfg.guidance) == ("", "", 0.1, 3.0)
    assert cfg.eval.guidance_scales == (1.0, 2.0, 3.0, 5.0) and cfg.sampler.clip_x0 is False
    assert cfg.unet.channel_mult == (1,) and cfg.train.time_budget_min == 20.0 and cfg.ema_decay > 0
    assert (cfg.vae.model.latent, cfg.vae.beta) == ("spatial", 0.1)         # the nested vae section's defaults
    assert cfg.clip.model.text_width == get_recipe("clip").config().model.text_width


def test_own_stages_and_upstream_runs(runs):
    own, used = runs["own"], runs["used"]
    assert sorted(p.name for p in (own.folder / "checkpoints").iterdir()) == ["clip", "unet", "vae"]
    assert sorted(p.name for p in (used.folder / "checkpoints").iterdir()) == ["unet"]
    loaded = load_run(used.folder)
    assert list(loaded.tasks) == ["unet"] and set(loaded.upstream) == {"vae_run", "clip_run"}
    assert loaded.upstream["vae_run"].recipe.name == "vae" and loaded.upstream["clip_run"].recipe.name == "clip"
    info = json.loads((used.folder / "data.json").read_text())
    clip_info = json.loads((runs["clip"].folder / "data.json").read_text())
    assert info["captions"] == clip_info["captions"] and info["vocab"] == clip_info["vocab"]
    assert info["latent_shape"] == [4, 7, 7]
    unet = loaded.model.unet
    assert unet.context_dim == 16 and unet.in_channels == 4 and unet.image_size == (7, 7)


@pytest.mark.parametrize("key, which, match", [
    ("vae_run", "nowhere", "no such run folder"),
    ("clip_run", "nowhere", "no such run folder"),
    ("vae_run", "clip", "is a 'clip' run; expected one of: vae"),
    ("clip_run", "spatial", "is a 'vae' run; expected one of: clip"),
    ("vae_run", "vector", "has a vector latent (16 numbers); text-to-image needs a spatial one"),
])
def test_a_missing_or_wrong_upstream_run_is_one_line_before_any_folder(runs, tmp_path, capsys, key, which, match):
    path = str(tmp_path / "nowhere") if which == "nowhere" else str(runs[which].folder)
    other = {"vae_run": str(runs["spatial"].folder), "clip_run": str(runs["clip"].folder)}
    settings = {**UNET_ONLY, **other, key: path}
    with pytest.raises(UserError, match=re.escape(match)):
        learnloop.run("text-to-image", out=tmp_path, set=settings, **FAST)
    args = ["run", "text-to-image", "--out", str(tmp_path)] + [a for k, v in settings.items()
                                                                for a in ("--set", f"{k}={v}")]
    assert match in _one_line(capsys, args)
    assert not (tmp_path / "text-to-image").exists()


@pytest.mark.parametrize("key, value, match", [
    ("vae.model.latent", "vector", "vae.model.latent=vector: the VAE has a vector latent"),
    ("unet.channel_mult", "1,2", "a 7x7 input allows at most 1 U-Net levels"),
    ("sampler.steps", "20", "sampler.steps: sampling steps must be <= timesteps T=10"),
    ("eval.k", "20", "eval: need eval.k < 20 images"),
    ("guidance", "nan", "guidance: must be a finite number"),
    ("p_uncond", "1.5", "p_uncond: 1.5 is out of range"),
    ("w", "2", "it is now 'guidance'"),
])
def test_bad_settings_fail_before_training(tmp_path, needs_fashion, key, value, match):
    with pytest.raises(UserError, match=match):
        learnloop.run("text-to-image", out=tmp_path, set={**SMOKE, key: value}, **FAST)
    assert not (tmp_path / "text-to-image").exists()


def test_latent_scale_is_fitted_on_training_latents_and_checkpointed(runs):
    loaded = load_run(runs["used"].folder)
    denoiser = loaded.model
    vae = loaded.upstream["vae_run"].model
    with torch.no_grad():
        mu = vae.encode(scale_images(loaded.cfg, loaded.info))[0]
    assert len(mu) == loaded.cfg.data.scale_images
    assert float(denoiser.latent_scale) == pytest.approx(1 / float(mu.std()), rel=1e-5)
    assert float((denoiser.latent_scale * mu).std()) == pytest.approx(1.0, rel=1e-5)
    state = loaded.checkpoint("unet", "best")
    assert float(state["modules"]["model"]["latent_scale"]) == pytest.approx(float(denoiser.latent_scale))


def test_inputs_drop_captions_only_while_training(runs):
    loaded = load_run(runs["used"].folder)
    denoiser = loaded.model
    tok = CaptionTokenizer.from_info(loaded.info)
    cond = TextConditioner(denoiser, loaded.upstream["vae_run"].model, loaded.upstream["clip_run"].model, tok, 1.0)
    ids, pad = tok.encode(["a photo of a sneaker", "a dark, wide coat"])
    batch = (torch.rand(2, 1, 28, 28), ids, pad, torch.tensor([7, 4]))
    denoiser.train()
    z0, kw = cond(batch)
    assert z0.shape == (2, 4, 7, 7)
    null = cond.null_context[0]
    assert torch.equal(kw["context"][:, :2], null.expand(2, -1, -1))
    assert kw["context_mask"][:, 2:].all() and not kw["context_mask"][:, :2].any()
    denoiser.eval()
    z0_eval, kw = cond(batch)
    torch.testing.assert_close(kw["context"], loaded.upstream["clip_run"].model.encode_text(ids, pad)[1])
    assert torch.equal(kw["context_mask"], pad) and torch.equal(z0, z0_eval)
    assert not any(p.requires_grad for p in cond.vae.parameters()) and not cond.clip.training


def test_caption_batches_draw_per_epoch_captions_of_the_right_class(needs_fashion):
    from learnloop.data.captions import CaptionSampler, attribute_thresholds, caption_info, caption_vocabulary
    from learnloop.data.vision import load_fashion_mnist

    data = load_fashion_mnist("train").subset(torch.arange(300))
    info = {"vocab": caption_vocabulary(), "max_len": 24, "captions": caption_info(
        attribute_thresholds(data.images), ("brightness", "width", "pattern"), 0.5, True)}
    tok = CaptionTokenizer.from_info(info)
    loader = CaptionBatches(data.images, CaptionSampler.from_info(info, data.images, data.labels), tok, 32, 5, seed=3)
    epoch0 = list(loader)
    assert len(loader) == len(epoch0) == 5 and all(len(b[0]) == 32 for b in epoch0)
    x, ids, pad, labels = epoch0[0]
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    for text, label in zip(tok.decode(ids), labels.tolist()):
        assert any(name in text for name in CLASS_NAMES[label]), (text, label)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(epoch0, list(loader)))     # the same epoch: the same
    first = loader.captions()
    loader.set_epoch(1)
    assert loader.captions() != first                                             # a new epoch: new captions


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _grid_size(folder, n: int, nrow: int) -> tuple[int, int]:
    """The PNG size of a grid of n 28 x 28 images, nrow per row, as save_image_grid writes it."""
    path = Path(folder) / f"grid-{n}-{nrow}.png"
    save_image_grid(torch.zeros(n, 1, 28, 28), path, nrow=nrow, value_range=(0.0, 1.0))
    return _png_size(path)


def _perturbed_sampler(run):
    sampler = run_sampler(load_run(run.folder))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in sampler.denoiser.parameters():           # the zero-initialised head would make eps 0
            p.add_(torch.randn_like(p) * 0.05)
    return sampler


def test_guidance_one_is_the_conditional_model_through_the_recipe_sampler(runs):
    sampler = _perturbed_sampler(runs["used"])
    cfg, s = sampler.cfg, sampler.cfg.sampler
    prompts = ["a photo of a sneaker"] * 3 + ["a dark coat"] * 2
    ctx, mask = sampler.contexts(prompts)
    null_c, null_m = sampler.conditioner.null_context, sampler.conditioner.null_mask
    shape = (len(prompts), *sampler.denoiser.latent_shape)

    def reference(model):
        return sample(model, sampler.diffusion, shape, sampler=s.kind, steps=s.steps, eta=s.eta, spacing=s.spacing,
                      prediction=cfg.prediction, clip=False, generator=torch.Generator().manual_seed(5))

    def cond(z, t):
        return sampler.denoiser(z, t, ctx, mask)

    def uncond(z, t):
        B = len(z)
        return sampler.denoiser(z, t, null_c.expand(B, -1, -1), null_m.expand(B, -1))

    with torch.no_grad():
        w1 = sampler.latents(prompts, 1.0, 5)
        torch.testing.assert_close(w1, reference(cond), rtol=0, atol=0)
        w3 = sampler.latents(prompts, 3.0, 5)
        torch.testing.assert_close(w3, reference(lambda z, t: uncond(z, t) + 3.0 * (cond(z, t) - uncond(z, t))),
                                   rtol=1e-4, atol=1e-4)
        w0 = sampler.latents(prompts, 0.0, 5)
        torch.testing.assert_close(w0, reference(uncond), rtol=1e-4, atol=1e-4)
    assert (w1 - w0).abs().max() > 1e-2 and (w3 - w1).abs().max() > 1e-2      # the prompt and the scale matter
    assert torch.equal(sampler.latents(prompts, 3.0, 5), w3)                  # seeded


@needs_evaluator
def test_evaluation_reports_agreement_and_fid_vs_guidance(runs, tmp_path):
    m, plots = runs["own"].metrics, runs["own"].folder / "plots"
    for w in ("w1", "w3"):
        assert 0 <= m[f"{w}_agreement"] <= 1 and m[f"{w}_fid"] > 0 and 0 <= m[f"{w}_recall"] <= 1
        assert (plots / f"samples_{w}.png").is_file()
    assert m["agreement"] == m["w3_agreement"] and m["fid"] == m["w3_fid"]        # the default guidance, 3
    assert m["floor_fid"] < m["ceiling_fid"] and 0.5 < m["real_agreement"] <= 1
    assert (plots / "guidance.png").is_file() and (plots / "curves.png").is_file()
    table = (plots / "guidance.md").read_text()
    assert "real images (floor)" in table and "noise (ceiling)" in table and table.count("\n| 3 |") == 1
    assert _png_size(plots / "samples_w3.png") == _grid_size(tmp_path, 20, 2)   # one row per class, eval.grid_columns wide
    again = evaluate_run(runs["own"].folder, **FAST)               # from the best weights alone
    assert again["w3_agreement"] == m["w3_agreement"] and again["w1_fid"] == pytest.approx(m["w1_fid"])


def test_generate_writes_a_seeded_grid_of_n_images(runs, tmp_path, capsys):
    folder = runs["used"].folder
    paths = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"g{i}.png"
        assert main(["generate", str(folder), "a dark ankle boot", "--n", "6", "--seed", str(seed), "--guidance",
                     "2.5", "--out", str(out)]) == 0
        row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert row["image"] == str(out) and row["n"] == 6 and row["guidance"] == 2.5 and row["seed"] == seed
        paths.append(out)
    assert _png_size(paths[0]) == _grid_size(tmp_path, 6, math.ceil(math.sqrt(6))) != _grid_size(tmp_path, 4, 2)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    default = generate_run(folder, "a dark ankle boot", n=2)                 # the run's samples/ folder
    assert Path(default["image"]).parent == folder / "samples" and default["guidance"] == 3.0


def test_predict_and_generate_share_one_path(runs):
    folder = runs["used"].folder
    [row] = predict_run(folder, ["a photo of a sneaker"])
    assert row["input"] == "a photo of a sneaker" and row["n"] == PREDICT_N and row["seed"] == PREDICT_SEED
    predicted = Path(row["image"]).read_bytes()
    generated = generate_run(folder, "a photo of a sneaker", n=PREDICT_N, seed=PREDICT_SEED)
    assert Path(generated["image"]).read_bytes() == predicted


@pytest.mark.parametrize("args, match", [
    (["a purple zebra sneaker"], "unknown words 'purple', 'zebra'; known:"),
    (["a photo of a unicorn"], "unknown word 'unicorn'; known:"),
    (["   "], "the prompt is empty"),
    ([", . !"], "empty prompt"),
    (["a sneaker", "--guidance", "nan"], "--guidance must be a number between 0 and 50"),
    (["a sneaker", "--guidance", "-1"], "--guidance must be a number between 0 and 50"),
    (["a sneaker", "--guidance", "1000"], "--guidance must be a number between 0 and 50"),
    (["a sneaker", "--n", "0"], "--n must be an integer between 1 and 256"),
])
def test_generate_bad_input_is_one_line_with_exit_code_2(runs, capsys, args, match):
    assert match in _one_line(capsys, ["generate", str(runs["used"].folder), *args])


def test_bad_prompts_and_scales_through_the_api_and_predict(runs):
    folder = runs["used"].folder
    with pytest.raises(UserError, match="unknown word 'zebra'"):
        predict_run(folder, ["a photo of a sneaker", "a zebra"])
    with pytest.raises(UserError, match="empty prompt"):
        predict_run(folder, [""])
    sampler = run_sampler(load_run(folder))
    for w in (float("nan"), -1.0, 1000.0, float("inf")):
        with pytest.raises(UserError, match="guidance scale must be a number between 0 and 50"):
            sampler.latents(["a sneaker"], w, 0)


def test_an_interrupted_unet_stage_resumes_to_the_uninterrupted_result(tmp_path, needs_fashion):
    # captions (seed, epoch), caption dropout and t / eps (the checkpointed global RNG) continue where they
    # stopped; the finished vae and clip stages are not trained again
    settings = {**SMOKE, "p_uncond": 0.5}
    straight = learnloop.run("text-to-image", out=tmp_path / "a", set={**settings, "train.epochs": 2}, **FAST)
    first = learnloop.run("text-to-image", out=tmp_path / "b", set=settings, **FAST)
    config = json.loads((first.folder / "config.json").read_text())
    config["config"]["train"]["epochs"] = 2
    (first.folder / "config.json").write_text(json.dumps(config))
    resumed = resume_run(first.folder, **FAST)
    rows = [json.loads(line) for line in (first.folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("stage") for r in rows] == ["vae", "clip", "unet", "unet"]
    for key in ("val_loss", "train_loss", "best_val_loss", "w3_fid", "w1_agreement"):
        if key in straight.metrics:
            assert resumed.metrics[key] == straight.metrics[key], key


def test_it_learns_the_noise_of_latents_on_a_subset(runs, tmp_path):
    """Twelve short epochs on 2000 images: the U-Net's validation loss (EMA weights, fixed t and eps) falls
    well below the 1.0 of predicting eps = 0, and below its first epoch's."""
    settings = {**UNET_ONLY, "vae_run": str(runs["spatial"].folder), "clip_run": str(runs["clip"].folder),
                "timesteps": 100, "unet.base_channels": 16, "unet.norm_groups": 4, "unet.attention_heads": 2,
                "train.epochs": 12, "train.steps_per_epoch": 10, "train.batch_size": 32, "data.subset": 2000,
                "data.val_samples": 256, "ema_decay": 0.9, "eval.per_class": 1, "eval.guidance_scales": "1",
                "eval.k": 3, "eval.splits": 2}
    run = learnloop.run("text-to-image", out=tmp_path, set=settings, **FAST)
    losses = [r["val_loss"] for r in load_run(run.folder).history("unet") if "val_loss" in r]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0] and losses[-1] < 0.45, losses
