"""Gradient accumulation equals one big batch: micro-batches are weighted by the items they count
(samples, or non-ignored tokens), including ragged last groups and micro-batches that count nothing."""

import pytest
import torch
import torch.nn.functional as F

from learnloop.data import TensorLoader
from learnloop.engine import Callback, Learner
from learnloop.errors import UserError
from learnloop.tasks.token_prediction import IGNORE, TokenPrediction

from helpers import Regression, regression_data

TOL = dict(rtol=0.0, atol=1e-12)


def _weights(task):
    return {k: v.detach().clone() for k, v in task.model.state_dict().items()}


def _fit(task, loader, k, epochs=1, **kw):
    learner = Learner(task, loader, epochs=epochs, accumulate=k, monitor=None, **kw)
    learner.fit()
    return learner


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **TOL)


@pytest.mark.parametrize("n,micro,k", [(10, 3, 4), (10, 3, 3), (7, 3, 4), (10, 4, 2), (11, 2, 5), (9, 4, 3)])
def test_ragged_groups_equal_one_big_batch(n, micro, k):
    """Micro-batches of `micro` accumulated k at a time == batches of micro*k (groups 10 -> 9 + 1 etc.),
    over two shuffled epochs in float64."""
    x, y = regression_data(n, dtype=torch.float64)
    big = Regression(dtype=torch.float64, batchnorm=False)
    small = Regression(dtype=torch.float64, batchnorm=False)
    a = _fit(big, TensorLoader((x, y), micro * k, shuffle=True, seed=3), 1, epochs=2)
    b = _fit(small, TensorLoader((x, y), micro, shuffle=True, seed=3), k, epochs=2)
    assert a.step == b.step
    _assert_same(_weights(big), _weights(small))


def test_ragged_group_matches_a_hand_written_update():
    """7 samples, micro-batch 3, accumulate 4: one group [3, 3, 1] == one SGD step on the mean over all 7
    (the old 1/k_g scaling would give the single sample a weight of 1/3 instead of 1/7)."""
    x, y = regression_data(7, dtype=torch.float64)
    ref = Regression(dtype=torch.float64, batchnorm=False)
    task = Regression(dtype=torch.float64, batchnorm=False)
    loss = (ref.model(x).squeeze(1) - y).pow(2).mean()
    grads = torch.autograd.grad(loss, list(ref.model.parameters()))
    with torch.no_grad():
        expected = [p - 0.1 * g for p, g in zip(ref.model.parameters(), grads)]
    _fit(task, TensorLoader((x, y), 3), 4)
    for p, e in zip(task.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, **TOL)


class _GradProbe(Callback):
    def __init__(self):
        self.grads = []

    def on_after_backward(self, learner):
        self.grads.append([p.grad.clone() for p in learner.task.model.parameters()])


def test_hooks_and_clipping_see_the_group_mean_gradient():
    """on_after_backward sees the mean gradient of the group, and the norm clip applies to it."""
    x, y = regression_data(10, dtype=torch.float64)
    runs = []
    for micro, k in ((10, 1), (3, 4)):
        task, probe = Regression(dtype=torch.float64, batchnorm=False), _GradProbe()
        _fit(task, TensorLoader((x, y), micro), k, epochs=3, clip_grad_norm=0.05, callbacks=[probe])
        runs.append((_weights(task), probe.grads))
    _assert_same(runs[0][0], runs[1][0])
    assert len(runs[0][1]) == len(runs[1][1]) == 3
    for ga, gb in zip(runs[0][1], runs[1][1]):
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, **TOL)
    assert torch.sqrt(sum((g ** 2).sum() for g in runs[0][1][0])) > 0.05       # the clip was active


# token losses with ignored positions --------------------------------------------------------------------
class _TokenTask(Regression):
    """Mean cross-entropy over non-ignored tokens in float64, returning the counted tokens as "count"
    (TokenPrediction does the same but computes its loss in float32)."""

    def __init__(self, vocab=6, dim=5, lr=0.5, seed=0):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)).double()
        self.lr = lr

    def training_step(self, batch, learner):
        return {"loss": _token_loss(self.model, *batch), "count": (batch[1] != IGNORE).sum()}

    validation_step = training_step


class _Tokens(TokenPrediction):
    """TokenPrediction with plain SGD (the test compares updates, not optimizers)."""

    def __init__(self, vocab=6, dim=5, lr=0.5, seed=0):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab))
        super().__init__(model)
        self.sgd_lr = lr

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.sgd_lr)


