"""The autoencoder family: one configuration for the reconstruction recipes, 'it learns' on a real subset
(seconds each, beside the baselines), the latent sweep, the VAE's logged terms, IWAE and 2-D map, runs
reloaded through load_run (the VAE as a latent compressor), the corrupting loader, bad input."""

import json

import pytest
import torch

import learnloop
from learnloop.cli import main
from learnloop.errors import UserError
from learnloop.models.autoencoder import VAE
from learnloop.recipes import load_run, predict_run, recipes
from learnloop.recipes.autoencoder.common import ReconstructionBatches
from learnloop.recipes.autoencoder.reconstruction import ReconstructionConfig, ReconstructionParts
from learnloop.recipes.autoencoder.vae import VAEConfig, VAEParts
from learnloop.tasks.reconstruction import Corruption

FAST = dict(progress=False, quiet=True)
SMALL = {"data.subset": 2000, "data.val_fraction": 0.01, "data.test_subset": 1000, "train.epochs": 2,
         "train.batch_size": 64}
VAE_SMALL = {**SMALL, "iwae.k": 20, "iwae.images": 200, "eval.samples": 500, "kl_warmup_epochs": 1}
TINY = {"data.subset": 128, "data.val_fraction": 0.005, "data.test_subset": 100, "train.epochs": 1,
        "train.batch_size": 32, "blur_sigmas": "1.0"}
VAE_TINY = {**{k: v for k, v in TINY.items() if k != "blur_sigmas"}, "iwae.k": 3, "iwae.images": 20,
            "eval.samples": 100}


def test_the_family_is_two_configurations_with_different_defaults():
    family = {n: r for n, r in recipes().items() if r.family == "autoencoder"}
    assert set(family) == {"autoencoder", "denoising-ae", "inpainting", "autoencoder-latent-sweep", "vae", "vae-2d"}
    for name in ("autoencoder", "denoising-ae", "inpainting"):
        assert type(family[name].parts) is ReconstructionParts and issubclass(family[name].config, ReconstructionConfig)
    assert issubclass(family["autoencoder-latent-sweep"].config, ReconstructionConfig)
    for name in ("vae", "vae-2d"):
        assert type(family[name].parts) is VAEParts and issubclass(family[name].config, VAEConfig)
    cfg = {n: r.config() for n, r in family.items()}
    assert cfg["autoencoder"].corruption.kind == "none" and cfg["denoising-ae"].corruption.kind == "noise"
    assert cfg["inpainting"].corruption.kind == "rectangles" and cfg["inpainting"].corruption.mask_channel
    assert cfg["vae-2d"].model.latent_dim == 2 and cfg["vae"].model.latent_dim == 16
    assert cfg["autoencoder-latent-sweep"].latent_sizes == (2, 4, 8, 16, 32, 64)
    assert all(r.target and r.main_metric for r in family.values())


def test_autoencoder_learns(tmp_path, needs_fashion):
    run = learnloop.run("autoencoder", out=tmp_path, set=SMALL, **FAST)
    m = run.metrics
    assert m["test_psnr"] > m["mean_image_psnr"] + 2.0 and m["test_ssim"] > m["mean_image_ssim"] + 0.1
    assert m["test_images"] == 1000 and (run.folder / "plots" / "reconstructions.png").is_file()
    assert run.model.latent_shape == (16,)


def test_denoising_autoencoder_beats_its_noisy_input(tmp_path, needs_fashion):
    run = learnloop.run("denoising-ae", out=tmp_path, set=SMALL, **FAST)
    m = run.metrics
    assert m["test_psnr"] > m["noisy_psnr"] + 2.0 and m["test_ssim"] > m["noisy_ssim"]
    assert m["blur_psnr"] > m["noisy_psnr"] and m["blur_sigma"] in run.config.blur_sigmas   # a real baseline
    assert {"blur_ssim", "test_mse", "noisy_mse"} <= set(m)


