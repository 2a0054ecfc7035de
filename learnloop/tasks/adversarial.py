"""Adversarial training as one `Task` (manual optimisation): named players, each minimising a weighted sum
of terms; the two-player game of Goodfellow et al. (2014) and its image-to-image descendants.

The pieces are named, so a GAN, Pix2Pix, CycleGAN's two generators and two critics, SRGAN or StyleGAN2 are
configurations of this one task:

- `modules` {name: nn.Module}: every trained network, checkpointed under its name;
- `batch(b)` -> named tensors, e.g. (x, y) -> {"real": x, "label": y} (`image_batch`, the default);
  `noise` {key: shape} adds values[key] ~ N(0, I) of shape (n, *shape), drawn in declared order before
  any forward pass;
- `passes` [Pass(output, module, inputs)]: values[output] = modules[module](*inputs(values)), in order (a
  later pass may use an earlier output, e.g. CycleGAN's reconstruction F(G(x)));
- `critic_inputs` {critic: (values, images) -> call arguments}: how a critic is called on images (default
  (images,); a conditional D: (images, values["label"]));
- `players` [Player(name, modules, optim, terms, regularizers, every)]: one optimizer, named `name`, over
  its modules' parameters, minimising

      L_p = sum_j w_j * term_j  +  sum_r s_t(r) * lambda_r * R_r

  with the terms of `Term` (adversarial, l1/l2 reconstruction, cycle, identity, feature/perceptual:
  learnloop.losses.adversarial) and the penalties of `Regularizer` (gradient penalty, R1:
  learnloop.losses.regularizers), s_t the lazy-regularization scale (k every k-th update of the player,
  else 0; Karras et al., 2020). A player is a *critic* when one of its terms is adversarial with its own
  module as the critic; the others are *generators*. An adversarial term is the critic's
  d_loss(D(real), D(fake)) in a critic's loss and g_loss(D(fake)) in a generator's.

One batch b (0-based over the whole run: `learner.step`); a player updates on it when (b + 1) mod every = 0:

    values <- batch, noise;  the passes (with gradients only if a generator updates on b)
    each updating critic, in order:  L = its terms on (real, fake.detach()) + its penalties;  backward; step
    the updating generators, every critic frozen: one backward of the sum of their losses (so several
        generators sharing a graph, e.g. a cycle term, minimise one joint objective), then each steps; the
        critics score the fakes as they are after this batch's critic updates
    the other generators report their loss from the critics' scores before the update (no extra pass)

so `every = n_critic` on the generator gives n_critic critic updates per generator update (Arjovsky et al.,
2017: n_critic = 5 for WGAN); a critic with every > 1 reports its metrics only on its own batches (which
the Learner's epoch means then leave out, as it averages keys every batch reports). Metrics per batch: "<tag>_loss" (weighted sum of the player's terms, no
penalties), per term "<tag>_<term>" when a player has several, a critic's "<tag>_acc", "<tag>_real",
"<tag>_fake" (D's accuracy and mean scores), and each penalty under its name as applied: s_t * R_t (so
its epoch mean estimates E R also when lazy). EMA weights, sample grids and weight clipping are engine
callbacks (learnloop.engine.ema.EMA, callbacks.SampleGrid / WeightClipping) that a recipe passes as
`callbacks` (the stage's extra callbacks).

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
from dataclasses import dataclass

import torch
from torch import nn

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.errors import UserError
from learnloop.losses.adversarial import (
    adversarial_loss, discriminator_accuracy, feature_loss, reconstruction_loss,
)
from learnloop.losses.regularizers import PENALTIES, gradient_penalty, lazy_scale, r1_penalty

Values = dict[str, torch.Tensor]
TERM_KINDS = ("adversarial", "l1", "l2", "cycle", "identity", "feature")
_L1_KINDS = {"l1": "l1", "l2": "l2", "cycle": "l1", "identity": "l1"}   # kind -> distance


# --- declarations ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One weighted term of a player's loss.

    adversarial: `critic` (a module name) scores values[`target`] (real) and values[`output`] (fake) with
                 loss `loss` (learnloop.losses.adversarial.ADVERSARIAL_LOSSES);
    l1, l2:      reconstruction distance between values[output] and values[target] (Pix2Pix: l1 x 100);
    cycle, identity: L1 between values[output] and values[target] (CycleGAN: F(G(x)) vs x, G(y) vs y);
    feature:     `distance` between features(values[output]) and features(values[target]), a fixed network.
    `name` labels its metric (default: the kind; "adv" for an adversarial term)."""

    kind: str
    weight: float = 1.0
    output: str = "fake"
    target: str = "real"
    critic: str = ""
    loss: str = "non-saturating"
    features: Callable[[torch.Tensor], torch.Tensor] | None = None
    distance: str = "l2"
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or ("adv" if self.kind == "adversarial" else self.kind)


