"""GAN training as a `Task` (manual optimisation): the two-player game of Goodfellow et al. (2014).

Every batch is one discriminator (critic) update; every `n_critic`-th batch is also a generator update
(Arjovsky et al., 2017 use n_critic = 5 for WGAN):

    D step:  z ~ N(0, I), x_f = G(z, y)                     (y: the real batch's labels, conditional only)
             L_D = d_loss(D(x, y), D(x_f, y)) + reg         reg: lambda * GP, gamma / 2 * R1, or none
             step D; with weight clipping, w <- clamp(w, -c, c)
    G step:  L_G = g_loss(D(x_f, y)) with D frozen; step G
             EMA generator (Karras et al., 2018; Yazici et al., 2019):
             theta_ema <- beta_t * theta_ema + (1 - beta_t) * theta,  beta_t = min(beta, (1 + t) / (10 + t))

Losses and regularizers are the composable functions of `learnloop.losses.adversarial` / `.regularizers`.
After each epoch the task writes a sample grid of a fixed noise batch (so epochs are comparable), can
compute a cheap fidelity metric through `monitor_fn` (e.g. FID on 2k samples -> "val_fid", which the
Learner can monitor for the best checkpoint), and checks for a runaway discriminator: if D separates real
from fake almost perfectly (accuracy >= `collapse_acc`, and L_D ~ 0 for losses bounded below; for the
Wasserstein critic, which separates by design, its gap -L_D above `collapse_gap` and still growing) while
L_G does not fall,
for `collapse_patience` epochs in a row, training stops with a message saying so
(`metrics["diverged"] = 1`). A NaN/Inf loss is caught by `learner.backward` (TrainingDiverged).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from learnloop.engine.optim import make_optimizer
from learnloop.engine.task import Task
from learnloop.errors import UserError
from learnloop.losses.adversarial import adversarial_loss, discriminator_accuracy
from learnloop.losses.regularizers import REGULARIZERS, clip_weights, gradient_penalty, r1_penalty
from learnloop.utils.images import save_image_grid, to_uint8

OPTIMIZERS = ("adam", "rmsprop")


def sample_noise(n: int, z_dim: int, truncation: float | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """z ~ N(0, I); with `truncation` t > 0 the truncation trick (Brock, Donahue & Simonyan, 2019): every
    coordinate with |z_i| > t is redrawn until it falls inside [-t, t] (a truncated normal)."""
    z = torch.randn(n, z_dim, generator=generator)
    if truncation is None or truncation <= 0:
        return z
    out = z.abs() > truncation
    while out.any():
        z[out] = torch.randn(int(out.sum()), generator=generator)
        out = z.abs() > truncation
    return z


@torch.no_grad()
def generate(generator: nn.Module, n: int, z_dim: int, num_classes: int = 0, *, labels: torch.Tensor | None = None,
             truncation: float | None = None, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """n images in [-1, 1] from `generator` in eval mode; class labels cycle 0..K-1 unless given."""
    g = torch.Generator().manual_seed(seed)
    z = sample_noise(n, z_dim, truncation, g)
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    was = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    try:
        outs = []
        for i in range(0, n, batch_size):
            y = labels[i:i + batch_size].to(device) if num_classes else None
            outs.append(generator(z[i:i + batch_size].to(device), y).float().cpu())
    finally:
        generator.train(was)
    return torch.cat(outs) if outs else torch.zeros(0, 1, 28, 28)


class AdversarialTask(Task):
    automatic_optimization = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, z_dim: int, num_classes: int = 0,
                 loss: str = "non-saturating", regularizer: str = "none", reg_weight: float = 10.0,
                 clip_value: float = 0.01, n_critic: int = 1, optimizer: str = "adam", lr_g: float = 2e-4,
                 lr_d: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), ema_decay: float = 0.999,
                 grid_size: int = 64, sample_seed: int = 1234,
                 monitor_fn: Callable[[torch.Tensor], dict] | None = None, monitor_every: int = 1,
                 monitor_samples: int = 2000, collapse_acc: float = 0.99, collapse_tol: float = 0.05,
                 collapse_patience: int = 3, collapse_gap: float = 1e3, time_budget_s: float = 0.0):
        self.loss = adversarial_loss(loss)
        if regularizer not in REGULARIZERS:
            raise UserError(f"unknown regularizer '{regularizer}'; choose from {', '.join(REGULARIZERS)}")
        if optimizer not in OPTIMIZERS:
            raise UserError(f"unknown GAN optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
        if n_critic < 1:
            raise UserError(f"n_critic must be >= 1, got {n_critic}")
        self.g, self.d = generator, discriminator
        self.z_dim, self.num_classes = z_dim, num_classes
        self.regularizer, self.reg_weight, self.clip_value = regularizer, reg_weight, clip_value
        self.n_critic, self.optimizer, self.lr_g, self.lr_d, self.betas = n_critic, optimizer, lr_g, lr_d, betas
        self.ema_decay = ema_decay
        self.g_ema = None
        if ema_decay > 0:
            self.g_ema = copy.deepcopy(generator)
            self.g_ema.requires_grad_(False)
        self.monitor_fn, self.monitor_every, self.monitor_samples = monitor_fn, monitor_every, monitor_samples
        self.collapse_acc, self.collapse_tol, self.collapse_patience = collapse_acc, collapse_tol, collapse_patience
        self.collapse_gap = collapse_gap
        self.time_budget_s = time_budget_s
        gen = torch.Generator().manual_seed(sample_seed)
        self.fixed_z = sample_noise(grid_size, z_dim, generator=gen)
        self.fixed_y = torch.arange(grid_size) % num_classes if num_classes else torch.zeros(0, dtype=torch.long)
        self.g_steps = 0
        self.streak, self.prev_g_loss, self.prev_d_loss, self.elapsed = 0, float("nan"), float("nan"), 0.0
        self._cpu_mark: float | None = None      # process CPU time at the start of the current epoch's work
        self.stop_message = ""

    # Task protocol ------------------------------------------------------------------------------------------
    def modules(self):
        mods = {"g": self.g, "d": self.d}
        if self.g_ema is not None:
            mods["g_ema"] = self.g_ema
        return mods

    def _opt(self, params, lr):
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        return make_optimizer("adam", params, lr, betas=self.betas)

    def configure_optimizers(self):
        return {"g": self._opt(self.g.parameters(), self.lr_g), "d": self._opt(self.d.parameters(), self.lr_d)}

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.g_ema if self.g_ema is not None else self.g

    def training_step(self, batch, learner):
        if self._cpu_mark is None:
            self._cpu_mark = time.process_time()
        x = batch[0]
        y = batch[1] if self.num_classes else None
        n = len(x)
        g_step = (learner.step + 1) % self.n_critic == 0
        z = torch.randn(n, self.z_dim, device=x.device)
        with torch.set_grad_enabled(g_step):
            fake = self.g(z, y)

        # discriminator / critic
        real_s = self.d(x, y)
        fake_s = self.d(fake.detach(), y)
        l_d = self.loss.d_loss(real_s, fake_s)
        out = {"d_loss": l_d.detach(), "d_acc": discriminator_accuracy(self.loss.name, real_s, fake_s),
               "d_real": real_s.detach().mean(), "d_fake": fake_s.detach().mean()}
        total = l_d
        if self.regularizer == "gp":
            gp = gradient_penalty(lambda t: self.d(t, y), x, fake)
            total = total + self.reg_weight * gp
            out["gp"] = gp.detach()
        elif self.regularizer == "r1":
            r1 = r1_penalty(lambda t: self.d(t, y), x)
            total = total + 0.5 * self.reg_weight * r1
            out["r1"] = r1.detach()
        learner.backward(total)
        learner.optimizer_step("d")
        if self.regularizer == "clip":
            clip_weights(self.d, self.clip_value)

        # generator
        if g_step:
            self.d.requires_grad_(False)
            try:
                l_g = self.loss.g_loss(self.d(fake, y))
                learner.backward(l_g)
                learner.optimizer_step("g")
            finally:
                self.d.requires_grad_(True)
            self.g_steps += 1
            self._update_ema()
            out["g_loss"] = l_g.detach()
        else:          # no G update on this batch: G's loss against the current D, for the epoch average
            out["g_loss"] = self.loss.g_loss(fake_s.detach())
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.g_ema is None:
            return
        beta = min(self.ema_decay, (1 + self.g_steps) / (10 + self.g_steps))
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
            pe.lerp_(p.detach(), 1 - beta)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
            be.copy_(b)

    def generate(self, n: int, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        return generate(self.sampler, n, self.z_dim, self.num_classes, truncation=truncation, seed=seed)

    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        g = self.sampler
        was = g.training
        g.eval()
        try:
            dev = next(g.parameters()).device
            y = self.fixed_y.to(dev) if self.num_classes else None
            return g(self.fixed_z.to(dev), y).cpu()
        finally:
            g.train(was)

    def on_epoch_end(self, learner, metrics):
        epoch = learner.epoch
        if learner.run is not None:
            tag = f"{learner.name}_" if learner.name else ""
            nrow = self.num_classes or None
            save_image_grid(self.fixed_samples(), learner.run.samples / f"{tag}epoch_{epoch:03d}.png", nrow=nrow,
                            value_range=(-1, 1))
        if self.monitor_fn is not None and (epoch % self.monitor_every == 0 or epoch == learner.epochs):
            images = to_uint8(self.generate(self.monitor_samples, seed=10_000 + epoch), (-1, 1))
            metrics.update({f"val_{k}": float(v) for k, v in self.monitor_fn(images).items()})
        self._check_collapse(learner, metrics)
        now = time.process_time()        # CPU seconds of all threads: a budget that contention does not shrink
        self.elapsed += now - (self._cpu_mark if self._cpu_mark is not None else now)
        self._cpu_mark = now
        metrics["cpu_min"] = self.elapsed / 60
        if self.time_budget_s and self.elapsed >= self.time_budget_s and learner.stop_reason is None \
                and epoch < learner.epochs:
            learner.request_stop(f"budget of {self.time_budget_s / 60:.3g} CPU minutes reached after epoch {epoch}")

    def _check_collapse(self, learner, metrics) -> None:
        d_loss, d_acc = metrics.get("train_d_loss"), metrics.get("train_d_acc")
        g_loss = metrics.get("train_g_loss")
        if d_loss is None or d_acc is None or g_loss is None or not math.isfinite(g_loss):
            return
        if self.loss.bounded:
            d_wins = d_acc >= self.collapse_acc and d_loss < self.collapse_tol
        else:    # a Wasserstein critic separates by design; runaway = its gap -L_D huge and still growing
            d_wins = (d_acc >= self.collapse_acc and -d_loss > self.collapse_gap and not math.isnan(self.prev_d_loss)
                      and d_loss < self.prev_d_loss)
        self.prev_d_loss = d_loss
        g_not_improving = math.isnan(self.prev_g_loss) or g_loss >= self.prev_g_loss - 1e-6 * abs(self.prev_g_loss)
        if not d_wins:
            self.streak = 0
        else:
            self.streak = self.streak + 1 if g_not_improving else 1
        self.prev_g_loss = g_loss
        metrics["d_wins_streak"] = float(self.streak)
        if self.streak >= self.collapse_patience:
            self.stop_message = (
                f"GAN diverged: the discriminator won for {self.streak} epochs (D loss {d_loss:.3g}, D accuracy "
                f"{d_acc:.3f}, G loss {g_loss:.3g} not falling), so the generator gets no useful gradient; stopped "
                f"at epoch {learner.epoch}. Try a lower D learning rate, the hinge or Wasserstein loss with a "
                f"gradient penalty, or spectral norm.")
            metrics["diverged"] = 1.0
            learner.request_stop(self.stop_message)

    def state_dict(self):
        return {"fixed_z": self.fixed_z, "fixed_y": self.fixed_y, "g_steps": self.g_steps, "streak": self.streak, "prev_g_loss": self.prev_g_loss,
                "prev_d_loss": self.prev_d_loss,
                "elapsed": self.elapsed, "stop_message": self.stop_message}

    def load_state_dict(self, state):
        if not state:
            return
        self.fixed_z, self.fixed_y = state["fixed_z"], state["fixed_y"]
        self.g_steps = int(state["g_steps"])
        self.streak, self.prev_g_loss = int(state["streak"]), float(state["prev_g_loss"])
        self.prev_d_loss = float(state.get("prev_d_loss", float("nan")))
        self.elapsed, self.stop_message = float(state["elapsed"]), state["stop_message"]
