"""SequenceClassification and SequenceRegression: optimizer wiring and losses against torch references."""

import torch
import torch.nn.functional as F

from learnloop.engine.optim import OptimConfig, discriminative_param_groups
from learnloop.models.sequence import SequenceClassifier, SequenceRegressor
from learnloop.tasks.sequence import SequenceClassification, SequenceRegression


def test_classification_optimizer_plain_and_param_groups():
    model = SequenceClassifier(12, 3, embed_dim=4, hidden=6, num_layers=2)
    plain = SequenceClassification(model, 3, OptimConfig(lr=0.3, weight_decay=0.1)).configure_optimizers()
    assert isinstance(plain, torch.optim.AdamW) and {g["lr"] for g in plain.param_groups} == {0.3}
    assert {g["weight_decay"] for g in plain.param_groups} == {0.1, 0.0}
    task = SequenceClassification(model, 3, OptimConfig(lr=0.3),
                                  param_groups=lambda m: discriminative_param_groups(m.groups(), 0.8, 2.0, 0.1))
    opt = task.configure_optimizers()
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.1, 0.2, 0.4, 0.8]   # 0.8 / 2^k, head at 0.8
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_classification_step_matches_cross_entropy_on_ragged_batches():
    torch.manual_seed(0)
    model = SequenceClassifier(12, 3, embed_dim=4, hidden=6, pooling="last")
    task = SequenceClassification(model, 3, label_smoothing=0.1)
    ids = torch.randint(1, 12, (4, 7))
    lengths = torch.tensor([7, 3, 1, 5])
    ids[torch.arange(7)[None, :] >= lengths[:, None]] = 0
    y = torch.tensor([0, 2, 1, 2])
    out = task.training_step((ids, lengths, y), None)
    logits = model(ids, lengths)
    assert torch.allclose(out["loss"], F.cross_entropy(logits, y, label_smoothing=0.1))
    assert float(out["accuracy"]) == float((logits.argmax(1) == y).float().mean())
    # padding does not change a sequence's logits: each row alone, unpadded, gives the same output
    for i in range(4):
        alone = model(ids[i:i + 1, : lengths[i]], lengths[i:i + 1])
        assert torch.allclose(alone, logits[i:i + 1], atol=1e-6)
    assert torch.equal(task.predict_step((ids, lengths, y), None), logits)


def test_regression_losses_match_torch():
    torch.manual_seed(0)
    model = SequenceRegressor(2, 5, cell="gru")
    task = SequenceRegression(model, OptimConfig(name="sgd", lr=0.1, momentum=0.0))
    assert isinstance(task.configure_optimizers(), torch.optim.SGD)
    x, lengths, y = torch.randn(6, 4, 2), torch.tensor([4, 1, 2, 4, 3, 4]), torch.randn(6, 1)
    out = task.validation_step((x, lengths, y), None)
    pred = model(x, lengths)
    assert torch.allclose(out["loss"], F.mse_loss(pred, y)) and torch.allclose(out["mae"], F.l1_loss(pred, y))
    x2 = torch.randn(3, 4, 2)
    y2 = torch.randn(3, 1)
    assert torch.allclose(task.training_step((x2, y2), None)["loss"], F.mse_loss(model(x2), y2))
