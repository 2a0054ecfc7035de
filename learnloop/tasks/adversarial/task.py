"""The adversarial Task (manual optimisation): when each player of a game (learnloop.tasks.adversarial.game)
updates on a batch, and the checks after each epoch.

One batch b (0-based over the whole run: `learner.step`); a player updates on it when (b + 1) mod every = 0:

    values <- batch, noise;  the passes (with gradients only if a generator updates on b)
    each updating critic, in order:  L = its terms on (real, fake.detach()) + its penalties;  backward; step
    the updating generators, every critic frozen: one backward of the sum of their losses (so several
        generators sharing a graph, e.g. a cycle term, minimise one joint objective), then each steps; the
        critics score the fakes as they are after this batch's critic updates
    the other generators report their loss from the critics' scores before the update (no extra pass)

so `every = n_critic` on the generator gives n_critic critic updates per generator update (Arjovsky et al.,
2017: n_critic = 5 for WGAN); a critic with every > 1 reports its metrics only on its own batches (which
the Learner's epoch means then leave out, as it averages keys every batch reports). EMA weights, sample
grids and weight clipping are engine callbacks (learnloop.engine.ema.EMA, callbacks.SampleGrid /
WeightClipping) that a recipe passes as `callbacks` (the stage's extra callbacks).

After each epoch, in this order: `monitor(learner)` adds "val_<key>" metrics (e.g. a cheap FID that
selects the best checkpoint); the runaway check stops a critic that wins outright: for each critic and
generator playing one adversarial term, if D separates real from fake almost perfectly (accuracy >=
`collapse_acc` and L_D < `collapse_tol` for losses bounded below; for a Wasserstein critic, which separates
by design, its gap -L_D above `collapse_gap` and still growing) while L_G does not fall, for
`collapse_patience` epochs in a row, training stops with a message saying so (`metrics["diverged"] = 1`);
last, `time_budget_s` stops after the epoch in which the process has used that much CPU time. A NaN/Inf
loss is caught by `learner.backward` (TrainingDiverged).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from learnloop.engine.optim import build_optimizer
from learnloop.engine.task import Task
from learnloop.losses.adversarial import adversarial_loss
from learnloop.tasks.adversarial.game import (
    Critics, Pass, Player, Term, Values, check_game, critic_loss, generator_loss, image_batch, plain_call,
    term_value,
)


class AdversarialTask(Task):
    automatic_optimization = False

    def __init__(self, modules: Mapping[str, nn.Module], players: Sequence[Player], passes: Sequence[Pass] = (), *,
                 batch: Callable[[object], Values] = image_batch, noise: Mapping[str, Sequence[int] | int] | None = None,
                 critic_inputs: Mapping[str, Callable[[Values, torch.Tensor], tuple]] | None = None,
                 callbacks: Sequence = (), monitor: Callable[[object], dict] | None = None, monitor_every: int = 1,
                 collapse_acc: float = 0.99, collapse_tol: float = 0.05, collapse_patience: int = 3,
                 collapse_gap: float = 1e3, time_budget_s: float = 0.0):
        self.nets = dict(modules)
        self.players = list(players)
        self.passes = list(passes)
        self.batch_fn = batch
        self.noise = {k: (s,) if isinstance(s, int) else tuple(s) for k, s in (noise or {}).items()}
        self.critic_inputs = dict(critic_inputs or {})
        self.callbacks = list(callbacks)
        self.monitor, self.monitor_every = monitor, monitor_every
        self.collapse_acc, self.collapse_tol, self.collapse_patience = collapse_acc, collapse_tol, collapse_patience
        self.collapse_gap, self.time_budget_s = collapse_gap, time_budget_s
        check_game(self.nets, self.players, self.passes)
        self.critics = [p for p in self.players if p.is_critic]
        self.generators = [p for p in self.players if not p.is_critic]
        self.critic_modules = sorted({t.critic for p in self.players for t in p.terms if t.kind == "adversarial"}
                                     | {r.critic for p in self.players for r in p.regularizers})
        self.pairs = self._adversarial_pairs()
        self.updates = {p.name: 0 for p in self.players}
        self.runaway = {key: {"streak": 0, "prev_g": math.nan, "prev_d": math.nan} for key in self.pairs}
        self.elapsed = 0.0
        self._cpu_mark: float | None = None          # process CPU time at the start of the current epoch's work
        self.stop_message = ""

    def _owner(self, module: str) -> Player | None:
        return next((p for p in self.players if module in p.modules), None)

    def _adversarial_pairs(self) -> dict[str, tuple[Player, Player, Term]]:
        """'<critic>/<generator>' -> (critic player, generator player, the generator's term) for the runaway
        check (only critics with a single adversarial term report one accuracy)."""
        pairs = {}
        for g in self.generators:
            for t in g.terms:
                d = self._owner(t.critic) if t.kind == "adversarial" else None
                if d is not None and sum(u.kind == "adversarial" for u in d.terms) == 1:
                    pairs[f"{d.name}/{g.name}"] = (d, g, t)
        return pairs

    # Task protocol ------------------------------------------------------------------------------------
    def modules(self):
        return self.nets

    def configure_optimizers(self):
        return {p.name: build_optimizer(p.optim, [w for m in p.modules for w in self.nets[m].parameters()])
                for p in self.players}

    def _critics(self, values: Values) -> Critics:
        """critic name -> (images -> scores), calling it with its `critic_inputs` on this step's values."""
        def critic(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            call = self.critic_inputs.get(name, plain_call)
            net = self.nets[name]
            return lambda images: net(*call(values, images))

        return critic

    def training_step(self, batch, learner):
        if self._cpu_mark is None:
            self._cpu_mark = time.process_time()
        values = dict(self.batch_fn(batch))
        n = self.batch_size(batch)
        device = next(v.device for v in values.values() if isinstance(v, torch.Tensor))
        for key, shape in self.noise.items():
            values[key] = torch.randn(n, *shape, device=device)
        b = learner.step
        updating = {p.name for p in self.players if (b + 1) % p.every == 0}
        with torch.set_grad_enabled(any(g.name in updating for g in self.generators)):
            for ps in self.passes:
                values[ps.output] = self.nets[ps.module](*ps.inputs(values))
        critics = self._critics(values)
        out: dict[str, torch.Tensor] = {}
        scores: dict[tuple[str, str], torch.Tensor] = {}      # (critic, fake key) -> scores before its update
        for p in self.critics:
            if p.name in updating:
                loss = critic_loss(p, critics, values, self.updates[p.name], scores, out)
                learner.backward(loss)
                learner.optimizer_step(p.name)
                self.updates[p.name] += 1
        stepping = [g for g in self.generators if g.name in updating]
        if stepping:
            with self._frozen(self.critic_modules):
                total = sum(generator_loss(g, critics, values, None, out) for g in stepping)
                learner.backward(total)
            for g in stepping:
                learner.optimizer_step(g.name)
                self.updates[g.name] += 1
        with torch.no_grad():
            for g in self.generators:
                if g.name not in updating:
                    generator_loss(g, critics, values, scores, out)
        return out

    def term_value(self, t: Term, values: Values, scores: dict | None = None) -> torch.Tensor:
        """The (unweighted) value of a generator's term on the step's tensors."""
        return term_value(t, self._critics(values), values, scores)

    @contextlib.contextmanager
    def _frozen(self, names):
        """No gradients for these modules' parameters inside the block; their own flags come back after."""
        flags = [(w, w.requires_grad) for m in names for w in self.nets[m].parameters()]
        for w, _ in flags:
            w.requires_grad_(False)
        try:
            yield
        finally:
            for w, flag in flags:
                w.requires_grad_(flag)

    # end of epoch -------------------------------------------------------------------------------------
    def on_epoch_end(self, learner, metrics):
        epoch = learner.epoch
        if self.monitor is not None and (epoch % self.monitor_every == 0 or epoch == learner.epochs):
            metrics.update({f"val_{k}": float(v) for k, v in self.monitor(learner).items()})
        for key in self.pairs:
            self._check_runaway(learner, metrics, key)
        now = time.process_time()        # CPU seconds of all threads: a budget that contention does not shrink
        self.elapsed += now - (self._cpu_mark if self._cpu_mark is not None else now)
        self._cpu_mark = now
        metrics["cpu_min"] = self.elapsed / 60
        if self.time_budget_s and self.elapsed >= self.time_budget_s and learner.stop_reason is None \
                and epoch < learner.epochs:
            learner.request_stop(f"budget of {self.time_budget_s / 60:.3g} CPU minutes reached after epoch {epoch}")

    def _check_runaway(self, learner, metrics, key: str) -> None:
        d, g, term = self.pairs[key]
        d_loss, d_acc = metrics.get(f"train_{d.prefix}_loss"), metrics.get(f"train_{d.prefix}_acc")
        g_loss = metrics.get(f"train_{g.prefix}_loss")
        if d_loss is None or d_acc is None or g_loss is None or not math.isfinite(g_loss):
            return
        state = self.runaway[key]
        if adversarial_loss(term.loss).bounded:
            d_wins = d_acc >= self.collapse_acc and d_loss < self.collapse_tol
        else:    # a Wasserstein critic separates by design; runaway = its gap -L_D huge and still growing
            d_wins = (d_acc >= self.collapse_acc and -d_loss > self.collapse_gap and not math.isnan(state["prev_d"])
                      and d_loss < state["prev_d"])
        state["prev_d"] = d_loss
        prev_g = state["prev_g"]
        g_not_improving = math.isnan(prev_g) or g_loss >= prev_g - 1e-6 * abs(prev_g)
        if not d_wins:
            state["streak"] = 0
        else:
            state["streak"] = state["streak"] + 1 if g_not_improving else 1
        state["prev_g"] = g_loss
        metrics[f"{d.prefix}_wins_streak"] = float(state["streak"])
        if state["streak"] >= self.collapse_patience:
            who = "the discriminator" if len(self.pairs) == 1 else f"the critic '{d.name}'"
            self.stop_message = (
                f"GAN diverged: {who} won for {state['streak']} epochs (D loss {d_loss:.3g}, D accuracy "
                f"{d_acc:.3f}, G loss {g_loss:.3g} not falling), so the generator gets no useful gradient; stopped "
                f"at epoch {learner.epoch}. Try a lower D learning rate, the hinge or Wasserstein loss with a "
                f"gradient penalty, or spectral norm.")
            metrics["diverged"] = 1.0
            learner.request_stop(self.stop_message)

    # checkpoint state ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"updates": dict(self.updates), "runaway": {k: dict(v) for k, v in self.runaway.items()},
                "elapsed": self.elapsed, "stop_message": self.stop_message}

    def load_state_dict(self, state):
        if not state:
            return
        for name in self.updates:
            self.updates[name] = int(state["updates"][name])
        for key in self.runaway:
            saved = state["runaway"][key]
            self.runaway[key] = {"streak": int(saved["streak"]), "prev_g": float(saved["prev_g"]),
                                 "prev_d": float(saved["prev_d"])}
        self.elapsed, self.stop_message = float(state["elapsed"]), str(state["stop_message"])
