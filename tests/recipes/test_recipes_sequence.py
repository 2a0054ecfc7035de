"""Issue B recipes: each learns on a small real subset in seconds; bad inputs give one clear error."""

import json
from types import SimpleNamespace

import pytest
import torch

import learnloop
from learnloop.errors import CorruptFileError, UserError
from learnloop.models.sequence import SequenceClassifier
from learnloop.recipes import evaluate_run, load_run, predict_run, recipes, resume_run
from learnloop.recipes.config import apply_overrides
from learnloop.recipes.sequence.qa import load_faq
from learnloop.recipes.sequence.ulmfit import Ulmfit, UlmfitConfig

FAST = {"progress": False, "quiet": True}
TINY_LM = {"lm.model.hidden": 48, "lm.model.num_layers": 1, "lm.data.seq_len": 32, "lm.train.batch_size": 16,
           "lm.data.batches_per_epoch": 10, "lm.train.epochs": 1, "lm.data.val_batches": 1, "lm.sample.chars": 0}


def _predictor(run):
    return recipes()[run.loaded.recipe.name].parts.predictor(run.loaded)


def test_char_rnn_language_learns(tmp_path):
    run = learnloop.run("char-rnn-language", out=tmp_path, data__per_language=150, data__max_len=60, train__epochs=4,
                        model__hidden=48, **FAST)
    assert run.metrics["test_accuracy"] > 0.45                       # 7 languages: chance is 0.14
    assert (run.folder / "plots" / "confusion_matrix.png").exists()
    classes = run.loaded.info["classes"]
    out = predict_run(run.folder, ["Der Hund schläft im Garten.", "x" * 100])
    assert len(out) == 2 and all(o["language"] in classes for o in out)
    assert [t["probability"] for t in out[0]["top"]] == sorted((t["probability"] for t in out[0]["top"]), reverse=True)
    assert out[1]["truncated_to"] == 60 and "truncated_to" not in out[0]
    # the predictor's probabilities are the model's softmax on the encoded text
    from learnloop.data.text import Vocab

    vocab = Vocab(run.loaded.info["vocab"])
    with torch.no_grad():
        logits = run.model.eval()(torch.tensor([vocab.encode(list("Der Hund schläft im Garten."))]))
    assert out[0]["probability"] == pytest.approx(float(torch.softmax(logits, 1).max()), abs=1e-4)


def test_char_lm_learns_and_samples(tmp_path):
    run = learnloop.run("char-lm", out=tmp_path, set={
        "model.hidden": 64, "model.num_layers": 1, "data.seq_len": 48, "train.batch_size": 16,
        "data.batches_per_epoch": 30, "train.epochs": 2, "data.val_batches": 2, "sample.chars": 40,
        "sample.temperatures": "0.8", "train.optim.lr": 1e-2, "predict.chars": 25}, **FAST)
    # uniform over ~100 characters is 4.6 nats; the unigram distribution alone is ~3.3
    assert run.metrics["val_loss_nats_per_char"] < 3.2
    assert run.metrics["train_chars_seen"] == 2 * 30 * 16 * 48
    assert "temperature 0.8" in (run.folder / "samples" / "samples.txt").read_text()
    out = predict_run(run.folder, ["The ", "The "])
    assert len(out[0]["continuation"]) <= 25 and out[0]["temperature"] == 0.8
    assert out[0]["continuation"] == out[1]["continuation"]          # seeded: the same prompt, the same text
    with pytest.raises(UserError, match="empty prompt"):
        predict_run(run.folder, [""])


def test_ulmfit_runs_both_arms_on_one_split(tmp_path):
    run = learnloop.run("ulmfit-classify", out=tmp_path, set={
        **TINY_LM, "data.categories": "zippy,startrek", "data.train_per_class": 30, "ulmfit.train.epochs": 2,
        "scratch.train.epochs": 2, "data.max_len": 64, "scratch.lrs": "3e-3,1e-2"}, **FAST)
    for arm in ("ulmfit", "scratch"):
        assert 0.0 <= run.metrics[f"{arm}_test_accuracy"] <= 1.0
    assert run.metrics["scratch_lr"] in (3e-3, 1e-2)                  # chosen on validation accuracy
    assert run.metrics["scratch_val_accuracy"] == max(run.metrics["scratch_lr0.003_val_accuracy"],
                                                      run.metrics["scratch_lr0.01_val_accuracy"])
    assert (run.folder / "checkpoints" / "lm" / "best.safetensors").exists()
    for lr in ("0.003", "0.01"):
        assert (run.folder / "checkpoints" / f"scratch_lr{lr}" / "best.safetensors").exists()
    out = predict_run(run.folder, ["Beam me up, Scotty!"])
    assert out[0]["category"] in ("zippy", "startrek")


