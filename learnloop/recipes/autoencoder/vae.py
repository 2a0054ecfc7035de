"""The variational autoencoder (Kingma & Welling, 2014) on Fashion-MNIST: `vae` and its 2-D latent variant `vae-2d`.

One configuration (`VAEConfig`) and one set of parts: model learnloop.models.autoencoder.VAE, objective
learnloop.losses.vae, task learnloop.tasks.reconstruction.VariationalAutoencoding. Training logs the
reconstruction term and the KL term separately every epoch (train_recon, train_kl, val_recon, val_kl, nats
per image), the ELBO (train_elbo, val_elbo) and the KL weight beta * w_t of the linear warm-up. Evaluation,
on the test split:

- test_recon, test_kl, test_elbo: one-sample ELBO with the closed-form KL, every test image;
- test_iwae_elbo, test_iwae_ll: mean log w and log-mean-exp of `iwae.k` importance weights (Burda et al.,
  2016) on the first `iwae.images` test images: the ELBO and the log-likelihood estimate, in nats;
- active_units: latent units u with Cov_x(E_q[z_u | x]) > 0.01 (Burda et al., 2016); test_mu_std,
  the standard deviation of every mu entry over the test set (a latent-diffusion consumer scales by 1 / it);
- samples: decoded z ~ N(0, I) (the Bernoulli means) scored by learnloop.evaluation.generative with the
  GANs' extractor and protocol (`eval.*`), beside its real-data floor and noise ceiling rows
  (sample_fid, floor_fid, ceiling_fid, ...); plots/samples.png and plots/reconstructions.png;
- with a 2-D latent vector (vae-2d): plots/latent_grid.png, the decoder over a grid of Gaussian quantiles
  z = (Phi^-1(p_i), Phi^-1(p_j)), p_i = (i + 1/2) / n (Kingma & Welling, fig. 4), and plots/latent_scatter.png,
  the test set's mu coloured by class.

As a latent compressor (a later text-to-image recipe consumes a `vae` run through load_run):
    run = load_run(path);  vae = run.model            # learnloop.models.autoencoder.VAE, eval mode
    mu, logvar = vae.encode(x)                        # x (N, 1, 28, 28) in [0, 1]
    x_hat = vae.decode(z)                             # z (N, *vae.latent_shape) -> images in [0, 1]
`vae.latent_shape` is (model.latent_dim,) with model.latent=vector (the default) and (model.latent_channels,
7, 7) with model.latent=spatial, e.g. `learnloop run vae --set model.latent=spatial` gives 4 x 7 x 7 latents
(with a small beta, e.g. 0.1, the latents keep more detail for a diffusion model to learn).

The predictor takes seeds (SEED or SEEDxN: samples as a PNG grid) and image files (the reconstruction and
that image's ELBO and IWAE estimate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.engine.callbacks import SampleGrid
from learnloop.engine.optim import OptimConfig
from learnloop.errors import UserError
from learnloop.evaluation.generative import GenerativeEvalConfig, evaluate_generated, extractor_ready, format_report
from learnloop.losses.vae import elbo_terms
from learnloop.models.autoencoder import VAE
from learnloop.recipes.autoencoder.common import (
    SMOKE, AEDataConfig, AEModelConfig, example_images, first_batch, grid_side, image_bundle, model_kwargs,
    output_path, read_images, save_rows,
)
from learnloop.recipes.autoencoder.reconstruction import summarise
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section, with_defaults
from learnloop.recipes.sections import TrainConfig
from learnloop.tasks.reconstruction import Corruption, VariationalAutoencoding, importance_weighted
from learnloop.utils.images import save_image_grid

SEEDS = re.compile(r"^(\d{1,19})(?:x(\d{1,4}))?$")
MAX_GRID = 256
GRID_SEED = 1234
ACTIVE_THRESHOLD = 0.01


@dataclass
class IWAEConfig:
    k: int = param(100, "importance samples per test image", min=1, max=100_000)
    images: int = param(1000, "test images (the first ones) the k-sample bound is computed on (0: all)", min=0)


@dataclass
class VAEConfig:
    data: AEDataConfig = section(AEDataConfig, "data")
    model: AEModelConfig = section(AEModelConfig, "model")
    beta: float = param(1.0, "weight of the KL term (beta-VAE; 1: the ELBO)", min=0.0, max=1000.0)
    kl_warmup_epochs: float = param(2.0, "KL warm-up: its weight rises linearly from 0 to beta over this many "
                                    "epochs (0: off)", min=0.0)
    binarize: bool = param(False, "train and test on Bernoulli-binarised pixels (then the nats are a "
                           "log-likelihood); default: grey pixels as Bernoulli means")
    iwae: IWAEConfig = section(IWAEConfig, "importance-weighted log-likelihood estimate (Burda et al., 2016)")
    grid_samples: int = param(64, "samples of a fixed z in the per-epoch grid (samples/)", min=1, max=1024)
    latent_grid: int = param(20, "2-D latent: side n of the decoded n x n grid over Gaussian quantiles", min=2,
                             max=60)
    scatter_points: int = param(5000, "2-D latent: test images drawn in the embedding scatter", min=1)
    train: TrainConfig = section(TrainConfig, "training", epochs=10, batch_size=128,
                                 optim=OptimConfig(name="adam", lr=1e-3))
    eval: GenerativeEvalConfig = section(GenerativeEvalConfig, "scoring of decoded samples z ~ N(0, I)")


def corruption_of(cfg: VAEConfig) -> Corruption:
    return Corruption("binarize" if cfg.binarize else "none")


def make_task(cfg: VAEConfig, info: dict) -> VariationalAutoencoding:
    model = VAE(tuple(info["shape"]), **model_kwargs(cfg.model))
    return VariationalAutoencoding(model, cfg.train.optim, cfg.beta, cfg.kl_warmup_epochs)


def _flatten(prefix: str, result: dict) -> dict:
    out = {}
    for k, v in result.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


@torch.no_grad()
def test_elbo(model: VAE, loader, seed: int) -> dict:
    """One-sample ELBO terms (closed-form KL) over a split, nats per image; active units of mu."""
    g = torch.Generator().manual_seed(seed)
    recon, kl, mus = [], [], []
    for inputs, targets, _ in loader:
        logits, mu, logvar, _ = model(inputs, generator=g)
        r, k = elbo_terms(logits, targets, mu, logvar)
        recon.append(r)
        kl.append(k)
        mus.append(mu.flatten(1))
    recon, kl, mu = torch.cat(recon), torch.cat(kl), torch.cat(mus).double()
    active = int((mu.var(0, unbiased=False) > ACTIVE_THRESHOLD).sum())
    return {"test_recon": float(recon.mean()), "test_kl": float(kl.mean()), "test_elbo": float(-(recon + kl).mean()),
            "active_units": active, "latent_units": mu.shape[1], "test_mu_std": float(mu.std())}


def split_targets(loader, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the first n images of a split (all when n is 0)."""
    inputs, targets = [], []
    count = 0
    for x, y, _ in loader:
        inputs.append(x)
        targets.append(y)
        count += len(x)
        if n and count >= n:
            break
    inputs, targets = torch.cat(inputs), torch.cat(targets)
    return (inputs[:n], targets[:n]) if n else (inputs, targets)