def adversarial(critic: str, loss: str = "non-saturating", weight: float = 1.0, fake: str = "fake",
                real: str = "real", name: str = "") -> Term:
    return Term("adversarial", weight, fake, real, critic, loss, name=name)


@dataclass(frozen=True)
class Regularizer:
    """A penalty on critic `critic`'s input gradients, added to its player's loss as s_t * weight * R:
    "gp": R = GP at interpolates of values[real] and values[fake] (Gulrajani et al., 2017: weight lambda = 10);
    "r1": R = R1 on values[real] (Mescheder et al., 2018), weight = gamma / 2.
    `every` = k: lazy, applied (times k) on the player's updates t with t mod k == 0."""

    kind: str
    critic: str
    weight: float = 10.0
    every: int = 1
    real: str = "real"
    fake: str = "fake"
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class Pass:
    """values[output] = modules[module](*inputs(values))."""

    output: str
    module: str
    inputs: Callable[[Values], tuple]


@dataclass
class Player:
    """A named optimizer over `modules`' parameters, minimising its weighted `terms` plus `regularizers`;
    it updates on the batches b with (b + 1) mod every == 0. `tag` prefixes its metrics (default: name)."""

    name: str
    modules: tuple[str, ...]
    optim: OptimConfig
    terms: tuple[Term, ...] = ()
    regularizers: tuple[Regularizer, ...] = ()
    every: int = 1
    tag: str = ""

    @property
    def prefix(self) -> str:
        return self.tag or self.name


def image_batch(batch) -> Values:
    """A loader's (images, labels) or images -> {"real": images, "label": labels}."""
    if isinstance(batch, torch.Tensor):
        return {"real": batch}
    if isinstance(batch, Mapping):
        return dict(batch)
    out = {"real": batch[0]}
    if len(batch) > 1:
        out["label"] = batch[1]
    return out


def _plain_call(values: Values, images: torch.Tensor) -> tuple:
    return (images,)


# --- noise-driven generators G(z, y) -------------------------------------------------------------------------
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
    """n images from a noise-driven `generator(z, y)` in eval mode (z from its own generator seeded with
    `seed`); class labels cycle 0..K-1 unless given."""
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
    if not outs:
        raise UserError("generate needs n >= 1 samples")
    return torch.cat(outs)