def test_ulmfit_consumes_a_char_lm_run(tmp_path):
    lm = learnloop.run("char-lm", out=tmp_path, set={k.removeprefix("lm."): v for k, v in TINY_LM.items()}, **FAST)
    settings = {"lm_run": str(lm.folder), "data.categories": "zippy,startrek", "data.train_per_class": 10,
                "ulmfit.train.epochs": 1, "data.max_len": 32, "scratch.enabled": False}
    run = learnloop.run("ulmfit-classify", out=tmp_path, set=settings, **FAST)
    assert sorted(p.name for p in (run.folder / "checkpoints").iterdir()) == ["ulmfit"]     # no stage 'lm'
    assert "lm_val_loss_nats_per_char" not in run.metrics and "scratch_test_accuracy" not in run.metrics
    assert evaluate_run(run.folder, **FAST) == {k: v for k, v in run.metrics.items()
                                                 if k not in ("status", "wall_time_s")}
    loaded = load_run(run.folder)
    assert loaded.upstream["lm_run"].path == lm.folder
    assert len(loaded.tasks["ulmfit"].model.encoder.embedding.weight) == len(lm.loaded.info["vocab"])
    with pytest.raises(UserError, match="expected one of: char-lm"):           # not a char-lm run
        learnloop.run("ulmfit-classify", out=tmp_path, set={**settings, "lm_run": str(run.folder)}, **FAST)
    with pytest.raises(UserError, match="held out fortunes with val_fraction 0.1, split_seed 0"):
        learnloop.run("ulmfit-classify", out=tmp_path, set={**settings, "data.split_seed": 1}, **FAST)
    with pytest.raises(UserError, match="set data.path to the LM's folder"):
        learnloop.run("ulmfit-classify", out=tmp_path, set={**settings, "data.path": "/usr/share/games/fortunes"},
                      **FAST)


def test_ulmfit_stage_resumes_on_its_own(tmp_path):
    """Stages after 'lm' started over from scratch reach exactly the metrics of the uninterrupted run."""
    settings = {**TINY_LM, "data.categories": "zippy,startrek", "data.train_per_class": 10, "ulmfit.train.epochs": 2,
                "scratch.train.epochs": 2, "data.max_len": 32, "scratch.lrs": "1e-2"}
    run = learnloop.run("ulmfit-classify", out=tmp_path, set=settings, **FAST)
    for stage in ("ulmfit", "scratch_lr0.01"):
        for f in (run.folder / "checkpoints" / stage).iterdir():
            f.unlink()
    again = resume_run(run.folder, **FAST)
    drop = ("wall_time_s",)
    assert {k: v for k, v in again.metrics.items() if k not in drop} == \
        {k: v for k, v in run.metrics.items() if k not in drop}
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("stage") for r in rows] == ["lm", "ulmfit", "ulmfit", "scratch_lr0.01", "scratch_lr0.01"]


def test_gradual_unfreezing_and_discriminative_rates():
    """The ULMFiT stage wires the engine's discriminative rates and GradualUnfreezing onto model.groups()."""
    from learnloop.engine.optim import GradualUnfreezing

    cfg = apply_overrides(UlmfitConfig(), {"lm.model.embed_dim": 4, "lm.model.hidden": 8, "lm.model.num_layers": 2,
                                           "ulmfit.train.optim.lr": 1.0, "ulmfit.discriminative_decay": 2.0,
                                           "model.head_hidden": 0, "model.head_dropout": 0.0, "scratch.lrs": "0.5"})
    info = {"vocab": [f"t{i}" for i in range(20)], "classes": ["a", "b", "c"], "seed": 0}
    lm_stage, ulmfit_stage, scratch_stage = Ulmfit().stages(cfg, info, {})
    assert [s.name for s in (lm_stage, ulmfit_stage, scratch_stage)] == ["lm", "ulmfit", "scratch_lr0.5"]
    lm = lm_stage.build({})
    task = ulmfit_stage.build({"lm": lm})
    model = task.model
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.state_dict().values(),
                                                 lm.model.encoder.state_dict().values()))   # starts from the LM
    opt = task.configure_optimizers()
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]                              # embedding, layer0, layer1, head
    assert {g["weight_decay"] for g in opt.param_groups} == {0.01, 0.0}  # matrices decay, biases do not
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    (unfreeze,) = ulmfit_stage.callbacks(task)
    assert isinstance(unfreeze, GradualUnfreezing)
    groups = model.groups()
    unfreeze.on_epoch_start(SimpleNamespace(epoch=0))
    assert [all(p.requires_grad for p in g) for g in groups] == [False, False, False, True]
    unfreeze.on_epoch_start(SimpleNamespace(epoch=2))
    assert [all(p.requires_grad for p in g) for g in groups] == [False, True, True, True]
    scratch = scratch_stage.build({"lm": lm})
    assert {g["lr"] for g in scratch.configure_optimizers().param_groups} == {0.5}
    assert scratch_stage.callbacks is None and scratch_stage.train.optim.lr == 0.5
    no_unfreeze = apply_overrides(cfg, {"ulmfit.gradual_unfreeze": False})
    assert Ulmfit().stages(no_unfreeze, info, {})[1].callbacks is None
    ulmfit_head = SequenceClassifier(20, 3, embed_dim=4, hidden=8, num_layers=2, head_hidden=5, head_dropout=0.5)
    assert len(ulmfit_head.groups()) == 4 and len(ulmfit_head.groups()[-1]) == 8   # 2 x (layernorm, linear)
    assert ulmfit_head(torch.ones(2, 7, dtype=torch.long), torch.tensor([7, 3])).shape == (2, 3)


