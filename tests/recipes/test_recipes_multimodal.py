"""Recipe `clip`: it learns (zero-shot above chance after a few steps on a subset), its predictor and bad
input, and the evaluation functions it uses (learnloop.tasks.contrastive) against references."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import learnloop
from learnloop.cli import main
from learnloop.data.captions import CLASS_NAMES
from learnloop.errors import UserError
from learnloop.recipes import load_run, predict_run
from learnloop.tasks.contrastive import (
    Contrastive, class_embeddings, fit_logistic_regression, linear_probe, recall_at_k, zero_shot_predictions,
)

FAST = dict(progress=False, quiet=True)
SMALL = {"data.subset": 2000, "data.val_fraction": 0.02, "train.epochs": 2, "train.batch_size": 32,
         "train.optim.lr": 2e-3, "eval.test_subset": 1000, "eval.probe_train": 2000, "eval.probe_l2": "1e-3",
         "eval.probe_iters": 100, "eval.retrieval_images": 300}


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    import os

    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return learnloop.run("clip", out=tmp_path_factory.mktemp("clip"), set=SMALL, **FAST)


def test_clip_learns(clip_run):
    m = clip_run.metrics
    assert m["test_zero_shot_accuracy"] > 0.4                      # chance: 0.1; seeds 0-2 give 0.58-0.62
    assert m["test_zero_shot_ensemble_accuracy"] > 0.4
    assert m["test_linear_probe_accuracy"] > 0.7
    assert m["retrieval_i2t_recall@5"] > 3 * 5 / m["retrieval_distinct_captions"]   # 3x chance
    assert m["retrieval_t2i_recall@5"] >= m["retrieval_t2i_recall@1"]
    assert (clip_run.folder / "plots" / "zero_shot_confusion.png").is_file()
    info = json.loads((clip_run.folder / "data.json").read_text())
    assert info["vocab"][:3] == ["[PAD]", "[BOS]", "[EOS]"] and "sneaker" in info["vocab"]


def test_predict_images_and_prompts(clip_run, tmp_path):
    pic = tmp_path / "boot.png"
    Image.fromarray(torch.randint(0, 255, (40, 30), dtype=torch.uint8).numpy()).save(pic)
    out = predict_run(clip_run.folder, [str(pic), "text:a photo of a sneaker", "text:An Ankle Boot."])
    assert out[0]["input"] == str(pic) and out[0]["class"] == out[0]["top"][0]["class"]
    probs = [t["probability"] for t in out[0]["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3
    for row in out[1:]:
        sims = [n["similarity"] for n in row["nearest"]]
        assert len(sims) == 5 and sims == sorted(sims, reverse=True)
        assert all(0 <= n["test_index"] < 10_000 for n in row["nearest"])
    # the nearest images to "a photo of a <class>" are of that class far more often than chance (1 in 10)
    classes = json.loads((clip_run.folder / "data.json").read_text())["classes"]
    rows = predict_run(clip_run.folder, [f"text:a photo of a {names[0]}" for names in CLASS_NAMES])
    hits = sum(n["class"] == c for row, c in zip(rows, classes) for n in row["nearest"])
    assert hits >= 20, hits                                         # of 50; chance: 5


def test_predict_bad_prompts_are_one_line(clip_run, capsys):
    loaded = load_run(clip_run.folder)
    predictor = loaded.recipe.parts.predictor(loaded)
    with pytest.raises(UserError, match=r"^unknown words 'zebra', 'purple'; known: "):
        predictor(["text:a zebra", "text:a purple sneaker", "text:a zebra"])          # all prompts at once
    with pytest.raises(UserError, match="empty prompt"):
        predictor(["text:"])
    for args, message in (["text:a zebra"], "unknown word 'zebra'"), (["text:  "], "empty prompt"):
        assert main(["predict", str(clip_run.folder), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)


def test_bad_model_settings(tmp_path, needs_fashion):
    with pytest.raises(UserError, match="text_heads"):
        learnloop.run("clip", out=tmp_path, set={**SMALL, "model.text_heads": 3}, **FAST)
    with pytest.raises(UserError, match="context"):
        learnloop.run("clip", out=tmp_path, set={**SMALL, "model.context": 8}, **FAST)


# --- evaluation functions --------------------------------------------------------------------------------------
def brute_recall(sim, relevant, k):
    """Rank candidates by score, ties broken in the query's favour (relevant first), then look at the top k."""
    hits = 0
    for s, r in zip(sim.tolist(), relevant.tolist()):
        order = sorted(range(len(s)), key=lambda j: (-s[j], not r[j]))
        hits += any(r[j] for j in order[:k])
    return hits / len(sim)