# --- the task --------------------------------------------------------------------------------------------------
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
        self._check()
        self.critics = [p for p in self.players if self._is_critic(p)]
        self.generators = [p for p in self.players if not self._is_critic(p)]
        self.critic_modules = sorted({t.critic for p in self.players for t in p.terms if t.kind == "adversarial"}
                                     | {r.critic for p in self.players for r in p.regularizers})
        self.pairs = self._adversarial_pairs()
        self.updates = {p.name: 0 for p in self.players}
        self.runaway = {key: {"streak": 0, "prev_g": math.nan, "prev_d": math.nan} for key in self.pairs}
        self.elapsed = 0.0
        self._cpu_mark: float | None = None          # process CPU time at the start of the current epoch's work
        self.stop_message = ""

    # validation of the declarations --------------------------------------------------------------------
    def _check(self) -> None:
        if not self.players:
            raise UserError("an adversarial task needs at least one player")
        names = [p.name for p in self.players]
        if len(set(names)) != len(names):
            raise UserError(f"player names must be distinct, got {', '.join(names)}")
        owner: dict[str, str] = {}
        for p in self.players:
            if not isinstance(p.every, int) or p.every < 1:
                raise UserError(f"player '{p.name}': every (n_critic) must be an integer >= 1, got {p.every}")
            if not p.modules:
                raise UserError(f"player '{p.name}' trains no module")
            for m in p.modules:
                if m not in self.nets:
                    raise UserError(f"player '{p.name}': no module '{m}'; the task has {', '.join(self.nets)}")
                if m in owner:
                    raise UserError(f"module '{m}' is trained by two players ('{owner[m]}' and '{p.name}')")
                owner[m] = p.name
            labels = [t.label for t in p.terms]
            if len(set(labels)) != len(labels):
                raise UserError(f"player '{p.name}': its terms need distinct names, got {', '.join(labels)}")
            for t in p.terms:
                self._check_term(p, t)
            for r in p.regularizers:
                if r.kind not in PENALTIES:
                    raise UserError(f"unknown regularizer '{r.kind}'; choose from {', '.join(PENALTIES)}")
                if r.critic not in p.modules:
                    raise UserError(f"player '{p.name}': regularizer '{r.label}' penalises '{r.critic}', "
                                    "which it does not train")
                if not isinstance(r.every, int) or r.every < 1:
                    raise UserError(f"regularizer '{r.label}': every must be an integer >= 1, got {r.every}")
        reg_labels = [r.label for p in self.players for r in p.regularizers]
        if len(set(reg_labels)) != len(reg_labels):
            raise UserError(f"regularizers need distinct names, got {', '.join(reg_labels)}")
        for ps in self.passes:
            if ps.module not in self.nets:
                raise UserError(f"pass '{ps.output}': no module '{ps.module}'; the task has {', '.join(self.nets)}")
        for p in self.players:
            if self._is_critic(p) and any(t.kind != "adversarial" or t.critic not in p.modules for t in p.terms):
                raise UserError(f"critic '{p.name}' may only have adversarial terms of its own critic")
            if p.regularizers and not self._is_critic(p):
                raise UserError(f"player '{p.name}' is not a critic; gp and r1 penalise a critic's input gradients")

    def _check_term(self, p: Player, t: Term) -> None:
        if t.kind not in TERM_KINDS:
            raise UserError(f"unknown loss term '{t.kind}'; choose from {', '.join(TERM_KINDS)}")
        if not (isinstance(t.weight, (int, float)) and math.isfinite(t.weight)):
            raise UserError(f"term '{t.label}' of '{p.name}': weight must be a finite number, got {t.weight}")
        if t.kind == "adversarial":
            adversarial_loss(t.loss)                    # a ValueError naming the choices
            if t.critic not in self.nets:
                raise UserError(f"term '{t.label}' of '{p.name}': no critic module '{t.critic}'")
        if t.kind == "feature" and t.features is None:
            raise UserError(f"term '{t.label}' of '{p.name}': a feature term needs its `features` network")

    @staticmethod
    def _is_critic(p: Player) -> bool:
        return any(t.kind == "adversarial" and t.critic in p.modules for t in p.terms)

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

    def _critic(self, name: str, values: Values) -> Callable[[torch.Tensor], torch.Tensor]:
        call = self.critic_inputs.get(name, _plain_call)
        net = self.nets[name]
        return lambda images: net(*call(values, images))

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
        out: dict[str, torch.Tensor] = {}
        scores: dict[tuple[str, str], torch.Tensor] = {}      # (critic, fake key) -> scores before its update
        for p in self.critics:
            if p.name in updating:
                loss = self._critic_loss(p, values, scores, out)
                learner.backward(loss)
                learner.optimizer_step(p.name)
                self.updates[p.name] += 1
        stepping = [g for g in self.generators if g.name in updating]
        if stepping:
            with self._frozen(self.critic_modules):
                total = sum(self._generator_loss(g, values, None, out) for g in stepping)
                learner.backward(total)
            for g in stepping:
                learner.optimizer_step(g.name)
                self.updates[g.name] += 1
        with torch.no_grad():
            for g in self.generators:
                if g.name not in updating:
                    self._generator_loss(g, values, scores, out)
        return out

    def _critic_loss(self, p: Player, values: Values, scores: dict, out: dict) -> torch.Tensor:
        tag, single = p.prefix, len(p.terms) == 1
        total = None
        for t in p.terms:
            critic = self._critic(t.critic, values)
            real_s = critic(values[t.target])
            fake_s = critic(values[t.output].detach())
            scores[(t.critic, t.output)] = fake_s.detach()
            term = adversarial_loss(t.loss).d_loss(real_s, fake_s)
            total = t.weight * term if total is None else total + t.weight * term
            sfx = "" if single else f"_{t.label}"
            if not single:
                out[f"{tag}_{t.label}"] = term.detach()
            out[f"{tag}_acc{sfx}"] = discriminator_accuracy(t.loss, real_s, fake_s)
            out[f"{tag}_real{sfx}"] = real_s.detach().mean()
            out[f"{tag}_fake{sfx}"] = fake_s.detach().mean()
        out[f"{tag}_loss"] = total.detach()
        for r in p.regularizers:
            scale = lazy_scale(self.updates[p.name], r.every)
            if scale:
                critic = self._critic(r.critic, values)
                if r.kind == "gp":
                    penalty, coef = gradient_penalty(critic, values[r.real], values[r.fake]), r.weight
                else:
                    penalty, coef = r1_penalty(critic, values[r.real]), 0.5 * r.weight
                total = total + scale * coef * penalty
                out[r.label] = scale * penalty.detach()
            else:
                out[r.label] = torch.zeros((), device=total.device)
        return total

    def _generator_loss(self, g: Player, values: Values, scores: dict | None, out: dict) -> torch.Tensor:
        """The generator's weighted terms; with `scores` (not updating) adversarial terms use the critics'
        scores from before this batch's update instead of a new forward pass."""
        total = None
        for t in g.terms:
            term = self.term_value(t, values, scores)
            total = t.weight * term if total is None else total + t.weight * term
            if len(g.terms) > 1:
                out[f"{g.prefix}_{t.label}"] = term.detach()
        if total is None:
            raise UserError(f"player '{g.name}' has no loss terms")
        out[f"{g.prefix}_loss"] = total.detach()
        return total

    def term_value(self, t: Term, values: Values, scores: dict | None = None) -> torch.Tensor:
        """The (unweighted) value of a generator's term on the step's tensors."""
        if t.kind == "adversarial":
            fake_s = scores.get((t.critic, t.output)) if scores is not None else None
            if fake_s is None:
                fake_s = self._critic(t.critic, values)(values[t.output])
            return adversarial_loss(t.loss).g_loss(fake_s)
        if t.kind == "feature":
            return feature_loss(t.features, values[t.output], values[t.target], t.distance)
        return reconstruction_loss(_L1_KINDS[t.kind], values[t.output], values[t.target])

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


