"""rnn-qa: answer questions over a CSV of question/answer pairs by classifying a question into one of the
answers, with a word-level bidirectional GRU encoder (learnloop.nn.recurrent) over the question.

Three disjoint parts of the questions: the CSV's `split` column (or, without one, a stratified
`data.test_fraction`) holds out the test paraphrases; of the rest, a seeded stratified `data.val_fraction`
of each answer's questions is the validation split, which picks the epoch kept; the others are trained on
with word dropout (`data.copies` augmented copies per epoch). The vocabulary is the trained questions'
words, so validation and test questions meet unknown words alike. The reported `test_accuracy` is that of
the selected checkpoint on the held-out paraphrases, which took no part in training or selection.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.data import stratified_split
from learnloop.data.text import BucketLoader, Vocab, read_text, word_tokens, word_vocab
from learnloop.engine.learner import Learner
from learnloop.errors import CorruptFileError, UserError
from learnloop.recipes.base import Bundle, Predictor, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.common import (
    EVAL_BATCH,
    TextClassifierModelConfig,
    TextClassifierParts,
    TextClassPredictor,
    train_section,
)
from learnloop.utils.io import write_text

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def load_faq(path: str | Path | None = None) -> tuple[list[str], list[str], list[str]]:
    """(questions, answers, splits) from a CSV with columns question, answer and optional split
    (train/test). Missing columns or an empty/non-UTF-8 file are one clear error."""
    path = Path(path) if path else ASSETS / "faq.csv"
    text = read_text(path)
    rows = list(csv.DictReader(text.splitlines()))
    cols = set(rows[0]) if rows else set(next(csv.reader(text.splitlines()), []))
    missing = [c for c in ("question", "answer") if c not in cols]
    if missing:
        raise CorruptFileError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(sorted(cols))})")
    rows = [r for r in rows if (r.get("question") or "").strip() and (r.get("answer") or "").strip()]
    if not rows:
        raise CorruptFileError(f"{path}: no question/answer rows")
    return ([r["question"].strip() for r in rows], [r["answer"].strip() for r in rows],
            [(r.get("split") or "train").strip().lower() for r in rows])


@dataclass
class QADataConfig:
    path: str = param("", "CSV with question,answer[,split] columns (default: the shipped learnloop FAQ)")
    test_fraction: float = param(0.2, "held-out fraction when the CSV has no split column", min=0.05, max=0.5)
    val_fraction: float = param(0.25, "fraction of each answer's training questions held out (seeded) to pick "
                                "the epoch kept (the shipped FAQ: 1 of 4)", min=0.01, max=0.5)
    max_len: int = param(40, "longest question in words (the model's limit)", min=2)
    word_dropout: float = param(0.15, "drop this fraction of words of training questions (augmentation)",
                                min=0.0, max=0.8)
    copies: int = param(20, "augmented copies of each training question per epoch", min=1)


@dataclass
class QAConfig:
    data: QADataConfig = section(QADataConfig, "data")
    model: TextClassifierModelConfig = section(TextClassifierModelConfig, "word-level question encoder",
                                               cell="gru", embed_dim=64, hidden=64, num_layers=1, bidirectional=True,
                                               pooling="concat", dropout=0.3, embed_dropout=0.1)
    train: TrainConfig = train_section("training (AdamW, one-cycle; the epoch with the best accuracy on the "
                                       "validation questions is kept)", epochs=15, batch_size=32, lr=3e-3,
                                       weight_decay=0.01)
    label_smoothing: float = param(0.1, "label smoothing epsilon", min=0.0, max=0.5)

    MOVED = {"csv": "data.path"}


def _augment(questions: list[list[str]], labels: list[int], copies: int, p: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    out_q, out_y = [], []
    for _ in range(copies):
        for q, y in zip(questions, labels):
            keep = (torch.rand(len(q), generator=g) >= p).tolist()
            words = [w for w, k in zip(q, keep) if k] or q
            out_q.append(words)
            out_y.append(y)
    return out_q, out_y


def faq_splits(d: QADataConfig, y: list[int], splits: list[str], seed: int) -> tuple[list[int], list[int], list[int]]:
    """(train, val, test) question indices: test from the CSV's split column (or a stratified
    `d.test_fraction`, seed `seed`), val a stratified `d.val_fraction` of the rest (seed `seed + 1`)."""
    if "test" not in splits:
        test_idx = set(stratified_split(torch.tensor(y), d.test_fraction, seed=seed)[1].tolist())
        splits = ["test" if i in test_idx else "train" for i in range(len(y))]
    rest = [i for i, s in enumerate(splits) if s != "test"]
    test = [i for i, s in enumerate(splits) if s == "test"]
    if not rest or not test:
        raise UserError("rnn-qa needs both training and held-out questions")
    tr, va = stratified_split(torch.tensor([y[i] for i in rest]), d.val_fraction, seed=seed + 1)
    if not len(va):
        raise UserError(f"data.val_fraction {d.val_fraction:g} holds out no training question for validation "
                        "(too few per answer); raise it")
    return [rest[i] for i in tr.tolist()], [rest[i] for i in va.tolist()], test


@recipe("rnn-qa", "question answering over a CSV of question/answer pairs: a GRU question encoder "
        "classifies into answers; accuracy on paraphrased held-out questions", QAConfig,
        target="test_accuracy on held-out paraphrases reported", main_metric="test_accuracy",
        smoke={"train.epochs": 1, "data.copies": 1, "model.hidden": 8, "model.embed_dim": 8})
class FaqAnswering(TextClassifierParts):
    classes_key = "answers"

    def data(self, cfg: QAConfig, seed: int) -> Bundle:
        d = cfg.data
        questions, answers, splits = load_faq(d.path or None)
        answer_list = sorted(set(answers))
        y_all = [answer_list.index(a) for a in answers]
        train, val, test = faq_splits(d, y_all, splits, seed)
        tok = [word_tokens(q) for q in questions]
        too_long = [len(t) for t in tok if len(t) > d.max_len]
        if too_long:
            raise UserError(f"question of {max(too_long)} words exceeds the model's limit of {d.max_len} "
                            "(set data.max_len)")
        vocab = word_vocab([questions[i] for i in train])
        aug_q, aug_y = _augment([tok[i] for i in train], [y_all[i] for i in train], d.copies, d.word_dropout, seed)
        tr_loader = BucketLoader([vocab.encode(q) for q in aug_q], torch.tensor(aug_y),
                                 batch_size=cfg.train.batch_size, seed=seed)

        def held_out(idx: list[int]) -> BucketLoader:
            return BucketLoader([vocab.encode(tok[i]) for i in idx], torch.tensor([y_all[i] for i in idx]),
                                batch_size=EVAL_BATCH, shuffle=False)

        info = {"vocab": vocab.tokens, "answers": answer_list,
                "sizes": {"train": len(train), "val": len(val), "test": len(test)}}
        extra = {"validation": [(questions[i], answers[i]) for i in val],
                 "held_out": [(questions[i], answers[i]) for i in test]}
        return Bundle(tr_loader, held_out(val), held_out(test), info, extra)

    def evaluate(self, cfg: QAConfig, run, data: Bundle) -> dict:
        val_accuracy = Learner(run.task).validate(data.val, "val")["val_accuracy"]
        metrics = Learner(run.task).validate(data.test, "test")
        predictor = self.predictor(run)
        held_out = data.extra["held_out"]
        lines = []
        for (q, a), out in zip(held_out, predictor([q for q, _ in held_out])):
            lines.append(f"{'ok ' if out['answer'] == a else 'NO '} Q: {q}\n    A: {out['answer']}")
        write_text(run.samples / "heldout_answers.txt", "\n".join(lines) + "\n")
        sizes = run.info["sizes"]
        run.say(f"FAQ: {len(run.info['answers'])} answers, {sizes['train']} training / {sizes['val']} validation "
                f"questions, {sizes['test']} held-out paraphrases, {len(run.info['vocab'])} words; validation "
                f"accuracy {val_accuracy:.3f} (the epoch kept), held-out paraphrase accuracy "
                f"{metrics['test_accuracy']:.3f}")
        return metrics

    def predictor(self, run) -> Predictor:
        return TextClassPredictor(run.task, Vocab(run.info["vocab"]), run.info["answers"], level="word",
                                  max_len=run.cfg.data.max_len, truncate=False, key="answer",
                                  inputs=f"questions (at most {run.cfg.data.max_len} words)",
                                  examples=["how do i install it?", "where are the plots written?"])