def latent_grid(model: VAE, n: int) -> torch.Tensor:
    """Decoded n x n grid of z = (Phi^-1(p_j), Phi^-1(p_i)), p = (i + 1/2) / n; z_2 grows upwards."""
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).float()
    z1 = q.repeat(n)                          # columns: z_1 left to right
    z2 = q.flip(0).repeat_interleave(n)       # rows: z_2 top (high) to bottom (low)
    with torch.no_grad():
        return model.decode(torch.stack([z1, z2], dim=1))


def plot_embedding(mu: torch.Tensor, labels: torch.Tensor, classes, path) -> None:
    """Scatter of 2-D latent means coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learnloop.utils.io import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(classes):
        pts = mu[labels == c]
        if len(pts):
            ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=3, alpha=0.6, color=cmap(c % 10), label=name)
    ax.set_xlabel("z_1 (mu)")
    ax.set_ylabel("z_2 (mu)")
    ax.set_title("test images in the 2-D latent space, by class")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def vae_stage(cfg: VAEConfig, info: dict) -> Stage:
    def callbacks(task):
        z = torch.randn((cfg.grid_samples, *task.model.latent_shape), generator=torch.Generator().manual_seed(GRID_SEED))

        def grid(learner):
            return task.model.decode(z.to(learner.device))

        return [SampleGrid(grid, value_range=(0.0, 1.0))]

    return Stage("", lambda trained: make_task(cfg, info), cfg.train, callbacks=callbacks)


class SeedsOrImages(Predictor):
    inputs = ("seeds: SEED (one sample) or SEEDxN (a grid of N <= 256 samples), e.g. 42 or 7x16; or image files "
              "(PNG, JPEG, ...): the reconstruction and that image's ELBO and IWAE estimate; PNGs go to the run's "
              "samples/ folder")

    def __init__(self, run):
        self.run, self.cfg, self.model = run, run.cfg, run.model
        self.shape = tuple(run.info["shape"])

    def examples(self, folder) -> list[str]:
        return ["42", "7x4", example_images(folder, self.shape, 1)[0]]

    def _sample(self, text: str, seed: int, n: int, index: int) -> dict:
        if seed >= 2 ** 63:
            raise UserError(f"{text!r}: the seed must be below 2**63")
        if not 1 <= n <= MAX_GRID:
            raise UserError(f"{text!r}: N must be between 1 and {MAX_GRID}")
        images = self.model.sample(n, torch.Generator().manual_seed(seed))
        path = output_path(self.run, f"seed{seed}" + (f"x{n}" if n > 1 else ""), index)
        save_image_grid(images, path, nrow=grid_side(n), value_range=(0.0, 1.0))
        return {"input": text, "path": str(path), "seed": seed, "samples": n}

    @torch.no_grad()
    def _image(self, text: str, index: int) -> dict:
        x = read_images([text], self.shape)
        g = torch.Generator().manual_seed(0)
        if self.cfg.binarize:
            x = Corruption("binarize")(x, g)[1]
        mu, _ = self.model.encode(x)
        recon = self.model.decode(mu)
        elbo, iwae = importance_weighted(self.model, x, self.cfg.iwae.k, g)
        path = output_path(self.run, text, index)
        save_rows([torch.cat([x, recon])], path)
        return {"input": text, "path": str(path), "elbo_nats": round(float(elbo[0]), 3),
                "iwae_log_likelihood_nats": round(float(iwae[0]), 3), "iwae_k": self.cfg.iwae.k}

    def __call__(self, raw: list[str]) -> list[dict]:
        out = []
        for i, text in enumerate(raw):
            if not isinstance(text, str) or not text.strip():
                raise UserError("predict takes seeds (42, 7x16) or image files; got an empty input")
            m = SEEDS.match(text.strip())
            if Path(text).exists():
                out.append(self._image(text, i))
            elif m is not None:
                out.append(self._sample(text, int(m.group(1)), int(m.group(2) or 1), i))
            else:
                raise UserError(f"{text!r}: neither a seed (42, 7x16) nor an existing image file")
        return out


class VAEParts(Parts):
    def data(self, cfg: VAEConfig, seed: int) -> Bundle:
        if cfg.eval.k >= cfg.eval.samples or cfg.eval.splits > cfg.eval.samples:
            raise UserError(f"eval: need k < samples and splits <= samples, got k={cfg.eval.k}, "
                            f"splits={cfg.eval.splits}, samples={cfg.eval.samples}")
        extractor_ready(cfg.eval)                   # an unknown extractor or a missing weights file fails now
        return image_bundle(cfg.data, cfg.train.batch_size, corruption_of(cfg), seed)

    def stages(self, cfg: VAEConfig, info: dict, upstream: dict) -> list[Stage]:
        return [vae_stage(cfg, info)]

    def evaluate(self, cfg: VAEConfig, run, data: Bundle) -> dict:
        model: VAE = run.model
        model.eval()
        metrics = {**summarise(run, ""), **test_elbo(model, data.test, run.seed)}
        x_in, targets = split_targets(data.test, cfg.iwae.images)
        elbo_k, iwae_k = importance_weighted(model, targets, cfg.iwae.k, torch.Generator().manual_seed(run.seed + 1))
        metrics.update({"test_iwae_elbo": float(elbo_k.mean()), "test_iwae_ll": float(iwae_k.mean()),
                        "iwae_k": cfg.iwae.k, "iwae_images": len(targets)})
        run.say(f"test ELBO {metrics['test_elbo']:.2f} nats (recon {metrics['test_recon']:.2f}, KL "
                f"{metrics['test_kl']:.2f}); IWAE (k={cfg.iwae.k}, {len(targets)} images) "
                f"{metrics['test_iwae_ll']:.2f} vs ELBO {metrics['test_iwae_elbo']:.2f} on the same images")
        samples = model.sample(cfg.eval.samples, torch.Generator().manual_seed(run.seed + 77))
        save_image_grid(samples[:100], run.plots / "samples.png", nrow=10, value_range=(0.0, 1.0))
        inputs, grid_targets, _ = first_batch(data.test, 10)
        with torch.no_grad():
            save_rows([grid_targets, model.decode(model.encode(inputs)[0])], run.plots / "reconstructions.png")
        if extractor_ready(cfg.eval):
            result = evaluate_generated(samples, cfg.eval, run.seed, value_range=(0.0, 1.0))
            run.say(f"samples z ~ N(0, I):\n{format_report(result)}")
            metrics.update(_flatten("sample_", result))
            for key in ("floor", "ceiling"):
                if isinstance(result.get(key), dict):
                    metrics.update(_flatten(f"{key}_", result[key]))
        else:
            run.say("evaluator weights missing: skipping FID/KID/precision/recall of the samples (run "
                    "bench/train_evaluator.py, then `learnloop eval RUN_DIR`)")
        if tuple(model.latent_shape) == (2,):
            save_image_grid(latent_grid(model, cfg.latent_grid), run.plots / "latent_grid.png", nrow=cfg.latent_grid,
                            value_range=(0.0, 1.0))
            x_all, _ = split_targets(data.test, cfg.scatter_points)
            with torch.no_grad():
                mu = model.encode(x_all)[0]
            labels = data.extra["splits"].test.labels[:len(mu)]
            plot_embedding(mu, labels, run.info["classes"], run.plots / "latent_scatter.png")
        return metrics

    def predictor(self, run) -> Predictor:
        return SeedsOrImages(run)


VAE_SMOKE = {**SMOKE, "eval.samples": 200, "iwae.k": 4, "iwae.images": 50, "grid_samples": 16}
_TARGET = ("ELBO and IWAE log-likelihood (k=100) on the test split reported, IWAE >= ELBO; sample FID below the "
           "noise ceiling, with the floor beside it")


def _vae_recipe(name: str, summary: str, target: str, **defaults) -> None:
    config = with_defaults(VAEConfig, name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, target=target, main_metric="test_iwae_ll", smoke=VAE_SMOKE)(VAEParts)


_vae_recipe("vae", "VAE (Kingma & Welling, 2014): Gaussian encoder, Bernoulli decoder, ELBO, KL warm-up, IWAE", _TARGET)
_vae_recipe("vae-2d", "VAE with a 2-D latent: decoded latent grid and test embedding coloured by class",
            "the 2-D latent map: decoded grid over Gaussian quantiles and test-set mu by class; " + _TARGET,
            model=dict(latent_dim=2))

__all__ = ["VAEConfig", "VAEParts", "make_task", "latent_grid"]