def noise_gan(generator: nn.Module, discriminator: nn.Module, *, z_dim: int, num_classes: int = 0,
              loss: str = "non-saturating", penalty: str = "none", penalty_weight: float = 10.0,
              penalty_every: int = 1, n_critic: int = 1, g_optim: OptimConfig | None = None,
              d_optim: OptimConfig | None = None, **options) -> AdversarialTask:
    """The noise-driven GAN (Goodfellow et al., 2014) and its variants as an AdversarialTask: modules and
    players "generator" (x_f = G(z[, y]), z ~ N(0, I) of `z_dim`, updating every `n_critic` batches, metric
    tag "g") and "discriminator" (D(x[, y]), tag "d"), one adversarial term of `loss`, and D's penalty
    ("gp": lambda * GP, "r1": gamma / 2 * R1, lambda or gamma = `penalty_weight`, every `penalty_every` D
    updates) unless `penalty` is "none". Batches are (images, labels); y = labels when `num_classes` > 0.
    Optimizers default to Adam(2e-4, betas (0.5, 0.999)) (Radford et al., 2016); `options` go to the task
    (callbacks, monitor, collapse_patience, time_budget_s, ...)."""
    default = OptimConfig(name="adam", lr=2e-4, betas=(0.5, 0.999))
    term = adversarial("discriminator", loss)
    regularizers = () if penalty == "none" else (Regularizer(penalty, "discriminator", penalty_weight, penalty_every),)
    players = [Player("generator", ("generator",), g_optim or default, (term,), every=n_critic, tag="g"),
               Player("discriminator", ("discriminator",), d_optim or default, (term,), regularizers, tag="d")]
    g_inputs = (lambda v: (v["z"], v["label"])) if num_classes else (lambda v: (v["z"],))
    d_inputs = {"discriminator": lambda v, x: (x, v["label"])} if num_classes else {}
    return AdversarialTask({"generator": generator, "discriminator": discriminator}, players,
                           [Pass("fake", "generator", g_inputs)], noise={"z": z_dim}, critic_inputs=d_inputs,
                           **options)
