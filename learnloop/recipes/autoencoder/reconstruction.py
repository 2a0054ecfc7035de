"""The reconstruction recipes: one configuration (`ReconstructionConfig`) and one set of parts, different defaults.

    autoencoder               compress to a latent vector of `model.latent_dim` and back (Hinton &
                              Salakhutdinov, 2006); baselines: the training set's mean image, and PCA
                              with as many components (the best linear autoencoder)
    denoising-ae              Gaussian noise (std `corruption.noise_std`, clipped to [0, 1]) in, clean image
                              out (Vincent et al., 2008); PSNR and SSIM of the output, of the noisy input and
                              of a Gaussian blur of it (sigma chosen on the validation split)
    inpainting                random rectangles (sides in `corruption.mask_size`) zeroed, the mask given as
                              a second channel, the holes restored; PSNR on the holes and on the whole image,
                              beside zero, mean-image and blur (normalised convolution) fills
    autoencoder-latent-sweep  the autoencoder trained once per size in `latent_sizes` (stages latent_<k>):
                              test MSE and PSNR vs latent size, beside PCA, in one plot

so `learnloop run autoencoder --set corruption.kind=noise` is a denoising autoencoder. Every number is on the
test split (10k images; the corruption drawn from a fixed seed). The predictor turns image files into a PNG
of [input, output] (inpainting: FILE@TOP,LEFT,HEIGHT,WIDTH names the rectangle to restore).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import UserError
from learnloop.metrics.image import gaussian_blur, mse, psnr
from learnloop.models.autoencoder import Autoencoder
from learnloop.recipes.autoencoder.common import (
    SMOKE, AEDataConfig, AEModelConfig, best_sigma, example_images, first_batch, image_bundle, mean_image,
    model_kwargs, output_path, prefixed, read_images, save_rows, score,
)
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section, with_defaults
from learnloop.recipes.sections import TrainConfig
from learnloop.tasks.reconstruction import (
    CORRUPTIONS, LOSSES, Corruption, Reconstruction, blur_fill, mean_fill, pca_basis, pca_reconstruct,
)
from learnloop.utils.plots import plot_curves, plot_lines

GRID = 10                                    # test images in the reconstruction grid
RECTANGLE = re.compile(r"^(.*)@(\d{1,4}),(\d{1,4}),(\d{1,4}),(\d{1,4})$")


@dataclass
class CorruptionConfig:
    kind: str = param("none", "what the model's input loses: nothing, Gaussian noise, rectangles, or pixels "
                      "binarised", choices=CORRUPTIONS)
    noise_std: float = param(0.3, "noise: standard deviation of the Gaussian noise added to [0, 1] pixels",
                             min=0.0, max=10.0)
    mask_size: tuple[int, ...] = param((6, 14), "rectangles: min,max side in pixels (drawn uniformly)", min=1,
                                       length=2)
    mask_count: int = param(1, "rectangles: rectangles per image", min=1, max=16)
    mask_channel: bool = param(True, "rectangles: the model also sees the mask as an input channel")


@dataclass
class ReconstructionConfig:
    data: AEDataConfig = section(AEDataConfig, "data")
    model: AEModelConfig = section(AEModelConfig, "model")
    corruption: CorruptionConfig = section(CorruptionConfig, "corruption of the model's input")
    loss: str = param("bce", "per-pixel loss against the clean target", choices=LOSSES)
    blur_sigmas: tuple[float, ...] = param((0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "Gaussian sigmas (pixels) of the blur "
                                           "baselines; the best on the validation split is reported", min=0.1,
                                           max=20.0)
    train: TrainConfig = section(TrainConfig, "training", epochs=10, batch_size=128,
                                 optim=OptimConfig(name="adam", lr=2e-3), schedule=ScheduleConfig(kind="cosine"))


def corruption_of(cfg) -> Corruption:
    c = cfg.corruption
    lo, hi = c.mask_size
    if c.kind == "rectangles" and lo > hi:
        raise UserError(f"corruption.mask_size: min {lo} is larger than max {hi}")
    return Corruption(c.kind, c.noise_std, (lo, hi), c.mask_count)


def check_sizes(cfg, info: dict) -> None:
    _, h, w = info["shape"]
    if cfg.corruption.kind == "rectangles" and max(cfg.corruption.mask_size) > min(h, w):
        raise UserError(f"corruption.mask_size: a side of {max(cfg.corruption.mask_size)} does not fit in "
                        f"{h}x{w} images")


def make_task(cfg: ReconstructionConfig, info: dict, latent_dim: int | None = None) -> Reconstruction:
    check_sizes(cfg, info)
    uses_mask = cfg.corruption.kind == "rectangles" and cfg.corruption.mask_channel
    c = info["shape"][0]
    kwargs = model_kwargs(cfg.model)
    if latent_dim is not None:
        kwargs["latent_dim"] = latent_dim
    model = Autoencoder(tuple(info["shape"]), in_channels=c + 1 if uses_mask else c, **kwargs)
    return Reconstruction(model, cfg.train.optim, cfg.loss, mask_channel=uses_mask,
                          keep_visible=cfg.corruption.kind == "rectangles")


def evaluate_model(task: Reconstruction, cfg, data: Bundle, run, tag: str = "") -> dict:
    """Test metrics of `task` with the baselines of its corruption, the reconstruction grid and the curves."""
    kind = cfg.corruption.kind
    splits = data.extra["splits"]
    mean = mean_image(splits.train)
    methods = {"test": task.reconstruct}
    if kind in ("none", "binarize"):
        methods["mean_image"] = lambda x, m: mean.unsqueeze(0).expand_as(x)
    metrics: dict = {}
    rows_extra = []
    if kind == "noise":
        sigma = best_sigma(data.val, lambda s: lambda x, m: gaussian_blur(x, s), cfg.blur_sigmas)
        methods["noisy"] = lambda x, m: x
        methods["blur"] = lambda x, m: gaussian_blur(x, sigma)
        metrics["blur_sigma"] = sigma
        rows_extra.append(lambda x, m: gaussian_blur(x, sigma))
    if kind == "rectangles":
        sigma = best_sigma(data.val, lambda s: lambda x, m: blur_fill(x, m, s, mean), cfg.blur_sigmas, masked=True,
                           metric="masked_psnr")
        methods.update({"zero_fill": lambda x, m: x, "mean_fill": lambda x, m: mean_fill(x, m, mean),
                        "blur_fill": lambda x, m: blur_fill(x, m, sigma, mean)})
        metrics["blur_fill_sigma"] = sigma
        rows_extra.append(lambda x, m: blur_fill(x, m, sigma, mean))
    metrics.update(score(data.test, methods, masked=kind == "rectangles"))
    metrics["test_images"] = len(splits.test)
    inputs, targets, masks = first_batch(data.test, GRID)
    rows = [targets, task.reconstruct(inputs, masks)] if kind == "none" else \
        [inputs, *(f(inputs, masks) for f in rows_extra), task.reconstruct(inputs, masks), targets]
    save_rows(rows, run.plots / f"{tag}reconstructions.png")
    return metrics


def summarise(run, stage: str, tag: str = "") -> dict:
    history = [r for r in run.history(stage) if "val_loss" in r]
    if not history:
        return {}
    plot_curves(history, run.plots / f"{tag}curves.png", title=run.path.parent.name)
    return {"epochs_trained": max(r["epoch"] for r in history), "best_val_loss": min(r["val_loss"] for r in history)}


class ReconstructionPredictor(Predictor):
    """Image files -> a PNG of [input, output(s)] in the run's samples/ folder, and the MSE/PSNR of each
    output against the input (how much a reconstruction changes the image). A denoising model takes the
    image as given (as the noisy input); an inpainting model restores a rectangle of it."""

    def __init__(self, run, tasks: dict[str, Reconstruction]):
        self.run, self.tasks = run, tasks
        self.shape = tuple(run.info["shape"])
        self.corruption = corruption_of(run.cfg)
        self.rectangles = run.cfg.corruption.kind == "rectangles"
        extra = (" or FILE@TOP,LEFT,HEIGHT,WIDTH, the rectangle to restore in the "
                 f"{self.shape[1]}x{self.shape[2]} image (default: one drawn with seed 0)") if self.rectangles else ""
        self.inputs = (f"image files (PNG, JPEG, ...): light items on a dark background, like the training images"
                       f"{extra}; PNGs go to the run's samples/ folder")

    def examples(self, folder) -> list[str]:
        paths = example_images(folder, self.shape)
        return paths + ([f"{paths[0]}@4,6,10,8"] if self.rectangles else [])

    def _parse(self, raw: str) -> tuple[str, tuple[int, int, int, int] | None]:
        if not isinstance(raw, str) or not raw.strip():
            raise UserError("predict takes image file paths; got an empty input")
        m = RECTANGLE.match(raw) if self.rectangles and not Path(raw).exists() else None
        if m is None:
            return raw, None
        top, left, h, w = (int(g) for g in m.groups()[1:])
        _, height, width = self.shape
        if h < 1 or w < 1 or top + h > height or left + w > width:
            raise UserError(f"{raw!r}: the rectangle {top},{left},{h},{w} (top,left,height,width) must lie inside "
                            f"the {height}x{width} image with positive sides")
        return m.group(1), (top, left, h, w)

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        parsed = [self._parse(r) for r in raw]
        x = read_images([p for p, _ in parsed], self.shape)
        out = []
        for i, ((path, rect), text) in enumerate(zip(parsed, raw)):
            xi = x[i:i + 1]
            if self.rectangles:
                if rect is None:
                    inputs, _, masks = self.corruption(xi, torch.Generator().manual_seed(0))
                else:
                    masks = torch.zeros_like(xi[:, :1])
                    top, left, h, w = rect
                    masks[..., top:top + h, left:left + w] = 1
                    inputs = xi * (1 - masks)
            else:
                inputs, masks = xi, torch.ones_like(xi[:, :1])
            outputs = {name: task.reconstruct(inputs, masks) for name, task in self.tasks.items()}
            png = output_path(self.run, path, i)
            save_rows([torch.cat([inputs, *outputs.values()])], png)
            row = {"input": text, "path": str(png)}
            for name, y in outputs.items():
                key = f"{name}_" if len(outputs) > 1 else ""
                row[f"{key}mse_to_input"] = round(float(mse(xi, y)[0]), 6)
                row[f"{key}psnr_to_input"] = round(float(psnr(xi, y)[0]), 3)
            if self.rectangles:
                row["masked_pixels"] = int(masks.sum())
            out.append(row)
        return out


class ReconstructionParts(Parts):
    def data(self, cfg: ReconstructionConfig, seed: int) -> Bundle:
        return image_bundle(cfg.data, cfg.train.batch_size, corruption_of(cfg), seed)

    def build(self, cfg: ReconstructionConfig, info: dict) -> Reconstruction:
        return make_task(cfg, info)

    def evaluate(self, cfg: ReconstructionConfig, run, data: Bundle) -> dict:
        return {**summarise(run, ""), **evaluate_model(run.task, cfg, data, run)}

    def predictor(self, run) -> Predictor:
        return ReconstructionPredictor(run, {"": run.task})


def _recipe(name: str, summary: str, target: str, main_metric: str, smoke: dict | None = None, **defaults):
    config = with_defaults(ReconstructionConfig, name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, target=target, main_metric=main_metric,
           smoke={**SMOKE, "blur_sigmas": "1.0,2.0", **(smoke or {})})(
        ReconstructionParts)


_recipe("autoencoder", "convolutional autoencoder: 28x28 -> latent vector (model.latent_dim) -> 28x28",
        "test_psnr >= 19 dB at latent_dim=16 (PCA with 16 components: 17.0 dB)",
        "test_psnr")
_recipe("denoising-ae", "denoising autoencoder: Gaussian noise (std 0.3, clipped) in, clean image out",
        "test_psnr and test_ssim above the noisy input's and the best Gaussian blur's", "test_psnr",
        corruption=dict(kind="noise", noise_std=0.3), model=dict(latent="spatial", latent_channels=8))
_recipe("inpainting", "inpainting: a random rectangle (6..14 px sides) zeroed, mask as a channel, restored",
        "test_masked_psnr above the mean-image and blur fills'", "test_masked_psnr",
        corruption=dict(kind="rectangles"), model=dict(latent_dim=64))


# --- latent sweep: one autoencoder per latent size -----------------------------------------------------------------
@dataclass
class LatentSweepConfig(ReconstructionConfig):
    latent_sizes: tuple[int, ...] = param((2, 4, 8, 16, 32, 64), "latent vector sizes, one autoencoder each",
                                          min=1, max=4096)
    pca_images: int = param(20000, "training images the PCA baseline is fitted on (0: all)", min=0)


def _stage_name(k: int) -> str:
    return f"latent_{k}"


@recipe("autoencoder-latent-sweep", "autoencoder trained once per latent size: reconstruction error vs latent "
        "size, beside PCA", with_defaults(LatentSweepConfig, "AutoencoderLatentSweepConfig", train=dict(epochs=3)),
        target="test MSE falls as the latent size grows; the autoencoder beats PCA at every size <= 16",
        main_metric="latent_16_test_psnr", smoke={**SMOKE, "latent_sizes": "2,4", "pca_images": 300})
class LatentSweep(Parts):
    def data(self, cfg: LatentSweepConfig, seed: int) -> Bundle:
        if len(set(cfg.latent_sizes)) != len(cfg.latent_sizes) or not cfg.latent_sizes:
            raise UserError(f"latent_sizes: give distinct sizes, got {','.join(map(str, cfg.latent_sizes))}")
        if cfg.model.latent != "vector":
            raise UserError("autoencoder-latent-sweep varies the latent vector's size: model.latent must be vector")
        return image_bundle(cfg.data, cfg.train.batch_size, corruption_of(cfg), seed)

    def stages(self, cfg: LatentSweepConfig, info: dict, upstream: dict) -> list[Stage]:
        def build(k):
            return lambda trained: make_task(cfg, info, latent_dim=k)

        return [Stage(_stage_name(k), build(k), cfg.train) for k in cfg.latent_sizes]

    def evaluate(self, cfg: LatentSweepConfig, run, data: Bundle) -> dict:
        splits = data.extra["splits"]
        train_images = splits.train.images
        if 0 < cfg.pca_images < len(train_images):
            keep = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(run.seed))
            train_images = train_images[keep[:cfg.pca_images]]
        x_train = train_images.float() / 255
        metrics: dict = {}
        ae_mse, pca_mse, ae_psnr, pca_psnr = [], [], [], []
        mean, directions = pca_basis(x_train, min(max(cfg.latent_sizes), x_train[0].numel()))
        for k in cfg.latent_sizes:
            name = _stage_name(k)
            basis = directions[:, :k]
            methods = {"test": run.tasks[name].reconstruct,
                       "pca": lambda x, m, basis=basis: pca_reconstruct(x, mean, basis)}
            got = score(data.test, methods)
            metrics.update(prefixed(f"{name}_", got))
            metrics.update(prefixed(f"{name}_", summarise(run, name, f"{name}_")))
            ae_mse.append(got["test_mse"])
            pca_mse.append(got["pca_mse"])
            ae_psnr.append(got["test_psnr"])
            pca_psnr.append(got["pca_psnr"])
        sizes = list(cfg.latent_sizes)
        order = sorted(range(len(sizes)), key=lambda i: sizes[i])

        def series(values):
            return [sizes[i] for i in order], [values[i] for i in order]

        plot_lines({"conv autoencoder": series(ae_mse), "PCA (best linear)": series(pca_mse)},
                   run.plots / "mse_vs_latent_size.png", "latent size (units)", "test MSE per pixel",
                   "reconstruction error vs latent size", logx=True, logy=True)
        plot_lines({"conv autoencoder": series(ae_psnr), "PCA (best linear)": series(pca_psnr)},
                   run.plots / "psnr_vs_latent_size.png", "latent size (units)", "test PSNR (dB)",
                   "reconstruction quality vs latent size", logx=True)
        inputs, targets, masks = first_batch(data.test, GRID)
        save_rows([targets] + [run.tasks[_stage_name(sizes[i])].reconstruct(inputs, masks) for i in order],
                  run.plots / "reconstructions_by_latent_size.png")
        metrics["test_images"] = len(splits.test)
        return metrics

    def predictor(self, run) -> Predictor:
        names = sorted(run.tasks, key=lambda n: int(n.split("_")[1]))
        return ReconstructionPredictor(run, {n: run.tasks[n] for n in names})


__all__ = ["ReconstructionConfig", "ReconstructionParts", "LatentSweep", "LatentSweepConfig", "make_task"]
