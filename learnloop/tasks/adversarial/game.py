"""The declarations of an adversarial game and what each player's loss is on one step's tensors.

The pieces are named, so a GAN, Pix2Pix, CycleGAN's two generators and two critics, SRGAN or StyleGAN2 are
configurations of one task (learnloop.tasks.adversarial.task.AdversarialTask):

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

Metrics per batch (`critic_loss`, `generator_loss`): "<tag>_loss" (weighted sum of the player's terms, no
penalties), per term "<tag>_<term>" when a player has several, a critic's "<tag>_acc", "<tag>_real",
"<tag>_fake" (D's accuracy and mean scores), and each penalty under its name as applied: s_t * R_t (so
its epoch mean estimates E R also when lazy). `check_game` turns a malformed declaration into a UserError
naming the player, term or module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from learnloop.engine.optim import OptimConfig
from learnloop.errors import UserError
from learnloop.losses.adversarial import (
    adversarial_loss, discriminator_accuracy, feature_loss, reconstruction_loss,
)
from learnloop.losses.regularizers import PENALTIES, gradient_penalty, lazy_scale, r1_penalty

Values = dict[str, torch.Tensor]
Critics = Callable[[str], Callable[[torch.Tensor], torch.Tensor]]   # critic name -> (images -> scores)
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

    @property
    def is_critic(self) -> bool:
        """One of its terms is adversarial with one of its own modules as the critic."""
        return any(t.kind == "adversarial" and t.critic in self.modules for t in self.terms)


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


def plain_call(values: Values, images: torch.Tensor) -> tuple:
    """A critic's default call arguments: the images alone."""
    return (images,)


# --- validation --------------------------------------------------------------------------------------------
def _check_every(what: str, every) -> None:
    if not isinstance(every, int) or every < 1:
        raise UserError(f"{what} must be an integer >= 1, got {every}")


def check_game(nets: Mapping[str, nn.Module], players: Sequence[Player], passes: Sequence[Pass]) -> None:
    """A UserError for the first malformed declaration: duplicate names, a module trained twice or not at
    all, an unknown term, regularizer or module, a critic with a non-adversarial term, ..."""
    if not players:
        raise UserError("an adversarial task needs at least one player")
    names = [p.name for p in players]
    if len(set(names)) != len(names):
        raise UserError(f"player names must be distinct, got {', '.join(names)}")
    owner: dict[str, str] = {}
    for p in players:
        _check_every(f"player '{p.name}': every (n_critic)", p.every)
        if not p.modules:
            raise UserError(f"player '{p.name}' trains no module")
        for m in p.modules:
            if m not in nets:
                raise UserError(f"player '{p.name}': no module '{m}'; the task has {', '.join(nets)}")
            if m in owner:
                raise UserError(f"module '{m}' is trained by two players ('{owner[m]}' and '{p.name}')")
            owner[m] = p.name
        labels = [t.label for t in p.terms]
        if len(set(labels)) != len(labels):
            raise UserError(f"player '{p.name}': its terms need distinct names, got {', '.join(labels)}")
        for t in p.terms:
            _check_term(nets, p, t)
        for r in p.regularizers:
            if r.kind not in PENALTIES:
                raise UserError(f"unknown regularizer '{r.kind}'; choose from {', '.join(PENALTIES)}")
            if r.critic not in p.modules:
                raise UserError(f"player '{p.name}': regularizer '{r.label}' penalises '{r.critic}', "
                                "which it does not train")
            _check_every(f"regularizer '{r.label}': every", r.every)
    reg_labels = [r.label for p in players for r in p.regularizers]
    if len(set(reg_labels)) != len(reg_labels):
        raise UserError(f"regularizers need distinct names, got {', '.join(reg_labels)}")
    for ps in passes:
        if ps.module not in nets:
            raise UserError(f"pass '{ps.output}': no module '{ps.module}'; the task has {', '.join(nets)}")
    for p in players:
        if p.is_critic and any(t.kind != "adversarial" or t.critic not in p.modules for t in p.terms):
            raise UserError(f"critic '{p.name}' may only have adversarial terms of its own critic")
        if p.regularizers and not p.is_critic:
            raise UserError(f"player '{p.name}' is not a critic; gp and r1 penalise a critic's input gradients")