def test_next_number_gru_learns(tmp_path):
    run = learnloop.run("next-number", out=tmp_path, cells=("gru",), data__lags=(5,), data__train_size=1000,
                        data__test_size=300, train__epochs=4, train__optim__lr=1e-2, **FAST)
    assert run.metrics["gru_next_mse"] < 0.3                            # predicting the mean gives ~0.35
    assert run.metrics["gru_recall5_mse"] < 0.15                        # target variance is 1/3
    # the validation split is the test set: the last epoch's weights are evaluated, not the best-scoring ones
    assert run.metrics["gru_next_mse"] == pytest.approx(run.loaded.history("gru_next")[-1]["val_loss"], rel=1e-6)
    out = predict_run(run.folder, ["0.1, 0.2, 0.3, 0.4", "1e-1,-2"])
    x = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, -1, 1)
    assert out[0]["cell"] == "gru"
    assert out[0]["next"] == pytest.approx(float(run.loaded.tasks["gru_next"].model.eval()(x).detach()), abs=1e-5)
    for bad, message in (("", "empty input"), ("1,,2", "is not a number"), ("1,nan", "not a finite number"),
                         ("1,two", "'two' is not a number")):
        with pytest.raises(UserError, match=message):
            predict_run(run.folder, [bad])


def test_rnn_qa_learns_the_faq(tmp_path):
    run = learnloop.run("rnn-qa", out=tmp_path, train__epochs=6, data__copies=10, **FAST)
    assert run.metrics["test_accuracy"] > 0.25                        # 18 answers: chance is 0.06
    # the epoch kept is the best on the validation questions (not on the test paraphrases it reports)
    from learnloop.engine.learner import Learner

    data = recipes()["rnn-qa"].parts.data(run.loaded.cfg, run.loaded.seed)
    history = [r for r in run.loaded.history("") if "val_accuracy" in r]
    assert len(history) == 6
    kept = Learner(run.loaded.task).validate(data.val, "val")["val_accuracy"]
    assert kept == pytest.approx(max(r["val_accuracy"] for r in history), abs=1e-6)
    assert Learner(run.loaded.task).validate(data.test, "test")["test_accuracy"] == \
        pytest.approx(run.metrics["test_accuracy"], abs=1e-6)
    answers = run.loaded.info["answers"]
    (out,) = predict_run(run.folder, ["how do i install it?"])
    assert out["answer"] in answers
    assert "ok " in (run.folder / "samples" / "heldout_answers.txt").read_text()
    with pytest.raises(UserError, match="the model's limit is 40"):
        predict_run(run.folder, ["why " * 41])
    with pytest.raises(UserError, match="empty input"):
        predict_run(run.folder, ["  "])


def _qa_split(bundle, questions):
    """(trained, validation, test) questions of an rnn-qa data bundle over the CSV's `questions`."""
    val, test = [q for q, _ in bundle.extra["validation"]], [q for q, _ in bundle.extra["held_out"]]
    return [q for q in questions if q not in val and q not in test], val, test


def test_rnn_qa_validation_split_is_held_out_of_training_not_test():
    from learnloop.data.text import word_tokens

    recipe = recipes()["rnn-qa"]
    cfg = recipe.config()
    bundle = recipe.parts.data(cfg, 0)
    questions, answers, splits = load_faq()
    csv_train = [q for q, s in zip(questions, splits) if s == "train"]
    csv_test = [q for q, s in zip(questions, splits) if s == "test"]
    assert bundle.info["sizes"] == {"train": 54, "val": 18, "test": 36}          # 18 answers x (3 + 1 | 2)
    trained, val, test = _qa_split(bundle, questions)
    assert sorted(test) == sorted(csv_test)                                      # the CSV's test split, as before
    assert set(val) <= set(csv_train) and len(set(val)) == 18 and len(trained) == 54
    by_answer = dict(zip(questions, answers))
    assert sorted(by_answer[q] for q in val) == sorted(set(answers))              # one per answer (stratified)
    assert len(bundle.val.seqs) == 18 and len(bundle.test.seqs) == 36
    assert len(bundle.train.seqs) == cfg.data.copies * 54                         # only the trained ones augmented
    # the vocabulary is the trained questions' words: a word seen only in validation questions is unknown
    trained_words = {w for q in trained for w in word_tokens(q)}
    assert set(bundle.info["vocab"][4:]) == trained_words                         # after <pad> <unk> <bos> <eos>
    assert {w for q in val for w in word_tokens(q)} - trained_words
    # seeded: the same seed gives the same split, another seed another one (the test split stays)
    assert _qa_split(recipe.parts.data(cfg, 0), questions)[1] == val
    other = _qa_split(recipe.parts.data(cfg, 1), questions)
    assert other[1] != val and sorted(other[2]) == sorted(test)


