"""Issue B recipes: each learns on a small real subset in seconds; bad inputs give one clear error."""

import pytest
import torch

import learnloop
from learnloop.errors import CorruptFileError, UserError
from learnloop.models.sequence import SequenceClassifier
from learnloop.recipes.sequence import load_faq
from learnloop.tasks.sequence import SequenceClassification

FAST = {"progress": False, "quiet": True}


def test_char_rnn_language_learns(tmp_path):
    run = learnloop.run("char-rnn-language", out=tmp_path, per_language=150, max_len=60, epochs=4, hidden=48, **FAST)
    assert run.metrics["test_accuracy"] > 0.45                       # 7 languages: chance is 0.14
    assert (run.folder / "plots" / "confusion_matrix.png").exists()
    from learnloop.recipes.sequence import classify_texts

    out = classify_texts(run.model, run.outputs["vocab"], ["Der Hund schläft im Garten."], run.outputs["classes"])
    assert len(out) == 1 and out[0] in run.outputs["classes"]


def test_char_lm_learns_and_samples(tmp_path):
    run = learnloop.run("char-lm", out=tmp_path, hidden=64, num_layers=1, seq_len=48, batch_size=16,
                        batches_per_epoch=30, epochs=2, val_batches=2, sample_chars=40, temperatures=(0.8,), lr=1e-2,
                        **FAST)
    # uniform over ~100 characters is 4.6 nats; the unigram distribution alone is ~3.3
    assert run.metrics["val_loss_nats_per_char"] < 3.2
    assert "temperature 0.8" in (run.folder / "samples" / "samples.txt").read_text()


def test_ulmfit_runs_both_arms_on_one_split(tmp_path):
    run = learnloop.run("ulmfit-classify", out=tmp_path, set={
        "lm.hidden": 48, "lm.num_layers": 1, "lm.seq_len": 32, "lm.batch_size": 16, "lm.batches_per_epoch": 10,
        "lm.epochs": 1, "lm.val_batches": 1, "lm.sample_chars": 0, "categories": "zippy,startrek",
        "train_per_class": 30, "epochs": 2, "max_len": 64, "scratch_lrs": "3e-3,1e-2"}, **FAST)
    for arm in ("ulmfit", "scratch"):
        assert 0.0 <= run.metrics[f"{arm}_test_accuracy"] <= 1.0
    assert run.metrics["scratch_lr"] in (3e-3, 1e-2)                  # chosen on validation accuracy
    assert run.metrics["scratch_val_accuracy"] == max(run.metrics["scratch_lr0.003_val_accuracy"],
                                                      run.metrics["scratch_lr0.01_val_accuracy"])
    assert (run.folder / "checkpoints" / "lm" / "best.safetensors").exists()
    for lr in ("0.003", "0.01"):
        assert (run.folder / "checkpoints" / f"scratch_lr{lr}" / "best.safetensors").exists()


def test_gradual_unfreezing_and_discriminative_rates():
    model = SequenceClassifier(20, 3, embed_dim=4, hidden=8, num_layers=2)
    task = SequenceClassification(model, 3, lr=1.0, discriminative_decay=2.0, gradual_unfreeze=True)
    opt = task.configure_optimizers()
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]                              # embedding, layer0, layer1, head
    groups = model.groups()
    task._apply_unfreezing(0)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, False, False, True]
    task._apply_unfreezing(2)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, True, True, True]
    ulmfit_head = SequenceClassifier(20, 3, embed_dim=4, hidden=8, num_layers=2, head_hidden=5, head_dropout=0.5)
    assert len(ulmfit_head.groups()) == 4 and len(ulmfit_head.groups()[-1]) == 8   # 2 x (layernorm, linear)
    assert ulmfit_head(torch.ones(2, 7, dtype=torch.long), torch.tensor([7, 3])).shape == (2, 3)


def test_next_number_gru_learns(tmp_path):
    run = learnloop.run("next-number", out=tmp_path, cells=("gru",), lags=(5,), train_size=1000, test_size=300,
                        epochs=4, lr=1e-2, **FAST)
    assert run.metrics["gru_next_mse"] < 0.3                            # predicting the mean gives ~0.35
    assert run.metrics["gru_recall5_mse"] < 0.15                        # target variance is 1/3


def test_rnn_qa_learns_the_faq(tmp_path):
    run = learnloop.run("rnn-qa", out=tmp_path, epochs=6, copies=10, **FAST)
    assert run.metrics["test_accuracy"] > 0.25                        # 18 answers: chance is 0.06
    from learnloop.recipes.sequence import answer

    assert answer(run.model, run.outputs["vocab"], run.outputs["answers"], "how do i install it?") in \
        run.outputs["answers"]


def test_vanishing_through_time_untrained(tmp_path):
    run = learnloop.run("vanishing-through-time", out=tmp_path, steps=30, epochs=0, batch=16, **FAST)
    assert run.metrics["rnn_init_first_last_ratio"] < 1e-3
    assert (run.folder / "plots" / "grad_norm_through_time.png").exists()


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a\nhello,world\n")
    with pytest.raises(CorruptFileError, match="missing column"):
        load_faq(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CorruptFileError, match="empty"):
        load_faq(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("question,answer\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(CorruptFileError, match="UTF-8"):
        load_faq(latin)
    model = SequenceClassifier(10, 2, embed_dim=4, hidden=4, max_len=5)
    with pytest.raises(UserError, match="exceeds the model's limit of 5"):
        model(torch.ones(1, 6, dtype=torch.long))
    with pytest.raises(UserError, match="unknown fortune categories"):
        learnloop.run("ulmfit-classify", out=tmp_path, categories=("no-such-category",), set={
            "lm.hidden": 8, "lm.num_layers": 1, "lm.batches_per_epoch": 1, "lm.epochs": 1, "lm.val_batches": 1,
            "lm.sample_chars": 0, "lm.seq_len": 16}, **FAST)
