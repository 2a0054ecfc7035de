"""Token-level prediction as a `Task`: causal and masked language modelling, seq2seq, token classification.

A batch is (*inputs, targets): `model(*inputs)` returns (B, T, C) logits for (B, T) integer targets (or a
tuple whose first item they are, as recurrent models return (logits, state)), and positions with target `IGNORE` (-100) do not count. The loss is the mean cross-entropy over counted
tokens, in nats per token,
    L = -(1/N) sum_{(b,t): y_bt != IGNORE} log softmax(z_bt)[y_bt],
so one task covers:
- causal LM (GPT, char-RNN):  inputs (x,),         targets x shifted left by one
- masked LM (BERT):           inputs (x_masked,),  targets x at masked positions, IGNORE elsewhere
- encoder-decoder (seq2seq, span corruption): inputs (src, tgt_in), targets tgt_out
- token classification (NER): inputs (ids,),       targets tag ids (IGNORE on padding / sub-word pieces)
Every step returns "count", the number of non-ignored target tokens N, so gradient accumulation and the
learner's averages are exact per-token means over the group / split (`batch_size` counts them too).
`TokenClassification` adds entity-level precision/recall/F1 (seqeval convention) on validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import COUNT, Task
from learnloop.metrics.sequence_labeling import entity_scores

IGNORE = -100


class TokenPrediction(Task):
    """`optim` names the optimizer (a config's `train.optim` section; default AdamW at 1e-3); `param_groups`
    (param-group dicts, e.g. discriminative rates) replaces the model's parameters as what it optimizes."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | None = None, *, label_smoothing: float = 0.0,
                 param_groups=None):
        self.model, self.optim = model, optim if optim is not None else OptimConfig()
        self.label_smoothing, self.param_groups = label_smoothing, param_groups

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        params = self.param_groups if self.param_groups is not None else self.model.parameters()
        return build_optimizer(self.optim, params)

    def batch_size(self, batch) -> int:
        return max(int((batch[-1] != IGNORE).sum()), 1)

    def _step(self, batch, smoothing: float = 0.0):
        *inputs, y = batch
        logits = self.model(*inputs)
        if isinstance(logits, tuple):            # recurrent models: (logits, final state)
            logits = logits[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=IGNORE,
                               label_smoothing=smoothing)
        with torch.no_grad():
            keep = y != IGNORE
            acc = (logits.argmax(-1)[keep] == y[keep]).float().mean() if keep.any() else torch.tensor(0.0)
        return logits, {"loss": loss, "accuracy": acc, COUNT: keep.sum()}

    def training_step(self, batch, learner):
        return self._step(batch, self.label_smoothing)[1]

    def validation_step(self, batch, learner):
        return {k: v.detach() for k, v in self._step(batch)[1].items()}

    def predict_step(self, batch, learner):
        out = self.model(*batch[:-1])
        return out[0] if isinstance(out, tuple) else out


class TokenClassification(TokenPrediction):
    """Tagging with a BIO label set `labels`; validation adds entity precision/recall/F1 over the split."""

    def __init__(self, model: torch.nn.Module, labels: Sequence[str], optim: OptimConfig | None = None, **kw):
        super().__init__(model, optim, **kw)
        self.labels = list(labels)
        self._true: list[list[str]] = []
        self._pred: list[list[str]] = []

    def on_validation_start(self, learner, stage):
        self._true, self._pred = [], []

    def validation_step(self, batch, learner):
        logits, out = self._step(batch)
        y, pred = batch[-1].cpu(), logits.argmax(-1).cpu()
        for yi, pi in zip(y, pred):
            keep = yi != IGNORE
            self._true.append([self.labels[i] for i in yi[keep].tolist()])
            self._pred.append([self.labels[i] for i in pi[keep].tolist()])
        return {k: v.detach() for k, v in out.items()}

    def on_validation_end(self, learner, stage):
        s = entity_scores(self._true, self._pred)
        return {"entity_precision": s["precision"], "entity_recall": s["recall"], "entity_f1": s["f1"]}