def test_rnn_qa_splits_a_csv_without_split_column(tmp_path):
    rows = ["question,answer"] + [f"question {k} about topic {c},answer {c}" for c in range(3) for k in range(10)]
    path = tmp_path / "faq.csv"
    path.write_text("\n".join(rows) + "\n")
    questions = load_faq(path)[0]
    recipe = recipes()["rnn-qa"]
    cfg = apply_overrides(recipe.config(), {"data.path": str(path), "data.test_fraction": 0.2,
                                            "data.val_fraction": 0.25})
    bundle = recipe.parts.data(cfg, 0)
    trained, val, test = _qa_split(bundle, questions)
    assert bundle.info["sizes"] == {"train": 18, "val": 6, "test": 6}          # per answer: 2 test, 2 of 8 val
    assert (len(trained), len(set(val)), len(set(test))) == (18, 6, 6) and not set(val) & set(test)
    assert sorted(a for q, a in bundle.extra["validation"]) == ["answer 0"] * 2 + ["answer 1"] * 2 + ["answer 2"] * 2
    with pytest.raises(UserError, match="data.val_fraction 0.05 holds out no training question"):
        recipe.parts.data(apply_overrides(cfg, {"data.val_fraction": 0.05}), 0)


def test_vanishing_through_time_untrained(tmp_path):
    run = learnloop.run("vanishing-through-time", out=tmp_path, data__steps=30, trained=False, data__probe_size=16,
                        **FAST)
    assert run.metrics["rnn_init_first_last_ratio"] < 1e-3
    assert "rnn_trained_first_last_ratio" not in run.metrics and not run.tasks
    assert (run.folder / "plots" / "grad_norm_through_time.png").exists()
    assert recipes()["vanishing-through-time"].parts.predictor(load_run(run.folder)) is None


@pytest.mark.parametrize("recipe,old,new", [
    ("char-rnn-language", "hidden", "model.hidden"), ("char-rnn-language", "data_path", "data.path"),
    ("char-lm", "sample_chars", "sample.chars"), ("char-lm", "seq_len", "data.seq_len"),
    ("char-lm", "schedule", "train.schedule.kind"), ("rnn-qa", "csv", "data.path"),
    ("rnn-qa", "copies", "data.copies"), ("ulmfit-classify", "scratch_lrs", "scratch.lrs"),
    ("ulmfit-classify", "warmup", "ulmfit.train.schedule.pct_start"), ("ulmfit-classify", "lm.hidden", "lm.model.hidden"),
    ("ulmfit-classify", "lm.epochs", "lm.train.epochs"), ("next-number", "lags", "data.lags"),
    ("vanishing-through-time", "batch", "data.probe_size")])
def test_old_keys_name_their_new_place(tmp_path, recipe, old, new):
    with pytest.raises(UserError, match=f"it is now '{new}'"):
        learnloop.run(recipe, out=tmp_path, set={old: "1"}, **FAST)


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
    tiny = {**TINY_LM, "lm.model.hidden": 8, "lm.data.batches_per_epoch": 1, "lm.data.seq_len": 16}
    with pytest.raises(UserError, match="unknown fortune categories"):
        learnloop.run("ulmfit-classify", out=tmp_path, set={**tiny, "data.categories": "no-such-category,zippy"},
                      **FAST)
    with pytest.raises(UserError, match="at least two categories"):
        learnloop.run("ulmfit-classify", out=tmp_path, set={**tiny, "data.categories": "zippy"}, **FAST)
    with pytest.raises(UserError, match="scratch.lrs: 0.01 is listed twice"):
        learnloop.run("ulmfit-classify", out=tmp_path, set={**tiny, "scratch.lrs": "1e-2,0.01"}, **FAST)
    with pytest.raises(UserError, match="cells: gru is listed twice"):
        learnloop.run("next-number", out=tmp_path, cells=("gru", "gru"), **FAST)
    with pytest.raises(UserError, match="predict_cell: 'lstm' is not among cells"):
        learnloop.run("next-number", out=tmp_path, cells=("gru",), predict_cell="lstm", **FAST)