def test_recall_at_k_against_ranking():
    g = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 6, (40, 30), generator=g).float()          # many ties
    relevant = torch.rand(40, 30, generator=g) < 0.08
    relevant[torch.arange(40), torch.randint(0, 30, (40,), generator=g)] = True
    got = recall_at_k(sim, relevant, (1, 3, 5, 30))
    for k in (1, 3, 5, 30):
        assert got[k] == pytest.approx(brute_recall(sim, relevant, k))
    assert got[30] == 1.0
    assert recall_at_k(torch.eye(4), torch.eye(4, dtype=torch.bool), (1,))[1] == 1.0
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(torch.eye(3), torch.zeros(3, 3, dtype=torch.bool))


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(6, 4, generator=g, dtype=torch.float64) + torch.randn(300, 4, generator=g,
                                                                               dtype=torch.float64)).argmax(1)
    l2 = 0.01
    W, b = fit_logistic_regression(x, y, 4, l2, max_iter=500, tol=1e-10)
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    # softmax parameters are defined up to a constant per feature: compare centred weights and probabilities
    torch.testing.assert_close(W - W.mean(0), torch.from_numpy(ref.coef_ - ref.coef_.mean(0)), atol=1e-5, rtol=1e-4)
    probs = torch.softmax(x @ W.T + b, 1)
    torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(x.numpy())), atol=1e-6, rtol=1e-5)


def test_linear_probe_picks_l2_on_validation():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(3, 8, generator=g) * 2
    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        return centres[y] + torch.randn(n, 8, generator=g), y
    train, val, test = split(200), split(100), split(100)
    out = linear_probe(train, val, test, 3, (1e-4, 1e3))             # 1e3 crushes the weights
    assert out["l2"] == 1e-4 and out["test_accuracy"] > 0.9 and out["predictions"].shape == (100,)


class _Identity(torch.nn.Module):
    """A stand-in CLIP: images are already embeddings, texts embed as one-hots of their first word."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def scale(self):
        return self.logit_scale.exp()

    def encode_image(self, x):
        return F.normalize(x, dim=1)

    def encode_text(self, ids, pad):
        return F.normalize(F.one_hot(ids[:, 0], 4).float(), dim=1), None

    def forward(self, x, ids, pad):
        return self.scale() * self.encode_image(x) @ self.encode_text(ids, pad)[0].T


def test_task_steps_and_zero_shot():
    model = _Identity()
    prompts = (torch.arange(4).repeat_interleave(2)[:, None], torch.zeros(8, 1, dtype=torch.bool))   # K = 2
    task = Contrastive(model, prompts=prompts, num_classes=4)
    x = torch.eye(4)[[0, 1, 2, 2]] + 0.1
    ids = torch.tensor([[0], [1], [2], [3]])
    labels = torch.tensor([0, 1, 2, 3])

    class L:
        device = torch.device("cpu")

    out = task.training_step((x, ids, ids == -1, labels), L())
    logits = model(x, ids, ids == -1)
    from learnloop.losses.contrastive import info_nce
    assert out["loss"].item() == pytest.approx(info_nce(logits).item())
    assert out["i2t_accuracy"].item() == 0.75 and out["t2i_accuracy"].item() == 0.75   # image 3 looks like 2
    task.on_validation_start(L(), "val")
    classes = class_embeddings(model, *prompts, 4)
    torch.testing.assert_close(classes, torch.eye(4))
    val = task.validation_step((x, ids, ids == -1, labels), L())
    assert val["zero_shot_accuracy"].item() == 0.75                 # the last image looks like class 2
    assert zero_shot_predictions(model.encode_image(x), classes).tolist() == [0, 1, 2, 2]


def test_class_names_are_distinct_words():
    names = [n for names in CLASS_NAMES for n in names]
    assert len(names) == len(set(names)) and len(CLASS_NAMES) == 10
