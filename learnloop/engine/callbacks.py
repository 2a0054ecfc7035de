"""Callbacks: optional behaviour around the loop, hooked on its events. Each hook receives the learner; a
callback with state (early stopping's counter, EMA weights) returns it from `state_dict`, which is stored in
every checkpoint (tensors as safetensors), so resumes are exact.

Events, in the order `Learner.fit` fires them:

    on_fit_start(learner)                         after a resume (if any) has loaded callback state
    for each epoch:
      on_epoch_start(learner)                     learner.epoch = epochs done so far (0-based index)
      for each batch:
        on_before_batch(learner, batch)           batch already on the device
        (task.training_step)
        on_after_loss(learner, loss)              automatic mode; the micro-batch's loss, before backward
        at the end of an accumulation group (automatic) / in learner.optimizer_step(name) (manual):
          on_after_backward(learner)              grads present (the group's mean), before clipping/step
          on_after_optimizer_step(learner, name)  after each optimizer step, per optimizer name
          (both skipped for a group whose micro-batches counted no item: it makes no update)
        on_batch_end(learner, outputs)            outputs = the dict training_step returned
      on_before_validation(learner, stage)        also for every `learner.validate(loader, stage)` call
      on_after_validation(learner, stage, metrics)  metrics prefixed ("val_loss"); may be edited in place
      (task.on_epoch_end)                         learner.epoch now counts this epoch
      on_epoch_end(learner, metrics)              then history, checkpoints, the metrics.jsonl row
    on_fit_end(learner)

In manual optimisation (`task.automatic_optimization = False`) `learner.backward(loss)` fires nothing and
`learner.optimizer_step(name)` fires on_after_backward, steps, then on_after_optimizer_step(learner, name).
`learner.step` (finished training steps) advances after a step's optimizers have all stepped, so inside
on_after_optimizer_step it is still the 0-based index of the current step.
The learner calls only the hooks a callback overrides, so an unused event costs nothing per batch.
`name` keys the callback's state in checkpoints: give every stateful callback of one learner its own.

Generic callbacks any task can use: ProgressBar, EarlyStopping, GradNormStats, TensorBoardLogger,
ReloadBest, SampleGrid, WeightClipping (here), EMA (ema.py), GradualUnfreezing (optim.py).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

HOOKS = ("on_fit_start", "on_epoch_start", "on_before_batch", "on_after_loss", "on_after_backward",
         "on_after_optimizer_step", "on_batch_end", "on_before_validation", "on_after_validation",
         "on_epoch_end", "on_fit_end")


class Callback:
    name: str = ""
    holds_weights: bool = False     # state is model weights (EMA): ReloadBest restores it with the modules

    def on_fit_start(self, learner) -> None: ...
    def on_epoch_start(self, learner) -> None: ...
    def on_before_batch(self, learner, batch) -> None: ...
    def on_after_loss(self, learner, loss: torch.Tensor) -> None: ...
    def on_after_backward(self, learner) -> None: ...
    def on_after_optimizer_step(self, learner, name: str) -> None: ...
    def on_batch_end(self, learner, outputs: dict) -> None: ...
    def on_before_validation(self, learner, stage: str) -> None: ...
    def on_after_validation(self, learner, stage: str, metrics: dict) -> None: ...
    def on_epoch_end(self, learner, metrics: dict) -> None: ...
    def on_fit_end(self, learner) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def overrides(cb: Callback, hook: str) -> bool:
    """True if `cb` implements `hook` (so the learner needs to call it)."""
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running loss; silent when stderr is not a terminal."""

    name = "progress"

    def __init__(self, enabled: bool | None = None):
        self.enabled, self.bar = enabled, None

    def on_epoch_start(self, learner):
        from tqdm.auto import tqdm

        disable = None if self.enabled is None else not self.enabled
        self.bar = tqdm(total=len(learner.train_loader), desc=f"epoch {learner.epoch + 1}/{learner.epochs}",
                        leave=False, disable=disable, dynamic_ncols=True)

    def on_batch_end(self, learner, outputs):
        self.bar.update(1)
        if self.bar.n % 20 == 0 and "loss" in outputs:
            self.bar.set_postfix(loss=f"{_to_float(outputs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, learner, metrics):
        self.bar.close()
        if not self.bar.disable:
            shown = {k: v for k, v in metrics.items() if isinstance(v, float) and k not in ("time", "lr")}
            self.bar.write(f"epoch {metrics['epoch']}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    name = "early_stopping"

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got '{mode}'")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best, self.bad_epochs = None, 0

    def on_epoch_end(self, learner, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                learner.request_stop(f"early stopping: {self.monitor} did not improve for {self.patience} epochs")

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class GradNormStats(Callback):
    """Per-layer gradient L2 norms every `every` optimizer steps, for weight tensors (ndim >= 2).

    `records` is a list of {"step": s, "epoch": e, "norms": {layer: norm}}; the gradient-flow recipe plots it
    to show vanishing (norms shrinking toward the input) and exploding (growing) gradients."""

    name = "grad_norms"

    def __init__(self, every: int = 10):
        self.every, self.records, self._micro = every, [], 0

    def on_after_backward(self, learner):
        self._micro += 1
        if (self._micro - 1) % self.every:
            return
        norms = {}
        for mname, module in learner.task.modules().items():
            for pname, p in module.named_parameters():
                if p.grad is not None and p.ndim >= 2:
                    norms[f"{mname}.{pname}" if len(learner.task.modules()) > 1 else pname] = p.grad.norm().item()
        self.records.append({"step": learner.step, "epoch": learner.epoch, "norms": norms})

    def summary(self) -> dict[str, float]:
        """Mean norm per layer over all records."""
        acc = defaultdict(list)
        for r in self.records:
            for k, v in r["norms"].items():
                acc[k].append(v)
        return {k: sum(v) / len(v) for k, v in acc.items()}

    def state_dict(self):
        return {"records": self.records, "micro": self._micro}

    def load_state_dict(self, state):
        self.records, self._micro = state["records"], state["micro"]


class TensorBoardLogger(Callback):
    """Scalars per epoch as TensorBoard events in <run>/tensorboard (needs `pip install learnloop[track]`)."""

    name = "tensorboard"

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from learnloop.errors import UserError

            raise UserError("--track tensorboard needs the tensorboard package: pip install 'learnloop[track]'") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, learner, metrics):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "step") and math.isfinite(v):
                self.writer.add_scalar(k, v, learner.step)
        self.writer.flush()

    def on_fit_end(self, learner):
        self.writer.close()


class ReloadBest(Callback):
    """At fit end, load the `best` checkpoint's module weights (and the state of weight-holding callbacks
    such as `EMA`) into the task, so evaluation after `fit` sees the best model, not the last one.
    Nothing happens when the learner has no run folder or no `best` checkpoint yet. `loaded_epoch` is the
    epoch the weights come from (None if nothing was loaded)."""

    def __init__(self):
        self.loaded_epoch: int | None = None

    def on_fit_end(self, learner):
        from learnloop.engine.checkpoint import load_module_state, load_state

        path = learner.checkpoint_path("best")
        if path is None or not path.exists():
            return
        state = load_state(path)
        for k, m in learner.task.modules().items():
            load_module_state(m, state["modules"].get(k), path, f"modules.{k}")
        for cb in learner.callbacks:
            if cb.holds_weights and cb.name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.name])
        self.loaded_epoch = int(state["epoch"])
        if learner.run is not None:
            stage = f" {learner.name}" if learner.name else ""
            learner.run.log(f"reloaded{stage} best checkpoint from epoch {self.loaded_epoch}")