def _token_data(ignored_rows=()):
    """7 sequences of 5 tokens; how many targets each row ignores varies from 0 to 4 (rows in
    `ignored_rows` ignore everything)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (7, 5), generator=g)
    y = torch.randint(0, 6, (7, 5), generator=g)
    ignore_per_row = [0, 4, 1, 3, 0, 2, 4]
    for r, m in enumerate(ignore_per_row):
        y[r, 5 - m:] = IGNORE
    for r in ignored_rows:
        y[r] = IGNORE
    return x, y


def _token_loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


@pytest.mark.parametrize("micro,k", [(2, 4), (2, 2), (3, 2), (1, 7)])
def test_token_loss_accumulation_equals_one_big_batch(micro, k):
    """Counted tokens differ per micro-batch (ignore_index spread unevenly): the accumulated update equals
    the update on the mean over all counted tokens of the group (float64, 1e-12)."""
    x, y = _token_data()
    big, small = _TokenTask(), _TokenTask()
    a = _fit(big, TensorLoader((x, y), micro * k), 1, epochs=2)
    b = _fit(small, TensorLoader((x, y), micro), k, epochs=2)
    assert a.step == b.step
    _assert_same(_weights(big), _weights(small))


def test_token_prediction_accumulation_equals_one_big_batch():
    """The same through TokenPrediction's own "count" (its float32 loss bounds the agreement to ~1e-7;
    weighting micro-batches equally would be off by ~1e-2)."""
    x, y = _token_data()
    big, small = _Tokens(), _Tokens()
    _fit(big, TensorLoader((x, y), 4), 1, epochs=2)
    _fit(small, TensorLoader((x, y), 2), 2, epochs=2)
    for key, v in _weights(big).items():
        torch.testing.assert_close(v, _weights(small)[key], rtol=0, atol=1e-6)


def test_token_step_reports_counted_tokens():
    x, y = _token_data()
    out = _Tokens().training_step((x[:3], y[:3]), None)
    assert int(out["count"]) == int((y[:3] != IGNORE).sum()) == 5 + 1 + 4


def test_micro_batch_with_nothing_counted_adds_nothing():
    """Rows 0 and 1 ignore every target: their micro-batch's loss is NaN (mean over nothing) and must be
    skipped, not raise; the group update equals the mean over rows 2 and 3."""
    x, y = _token_data(ignored_rows=(0, 1))
    ref, task = _TokenTask(), _TokenTask()
    grads = torch.autograd.grad(_token_loss(ref.model, x[2:4], y[2:4]), list(ref.model.parameters()))
    with torch.no_grad():
        expected = [p - 0.5 * g for p, g in zip(ref.model.parameters(), grads)]
    learner = _fit(task, TensorLoader((x[:4], y[:4]), 2), 2)
    for p, e in zip(task.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, **TOL)
    with torch.no_grad():
        expected_loss = float(_token_loss(ref.model, x[2:4], y[2:4]))
    assert learner.history[-1]["train_loss"] == pytest.approx(expected_loss, abs=1e-12)


def test_group_with_nothing_counted_makes_no_update():
    x, y = _token_data(ignored_rows=(0, 1))
    task = _Tokens()          # TokenPrediction itself: its loss over no token is NaN, its count 0
    w0 = _weights(task)
    learner = _fit(task, TensorLoader((x[:2], y[:2]), 1), 2)
    assert learner.step == 1
    _assert_same(w0, _weights(task))


class _FrozenTokens(_TokenTask):
    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.0)


def test_logged_train_and_val_losses_are_means_over_counted_tokens():
    """With lr = 0 the epoch's train loss is exactly the mean cross-entropy over every counted token of the
    split (not a mean of micro-batch means), the same for validation; "count" itself is not logged."""
    x, y = _token_data()
    task = _FrozenTokens()
    learner = Learner(task, TensorLoader((x, y), 2), TensorLoader((x, y), 3), epochs=1, accumulate=3)
    learner.fit()
    h = learner.history[-1]
    with torch.no_grad():
        full = float(_token_loss(task.model, x, y))
        micro_means = [float(_token_loss(task.model, x[i:i + 2], y[i:i + 2])) for i in range(0, 7, 2)]
    assert h["train_loss"] == pytest.approx(full, abs=1e-12)
    assert h["val_loss"] == pytest.approx(full, abs=1e-12)
    assert abs(sum(micro_means) / len(micro_means) - full) > 1e-3        # the naive mean would differ
    assert not any("count" in key for key in h)


def test_token_prediction_logs_per_token_accuracy():
    x, y = _token_data()
    task = _Tokens(lr=0.0)
    h = Learner(task, TensorLoader((x, y), 2), TensorLoader((x, y), 3), epochs=1, accumulate=3).fit()[-1]
    keep = y != IGNORE
    with torch.no_grad():
        acc = float((task.model(x).argmax(-1)[keep] == y[keep]).double().mean())
        loss = float(_token_loss(task.model, x, y))
    assert h["train_accuracy"] == pytest.approx(acc, abs=1e-6) and h["val_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert h["train_loss"] == pytest.approx(loss, abs=1e-6) and "train_count" not in h


class _BadCount(Regression):
    def training_step(self, batch, learner):
        return {**super().training_step(batch, learner), "count": -1}


class _VectorCount(Regression):
    def training_step(self, batch, learner):
        return {**super().training_step(batch, learner), "count": torch.ones(3)}


def test_a_bad_count_is_a_user_error():
    x, y = regression_data(8)
    with pytest.raises(UserError, match="count=-1"):
        Learner(_BadCount(), TensorLoader((x, y), 4), accumulate=2).fit()
    with pytest.raises(UserError, match=r"count \(3,\); it must be one number"):
        Learner(_VectorCount(), TensorLoader((x, y), 4)).fit()