def _check_term(nets: Mapping[str, nn.Module], p: Player, t: Term) -> None:
    if t.kind not in TERM_KINDS:
        raise UserError(f"unknown loss term '{t.kind}'; choose from {', '.join(TERM_KINDS)}")
    if not (isinstance(t.weight, (int, float)) and math.isfinite(t.weight)):
        raise UserError(f"term '{t.label}' of '{p.name}': weight must be a finite number, got {t.weight}")
    if t.kind == "adversarial":
        adversarial_loss(t.loss)                    # a ValueError naming the choices
        if t.critic not in nets:
            raise UserError(f"term '{t.label}' of '{p.name}': no critic module '{t.critic}'")
    if t.kind == "feature" and t.features is None:
        raise UserError(f"term '{t.label}' of '{p.name}': a feature term needs its `features` network")


# --- the losses --------------------------------------------------------------------------------------------
def _add(total: torch.Tensor | None, weight: float, term: torch.Tensor) -> torch.Tensor:
    return weight * term if total is None else total + weight * term


def critic_loss(p: Player, critics: Critics, values: Values, update: int, scores: dict, out: dict
                ) -> torch.Tensor:
    """L_p of critic player `p` on (real, fake.detach()) plus its penalties at its update number `update`
    (lazy scale s_t); records each critic's scores of the fakes in `scores` and the metrics in `out`."""
    tag, single = p.prefix, len(p.terms) == 1
    total = None
    for t in p.terms:
        critic = critics(t.critic)
        real_s = critic(values[t.target])
        fake_s = critic(values[t.output].detach())
        scores[(t.critic, t.output)] = fake_s.detach()
        term = adversarial_loss(t.loss).d_loss(real_s, fake_s)
        total = _add(total, t.weight, term)
        sfx = "" if single else f"_{t.label}"
        if not single:
            out[f"{tag}_{t.label}"] = term.detach()
        out[f"{tag}_acc{sfx}"] = discriminator_accuracy(t.loss, real_s, fake_s)
        out[f"{tag}_real{sfx}"] = real_s.detach().mean()
        out[f"{tag}_fake{sfx}"] = fake_s.detach().mean()
    out[f"{tag}_loss"] = total.detach()
    for r in p.regularizers:
        scale = lazy_scale(update, r.every)
        if scale:
            critic = critics(r.critic)
            if r.kind == "gp":
                penalty, coef = gradient_penalty(critic, values[r.real], values[r.fake]), r.weight
            else:
                penalty, coef = r1_penalty(critic, values[r.real]), 0.5 * r.weight
            total = total + scale * coef * penalty
            out[r.label] = scale * penalty.detach()
        else:
            out[r.label] = torch.zeros((), device=total.device)
    return total


def generator_loss(g: Player, critics: Critics, values: Values, scores: dict | None, out: dict) -> torch.Tensor:
    """L_p of generator player `g` (its weighted terms); with `scores` (not updating) adversarial terms use
    the critics' scores from before this batch's update instead of a new forward pass."""
    total = None
    for t in g.terms:
        term = term_value(t, critics, values, scores)
        total = _add(total, t.weight, term)
        if len(g.terms) > 1:
            out[f"{g.prefix}_{t.label}"] = term.detach()
    if total is None:
        raise UserError(f"player '{g.name}' has no loss terms")
    out[f"{g.prefix}_loss"] = total.detach()
    return total


def term_value(t: Term, critics: Critics, values: Values, scores: dict | None = None) -> torch.Tensor:
    """The (unweighted) value of a generator's term on the step's tensors."""
    if t.kind == "adversarial":
        fake_s = scores.get((t.critic, t.output)) if scores is not None else None
        if fake_s is None:
            fake_s = critics(t.critic)(values[t.output])
        return adversarial_loss(t.loss).g_loss(fake_s)
    if t.kind == "feature":
        return feature_loss(t.features, values[t.output], values[t.target], t.distance)
    return reconstruction_loss(_L1_KINDS[t.kind], values[t.output], values[t.target])
