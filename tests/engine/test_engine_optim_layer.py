"""Optimizer layer: discriminative learning rates, freeze / unfreeze and the GradualUnfreezing callback
(ULMFiT, Howard & Ruder 2018), checked against the fine-tuning logic SequenceClassification had inline."""

import pytest
import torch
import torch.nn.functional as F

from learnloop.data import TensorLoader
from learnloop.engine import Callback, Learner
from learnloop.engine.optim import GradualUnfreezing, discriminative_param_groups, freeze, unfreeze
from learnloop.engine.task import Task
from learnloop.errors import UserError
from learnloop.models.sequence import SequenceClassifier

LR, DECAY, WD = 1e-2, 2.6, 0.01


def _model(seed=0):
    torch.manual_seed(seed)
    return SequenceClassifier(12, 2, embed_dim=6, hidden=6, num_layers=2, cell="gru", pooling="last")


def _data(n=24, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 12, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    ids[torch.arange(t)[None, :] >= lengths[:, None]] = 0
    y = (ids[:, 0] > 6).long()
    return TensorLoader((ids, lengths, y), 8, shuffle=True, seed=seed)


class _Seq(Task):
    def __init__(self, model, groups):
        self.model, self.groups = model, groups

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.groups, lr=LR)

    def training_step(self, batch, learner):
        return {"loss": F.cross_entropy(self.model(batch[0], batch[1]), batch[2])}


class _OldULMFiT(_Seq):
    """SequenceClassification's discriminative rates and gradual unfreezing as they were inline (the
    behaviour the engine functions must reproduce), with its param-group split."""

    def __init__(self, model):
        groups = model.groups()
        out = []
        for k, params in enumerate(groups):
            lr = LR / DECAY ** (len(groups) - 1 - k)
            params = [p for p in params if p.requires_grad]
            split = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WD, "lr": lr},
                     {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
            out.extend(g for g in split if g["params"])
        super().__init__(model, out)
        self._frozen_epoch = None

    def training_step(self, batch, learner):
        if self._frozen_epoch != learner.epoch:
            groups = self.model.groups()
            trainable = min(learner.epoch + 1, len(groups))
            for k, params in enumerate(groups):
                for p in params:
                    p.requires_grad_(k >= len(groups) - trainable)
            self._frozen_epoch = learner.epoch
        return super().training_step(batch, learner)


class _Pattern(Callback):
    """requires_grad of each layer group, seen at each batch end."""

    def __init__(self):
        self.seen = []

    def on_batch_end(self, learner, outputs):
        self.seen.append((learner.epoch, [all(p.requires_grad for p in g) for g in learner.task.model.groups()]))


def _summary(groups):
    return [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups]


def test_discriminative_groups_match_the_inline_version():
    model = _model()
    assert _summary(discriminative_param_groups(model.groups(), LR, DECAY, WD)) == \
        _summary(_OldULMFiT(model).groups)


def test_discriminative_rates_by_formula():
    layers = [torch.nn.Linear(2, 2) for _ in range(4)]
    groups = discriminative_param_groups(layers, 1.0, 2.0, 0.1)           # modules are accepted as groups
    assert [g["lr"] for g in groups] == [1 / 8, 1 / 8, 1 / 4, 1 / 4, 1 / 2, 1 / 2, 1.0, 1.0]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] * 4
    assert groups[-2]["params"] == [layers[-1].weight] and groups[-1]["params"] == [layers[-1].bias]
    assert {g["lr"] for g in discriminative_param_groups(layers, 3e-3, 1.0)} == {3e-3}
    freeze(layers[0].bias)
    assert all(layers[0].bias is not p for g in discriminative_param_groups(layers, 1.0, 2.0) for p in g["params"])
    with pytest.raises(UserError, match="decay must be > 0"):
        discriminative_param_groups(layers, 1.0, 0.0)


def test_gradual_unfreezing_trains_exactly_like_the_inline_version():
    """Four epochs over L = 4 groups (embedding, 2 GRU layers, head): same weights bit for bit and the
    same trainable groups in every batch; epoch e trains the last min(e+1, L) groups."""
    old, new = _model(), _model()
    ref, pat_ref = _OldULMFiT(old), _Pattern()
    task = _Seq(new, discriminative_param_groups(new.groups(), LR, DECAY, WD))
    pat = _Pattern()
    Learner(ref, _data(), epochs=4, callbacks=[pat_ref], monitor=None).fit()
    Learner(task, _data(), epochs=4, callbacks=[GradualUnfreezing(new.groups), pat], monitor=None).fit()
    assert pat.seen == pat_ref.seen
    for e in range(4):
        expected = [k >= 4 - min(e + 1, 4) for k in range(4)]
        assert all(mask == expected for epoch, mask in pat.seen if epoch == e)
    a, b = old.state_dict(), new.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(_model().encoder.embedding.weight, new.encoder.embedding.weight)   # it trained


def test_gradual_unfreezing_follows_the_resumed_epoch():
    model = _model()
    cb = GradualUnfreezing(model.groups)
    learner = Learner(_Seq(model, list(model.parameters())), None)
    learner.epoch = 2
    cb.on_epoch_start(learner)
    assert [all(p.requires_grad for p in g) for g in model.groups()] == [False, True, True, True]
    assert cb.trainable == 3 and cb.state_dict() == {}
    with pytest.raises(UserError, match="function"):
        GradualUnfreezing(model.groups())


def test_freeze_and_unfreeze_accept_modules_parameters_and_lists():
    a, b, c = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Parameter(torch.zeros(3))
    freeze(a)
    freeze([b.weight, c])
    assert not any(p.requires_grad for p in [*a.parameters(), b.weight, c]) and b.bias.requires_grad
    unfreeze([a, c])
    assert all(p.requires_grad for p in [*a.parameters(), c]) and not b.weight.requires_grad
    unfreeze(b.weight)
    assert b.weight.requires_grad


def test_frozen_parameters_do_not_move():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freeze(model.encoder)
    Learner(_Seq(model, list(model.parameters())), _data(), epochs=1, monitor=None).fit()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["head.weight"], after["head.weight"])