class SampleGrid(Callback):
    """Every `every` epochs (and after the last one) write `fn(learner)` as a PNG grid to
    `<run>/samples/<stage>_<prefix>_epoch_<eee>.png` (stage and prefix only when set).

    `fn(learner)` returns images (N, C, H, W) (or (N, H, W)) with values in `value_range`: (-1, 1) for
    tanh generators (the default), (0, 1) for sigmoid outputs and data in [0, 1]. It runs under
    `torch.no_grad()` and with the global RNG forked, so drawing samples leaves training unchanged; use a
    fixed generator/noise inside `fn` to make epochs comparable. `nrow` images per row (default
    ceil(sqrt(N))). `paths` lists the files written."""

    def __init__(self, fn, every: int = 1, nrow: int | None = None,
                 value_range: tuple[float, float] = (-1.0, 1.0), prefix: str = ""):
        from learnloop.errors import UserError

        if every < 1:
            raise UserError(f"SampleGrid every must be >= 1, got {every}")
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise UserError(f"SampleGrid value_range must be (low, high) with low < high, got {value_range}")
        self.fn, self.every, self.nrow, self.prefix = fn, every, nrow, prefix
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.paths: list[str] = []

    @property
    def name(self) -> str:
        return f"sample_grid_{self.prefix}" if self.prefix else "sample_grid"

    def on_epoch_end(self, learner, metrics):
        epoch = learner.epoch
        if learner.run is None or (epoch % self.every and epoch != learner.epochs):
            return
        from learnloop.errors import UserError
        from learnloop.utils.images import save_image_grid

        devices = [learner.device] if learner.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            images = self.fn(learner)
        if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise UserError(f"SampleGrid fn must return images (N, C, H, W), got {shape}")
        stage = f"{learner.name}_" if learner.name else ""
        prefix = f"{self.prefix}_" if self.prefix else ""
        path = learner.run.samples / f"{stage}{prefix}epoch_{epoch:03d}.png"
        save_image_grid(images.detach().float().cpu(), path, nrow=self.nrow, value_range=self.value_range)
        self.paths.append(str(path))

    def state_dict(self):
        return {"paths": list(self.paths)}

    def load_state_dict(self, state):
        self.paths = list(state["paths"])


class WeightClipping(Callback):
    """WGAN weight clipping (Arjovsky, Chintala & Bottou, 2017): after each step of `optimizer` (any
    optimizer when None), w <- clamp(w, -c, c) for every parameter of the task module named `module`,
    which keeps the critic (roughly) K-Lipschitz. Stateless: the clamp is re-applied after every step."""

    def __init__(self, module: str, bound: float, optimizer: str | None = None):
        from learnloop.errors import UserError

        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise UserError(f"WeightClipping bound must be a positive number, got {bound}")
        self.module, self.bound, self.optimizer = module, float(bound), optimizer
        self._params: list[torch.nn.Parameter] | None = None

    def on_fit_start(self, learner):
        self._resolve(learner)

    def _resolve(self, learner) -> list[torch.nn.Parameter]:
        from learnloop.errors import UserError

        mods = learner.task.modules()
        if self.module not in mods:
            raise UserError(f"WeightClipping: the task has no module '{self.module}'; it has {', '.join(mods)}")
        if self.optimizer is not None and self.optimizer not in learner.optimizers:
            raise UserError(f"WeightClipping: no optimizer '{self.optimizer}'; the task has "
                            f"{', '.join(learner.optimizers)}")
        self._params = list(mods[self.module].parameters())
        return self._params

    @torch.no_grad()
    def on_after_optimizer_step(self, learner, name):
        if self.optimizer is not None and name != self.optimizer:
            return
        for p in self._params if self._params is not None else self._resolve(learner):
            p.clamp_(-self.bound, self.bound)


def _to_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
