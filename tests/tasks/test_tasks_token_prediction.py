"""TokenPrediction / TokenClassification: the loss, counts and accuracy against torch references, the optimizer
an `OptimConfig` names, and entity F1 accumulated over ragged validation batches."""

import pytest
import torch
import torch.nn.functional as F

from learnloop.data.loader import TensorLoader
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.task import COUNT
from learnloop.metrics.sequence_labeling import entity_scores
from learnloop.tasks.token_prediction import IGNORE, TokenClassification, TokenPrediction


def _model(vocab=7, dim=4, classes=None, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, classes or vocab))


def _batch(seed=0, ignored=((0, 3), (0, 4), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4))):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, 7, (3, 5), generator=g), torch.randint(0, 7, (3, 5), generator=g)
    for r, c in ignored:
        y[r, c] = IGNORE
    return x, y


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_count_and_accuracy_match_references(smoothing):
    x, y = _batch()
    task = TokenPrediction(_model(), label_smoothing=smoothing)
    out = task.training_step((x, y), None)
    logits = task.model(x)
    ref = F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1), ignore_index=IGNORE, label_smoothing=smoothing)
    torch.testing.assert_close(out["loss"], ref)
    keep = y != IGNORE
    assert int(out[COUNT]) == int(keep.sum()) == task.batch_size((x, y)) == 8
    assert float(out["accuracy"]) == pytest.approx(float((logits.argmax(-1)[keep] == y[keep]).float().mean()))
    val = task.validation_step((x, y), None)              # validation never smooths
    torch.testing.assert_close(val["loss"], F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1),
                                                            ignore_index=IGNORE))
    assert not val["loss"].requires_grad


def test_fully_ignored_batch_counts_zero_tokens():
    x, y = _batch(ignored=[(r, c) for r in range(3) for c in range(5)])
    out = TokenPrediction(_model()).training_step((x, y), None)
    assert int(out[COUNT]) == 0 and float(out["accuracy"]) == 0.0


class _Recurrent(torch.nn.Module):
    """Returns (logits, state), as the recurrent language models do."""

    def __init__(self):
        super().__init__()
        self.inner = _model()

    def forward(self, ids):
        return self.inner(ids), None


def test_recurrent_tuple_outputs_are_read_as_logits():
    x, y = _batch()
    task = TokenPrediction(_Recurrent())
    ref = F.cross_entropy(task.model.inner(x).reshape(-1, 7), y.reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(task.training_step((x, y), None)["loss"], ref)
    assert task.predict_step((x, y), None).shape == (3, 5, 7)


def test_optimizer_is_the_one_optim_names():
    model = _model()
    opt = TokenPrediction(model, OptimConfig(name="adamw", lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))) \
        .configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["lr"] == 3e-3 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert {decay[id(p)] for p in model.parameters() if p.ndim >= 2} == {0.1}
    assert {decay[id(p)] for p in model.parameters() if p.ndim < 2} == {0.0}        # biases: no decay
    sgd = TokenPrediction(model, OptimConfig(name="sgd", lr=0.5, momentum=0.8)).configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.8
    default = TokenPrediction(model).configure_optimizers()
    assert isinstance(default, torch.optim.AdamW) and default.param_groups[0]["lr"] == 1e-3


def test_param_groups_replace_the_model_parameters():
    model = _model()
    groups = [{"params": list(model[0].parameters()), "lr": 1e-4}, {"params": list(model[1].parameters())}]
    opt = TokenPrediction(model, OptimConfig(name="adam", lr=1e-2), param_groups=groups).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]


LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_entity_scores_over_ragged_batches_equal_one_pass():
    """Validation over batches of 2, 2, 1 sequences (padding ignored) gives the entity F1 of all sequences
    at once, and the tags it scored are the true/argmax tags at counted positions only."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 7, (5, 6), generator=g)
    y = torch.randint(0, 5, (5, 6), generator=g)
    y[0, 4:] = IGNORE
    y[3, 1:] = IGNORE
    y[4, ::2] = IGNORE                   # e.g. sub-word pieces
    task = TokenClassification(_model(classes=5, seed=8), LABELS)
    metrics = Learner(task).validate(TensorLoader((ids, y), 2), "val")
    pred = task.model(ids).argmax(-1)
    true_tags = [[LABELS[t] for t in row[row != IGNORE].tolist()] for row in y]
    pred_tags = [[LABELS[p] for p in pr[row != IGNORE].tolist()] for row, pr in zip(y, pred)]
    ref = entity_scores(true_tags, pred_tags)
    assert 0 < ref["f1"] < 1 and ref["precision"] != ref["recall"]           # a discriminating case
    assert metrics["val_entity_f1"] == pytest.approx(ref["f1"])
    assert metrics["val_entity_precision"] == pytest.approx(ref["precision"])
    assert metrics["val_entity_recall"] == pytest.approx(ref["recall"])
    keep = y != IGNORE
    assert metrics["val_accuracy"] == pytest.approx(float((pred[keep] == y[keep]).float().mean()))
    ce = F.cross_entropy(task.model(ids).reshape(-1, 5), y.reshape(-1), ignore_index=IGNORE)
    assert metrics["val_loss"] == pytest.approx(float(ce.detach()), rel=1e-5)       # a per-token mean over the split


def test_entity_f1_known_value():
    """true: PER(0-1) LOC(3); predicted: PER(0-1) PER(3) -> P = R = F1 = 1/2."""
    task = TokenClassification(_model(classes=5), LABELS)
    task.on_validation_start(None, "val")
    task._true, task._pred = [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-PER"]]
    assert task.on_validation_end(None, "val") == {"entity_precision": 0.5, "entity_recall": 0.5, "entity_f1": 0.5}