def test_inpainting_restores_holes_better_than_the_mean_image(tmp_path, needs_fashion):
    run = learnloop.run("inpainting", out=tmp_path, set=SMALL, **FAST)
    m = run.metrics
    assert m["test_masked_psnr"] > m["mean_fill_masked_psnr"] + 0.5 > m["zero_fill_masked_psnr"] + 0.5
    assert m["test_psnr"] > m["test_masked_psnr"]           # visible pixels are kept exactly
    assert m["blur_fill_masked_psnr"] > m["mean_fill_masked_psnr"]
    rows = predict_run(run.folder, [f"{p}@2,3,10,12" for p in _pngs(tmp_path, 1)])
    assert rows[0]["masked_pixels"] == 120 and (run.folder / "samples").is_dir()


def test_latent_sweep_error_falls_with_the_latent_size(tmp_path, needs_fashion):
    run = learnloop.run("autoencoder-latent-sweep", out=tmp_path,
                        set={**SMALL, "latent_sizes": "16,2", "pca_images": 2000}, **FAST)
    m = run.metrics
    assert m["latent_16_test_mse"] < m["latent_2_test_mse"] and m["latent_16_pca_mse"] < m["latent_2_pca_mse"]
    for name in ("mse_vs_latent_size.png", "psnr_vs_latent_size.png", "reconstructions_by_latent_size.png"):
        assert (run.folder / "plots" / name).is_file()
    loaded = load_run(run.folder)
    assert set(loaded.tasks) == {"latent_16", "latent_2"}
    assert loaded.tasks["latent_2"].model.latent_shape == (2,)
    rows = predict_run(run.folder, _pngs(tmp_path, 1))
    assert {"latent_2_psnr_to_input", "latent_16_psnr_to_input"} <= set(rows[0])


def test_vae_learns_logs_both_terms_and_reports_iwae(tmp_path, needs_fashion):
    run = learnloop.run("vae", out=tmp_path, set=VAE_SMALL, **FAST)
    m = run.metrics
    assert m["test_elbo"] > -400                             # untrained: about -784 ln 2 = -543 nats
    assert m["test_elbo"] == pytest.approx(-(m["test_recon"] + m["test_kl"]), rel=1e-6) and m["test_kl"] > 1
    assert m["test_iwae_ll"] > m["test_iwae_elbo"] and (m["iwae_k"], m["iwae_images"]) == (20, 200)
    assert m["active_units"] >= 1 and m["latent_units"] == 16
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "val_loss" in r]
    assert len(epochs) == 2
    for r in epochs:
        assert {"train_recon", "train_kl", "val_recon", "val_kl", "train_elbo", "val_elbo", "train_kl_weight"} <= set(r)
    assert epochs[0]["train_kl_weight"] < 0.6 < epochs[1]["train_kl_weight"] == pytest.approx(1.0)   # warm-up
    if "sample_fid" in m:                                     # the evaluator is installed
        assert m["floor_fid"] < m["sample_fid"] and {"sample_precision", "sample_recall", "ceiling_fid"} <= set(m)
    assert (run.folder / "plots" / "samples.png").is_file() and (run.folder / "samples" / "epoch_002.png").is_file()


def test_vae_2d_draws_the_latent_map(tmp_path, needs_fashion):
    run = learnloop.run("vae-2d", out=tmp_path, set={**VAE_TINY, "latent_grid": 5, "scatter_points": 50}, **FAST)
    assert run.model.latent_shape == (2,)
    assert (run.folder / "plots" / "latent_grid.png").is_file() and (run.folder / "plots" / "latent_scatter.png").is_file()


def test_a_spatial_vae_reloads_as_a_latent_compressor(tmp_path, needs_fashion):
    run = learnloop.run("vae", out=tmp_path, set={**VAE_TINY, "model.latent": "spatial", "model.latent_channels": 4,
                                                  "beta": 0.1}, **FAST)
    loaded = load_run(run.folder)
    vae = loaded.model
    assert isinstance(vae, VAE) and vae.latent_shape == (4, 7, 7) and not vae.training
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 4, 7, 7)
    out = vae.decode(mu)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    with torch.no_grad():
        assert torch.equal(out, run.model.decode(run.model.encode(x)[0]))   # the trained weights
    assert loaded.cfg.beta == 0.1 and loaded.info["shape"] == [1, 28, 28]


def test_predictors_and_their_bad_inputs(tmp_path, needs_fashion, capsys):
    vae = learnloop.run("vae", out=tmp_path, set=VAE_TINY, **FAST)
    png = _pngs(tmp_path, 1)[0]
    rows = predict_run(vae.folder, ["3", "5x4", png])
    assert [r["samples"] for r in rows[:2]] == [1, 4] and rows[2]["iwae_log_likelihood_nats"] <= 0
    assert rows[2]["iwae_log_likelihood_nats"] >= rows[2]["elbo_nats"] - 50
    inpaint = learnloop.run("inpainting", out=tmp_path, set=TINY, **FAST)
    for folder, raw, message in ((vae.folder, "7x999", "N must be between 1 and 256"),
                                 (vae.folder, "a-cat", "neither a seed"),
                                 (vae.folder, "", "empty input"),
                                 (inpaint.folder, f"{png}@20,20,10,10", "must lie inside"),
                                 (inpaint.folder, str(tmp_path / "missing.png"), "no such image file")):
        with pytest.raises(UserError, match=message):
            predict_run(folder, [raw])
        assert main(["predict", str(folder), raw]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_config_mistakes_are_one_line_user_errors(tmp_path, needs_fashion):
    with pytest.raises(UserError, match="distinct sizes"):
        learnloop.run("autoencoder-latent-sweep", out=tmp_path, set={**TINY, "latent_sizes": "4,4"}, **FAST)
    with pytest.raises(UserError, match="min 10 is larger than max 5"):
        learnloop.run("inpainting", out=tmp_path, set={**TINY, "corruption.mask_size": "10,5"}, **FAST)
    with pytest.raises(UserError, match="does not fit"):
        learnloop.run("inpainting", out=tmp_path, set={**TINY, "corruption.mask_size": "10,40"}, **FAST)
    with pytest.raises(UserError, match="model.latent must be vector"):
        learnloop.run("autoencoder-latent-sweep", out=tmp_path, set={**TINY, "model.latent": "spatial"}, **FAST)
    with pytest.raises(UserError, match="need k < samples"):
        learnloop.run("vae", out=tmp_path, set={**VAE_TINY, "eval.samples": 5, "eval.k": 5}, **FAST)


def test_corrupting_loader_is_fixed_for_evaluation_and_fresh_per_training_epoch():
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    corruption = Corruption("noise", noise_std=0.3)
    test = ReconstructionBatches(images, 20, corruption, seed=3)
    first, again = [b[0] for b in test], [b[0] for b in test]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and [len(b) for b in first] == [20, 20, 10]
    train = ReconstructionBatches(images, 20, corruption, shuffle=True, seed=3)
    train.set_epoch(1)
    e1 = [b for b in train]
    train.set_epoch(2)
    e2 = [b for b in train]
    train.set_epoch(1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e1, train))           # a function of (seed, epoch)
    assert not torch.equal(e1[0][1], e2[0][1])                              # reshuffled
    clean = torch.cat([b[1] for b in e1])
    assert torch.equal(clean.sort(0).values, (images.float() / 255).sort(0).values)   # every image once
    assert ReconstructionBatches(images, 20, corruption, shuffle=True, seed=3, rank=1, world_size=2).num_items() == 25


def _pngs(folder, n):
    from PIL import Image

    paths = []
    for i in range(n):
        path = folder / f"user-{i}.png"
        Image.fromarray(torch.randint(0, 255, (30, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
                        .numpy()).save(path)
        paths.append(str(path))
    return paths


def test_a_vae_resumed_after_its_first_epoch_reaches_the_uninterrupted_metrics(tmp_path, needs_fashion):
    # the warm-up weight (from the learner's step), the binarisation stream (from seed and epoch) and the
    # reparameterisation noise (the checkpointed global RNG) all continue where they stopped
    settings = {**VAE_TINY, "binarize": "true", "kl_warmup_epochs": 2}
    straight = learnloop.run("vae", out=tmp_path / "a", set={**settings, "train.epochs": 2}, **FAST)
    first = learnloop.run("vae", out=tmp_path / "b", set=settings, **FAST)
    config = json.loads((first.folder / "config.json").read_text())
    config["config"]["train"]["epochs"] = 2                  # the run was planned for 2 epochs and stopped
    (first.folder / "config.json").write_text(json.dumps(config))
    resumed = learnloop.resume(first.folder, **FAST)
    for key in ("test_elbo", "test_recon", "test_kl", "test_iwae_ll", "best_val_loss"):
        assert resumed.metrics[key] == straight.metrics[key], key
