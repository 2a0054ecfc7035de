"""Recipe `clip`: CLIP (Radford et al., 2021) on Fashion-MNIST images and generated captions.

Data: the Fashion-MNIST training split minus a stratified validation part; each training image gets a fresh
caption every epoch (learnloop.data.captions: label + brightness/width/pattern attributes, varied templates
and synonyms), validation captions are fixed. Model: learnloop.models.clip.CLIP (CNN image encoder, scratch
Transformer text encoder, learned temperature); loss: symmetric InfoNCE; task:
learnloop.tasks.contrastive.Contrastive, whose validation zero-shot accuracy picks the `best` checkpoint.

Evaluation (from the best weights, on the test split):
- zero-shot classification from prompts alone: one template (`eval.template`, "a photo of a {class}"),
  and with `eval.ensemble` the prompt ensemble over every template (mean of the unit text embeddings,
  renormalised); confusion matrix of the single-template prediction in plots/zero_shot_confusion.png;
- the linear probe on the frozen image features (before the projection): logistic regression, l2 chosen on
  the validation split, the upper bound zero-shot is compared with;
- retrieval on `eval.retrieval_images` test images with one caption each: recall@1 and @5 image->text
  (candidates: the distinct captions) and text->image (queries: every image's caption; an image whose
  caption is the same text counts as relevant, since no model can tell identical texts apart). With
  `eval.retrieval_captions=full` (the default) a caption is `eval.template` with every attribute and the
  canonical class name ("a photo of a dark, wide, plain coat"): a hit needs the class and every attribute
  right, and nothing in the caption is noise. With `sampled` the captions are drawn as in training (with the
  run's seed); templates and synonyms then make many captions of one image equally right, and recall is
  bounded far below 1.

Predict: an image file is classified by zero-shot against the class prompts (class probabilities
softmax(exp(s) cos)); "text:PROMPT" returns the `eval.predict_top` test images (indices into the
Fashion-MNIST test split, from the retrieval subset) nearest to the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learnloop.data.augment import standard as augmentation
from learnloop.data.captions import (
    ATTRIBUTES, CLASS_NAMES, PROMPT_TEMPLATE, TEMPLATES, CaptionLoader, CaptionSampler, CaptionTokenizer,
    attribute_thresholds, caption_info, caption_vocabulary, class_prompts,
)
from learnloop.data.loader import image_transform
from learnloop.data.splits import stratified_split
from learnloop.data.vision import ImageData, load_fashion_mnist
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import UserError
from learnloop.metrics.classification import confusion_matrix
from learnloop.models.clip import CLIP, INIT_LOGIT_SCALE, POOLINGS, ImageEncoder, TextEncoder
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.tasks.contrastive import (
    Contrastive, class_embeddings, linear_probe, recall_at_k, zero_shot_predictions,
)
from learnloop.utils.batched import eval_in_batches
from learnloop.utils.image_files import read_image_file, write_example_images
from learnloop.utils.plots import plot_confusion, plot_curves

TEXT_PREFIX = "text:"
AUGMENTS = ("none", "flip", "crop", "flip+crop")


@dataclass
class ClipDataConfig:
    dataset: str = param("fashion-mnist", "images (captions are built from Fashion-MNIST's classes)",
                         choices=("fashion-mnist",))
    path: str = param("", "folder with the dataset's files (default: the standard search order)")
    subset: int = param(0, "use only this many training images (0: all)", min=0)
    val_fraction: float = param(0.1, "fraction of the training split held out for validation", min=0.01, max=0.5)
    augment: str = param("flip", "batch augmentation of training images (caption attributes stay true)",
                         choices=AUGMENTS)
    attributes: tuple[str, ...] = param(tuple(ATTRIBUTES), "image attributes captions may mention",
                                        choices=tuple(ATTRIBUTES))
    attribute_prob: float = param(0.5, "probability that a caption mentions each attribute", min=0.0, max=1.0)
    synonyms: bool = param(True, "captions use class synonyms ('top', 'trainer'); off: canonical names only")


@dataclass
class ClipModelConfig:
    embed_dim: int = param(64, "joint embedding dimension E", min=2, max=4096)
    image_width: int = param(24, "CNN channels of the first block (the second and third have twice this)",
                             min=4, max=512)
    image_features: int = param(128, "image feature dimension F (what the linear probe sees)", min=2, max=8192)
    text_width: int = param(64, "text Transformer width W (the token states' size)", min=4, max=2048)
    text_layers: int = param(2, "text Transformer layers", min=1, max=24)
    text_heads: int = param(4, "attention heads (must divide text_width)", min=1, max=64)
    context: int = param(24, "maximum tokens of a caption or prompt, [BOS] and [EOS] included", min=4, max=512)
    pooling: str = param("eos", "text state projected to the joint space", choices=POOLINGS)
    dropout: float = param(0.0, "dropout in both encoders", min=0.0, max=0.9)
    logit_scale_init: float = param(INIT_LOGIT_SCALE, "initial s (exp(s) scales the cosines; log(1/0.07))",
                                    min=0.0, max=10.0)
    logit_scale_max: float = param(100.0, "exp(s) is clamped at this", min=1.0, max=1e4)


@dataclass
class ClipEvalConfig:
    template: str = param(PROMPT_TEMPLATE, "the single zero-shot prompt template", choices=TEMPLATES)
    ensemble: bool = param(True, "also report the prompt ensemble over every template (and predict with it)")
    test_subset: int = param(0, "evaluate zero-shot and the probe on this many test images (0: all 10k)", min=0)
    probe_train: int = param(0, "training images for the linear probe (0: the whole training split)", min=0)
    probe_l2: tuple[float, ...] = param((1e-5, 1e-4, 1e-3), "linear probe: l2 strengths tried on validation",
                                        min=0.0)
    probe_iters: int = param(300, "linear probe: L-BFGS iterations", min=1, max=100_000)
    retrieval_images: int = param(1000, "test images (one caption each) for retrieval recall@k", min=5)
    retrieval_captions: str = param("full", "retrieval captions: every attribute in `template` (full) or drawn "
                                    "as in training (sampled)", choices=("full", "sampled"))
    predict_top: int = param(5, "predict: nearest test images returned for a text prompt", min=1, max=100)
    batch_size: int = param(1024, "batch size of evaluation forward passes", min=1)


@dataclass
class ClipConfig:
    data: ClipDataConfig = section(ClipDataConfig, "data and captions")
    model: ClipModelConfig = section(ClipModelConfig, "model")
    train: TrainConfig = section(TrainConfig, "training", epochs=5, batch_size=128,
                                 optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98)),
                                 schedule=ScheduleConfig(kind="cosine", warmup=0.05))
    eval: ClipEvalConfig = section(ClipEvalConfig, "evaluation")


# --- data ----------------------------------------------------------------------------------------------------
@dataclass
class ClipImages:
    train: ImageData
    val: ImageData
    test: ImageData


def load_images(data: ClipDataConfig, seed: int) -> ClipImages:
    train_all = load_fashion_mnist("train", data.path or None)
    test = load_fashion_mnist("test", data.path or None)
    tr, va = stratified_split(train_all.labels, data.val_fraction, seed=seed)
    train, val = train_all.subset(tr), train_all.subset(va)
    if 0 < data.subset < len(train):
        keep, _ = stratified_split(train.labels, 1 - data.subset / len(train), seed=seed)
        train = train.subset(keep)
    return ClipImages(train, val, test)


def sampler_for(images: ImageData, info: dict) -> CaptionSampler:
    return CaptionSampler.from_info(info, images.images, images.labels)


def transform_for(info: dict, augment: str = "none"):
    return image_transform(info["mean"], info["std"], augmentation(augment))


def clip_bundle(cfg: ClipConfig, seed: int) -> Bundle:
    d = load_images(cfg.data, seed)
    batch = cfg.train.batch_size
    if len(d.train) < batch:
        raise UserError(f"train.batch_size={batch} exceeds the {len(d.train)} training images; use a smaller batch "
                        "or more data")
    thresholds = attribute_thresholds(d.train.images)
    pixels = d.train.images.float() / 255
    info = {"shape": list(d.train.shape), "classes": list(d.train.classes),
            "class_names": [names[0] for names in CLASS_NAMES], "mean": float(pixels.mean()),
            "std": float(pixels.std()), "vocab": caption_vocabulary(), "max_len": cfg.model.context,
            "captions": caption_info(thresholds, cfg.data.attributes, cfg.data.attribute_prob, cfg.data.synonyms)}
    train_sampler = sampler_for(d.train, info)
    need = train_sampler.max_words() + 2
    if need > cfg.model.context:
        raise UserError(f"model.context={cfg.model.context} is too short: captions need up to {need} tokens")
    tok = CaptionTokenizer.from_info(info)
    train = CaptionLoader(d.train.images, train_sampler, tok, batch, shuffle=True, drop_last=True, seed=seed,
                          transform=transform_for(info, cfg.data.augment))
    val = CaptionLoader(d.val.images, sampler_for(d.val, info), tok, batch, fixed=True, seed=seed,
                        transform=transform_for(info))
    return Bundle(train, val, None, info, extra={"images": d})


# --- model and task --------------------------------------------------------------------------------------
def build_clip(m: ClipModelConfig, info: dict) -> CLIP:
    if m.text_width % m.text_heads:
        raise UserError(f"model.text_heads={m.text_heads} must divide model.text_width={m.text_width}")
    c, h, w = info["shape"]
    if h != w or h % 4:
        raise UserError(f"the image encoder needs square images with a side divisible by 4, got {h}x{w}")
    tok = CaptionTokenizer.from_info(info)
    image = ImageEncoder(c, h, m.image_width, m.image_features, m.dropout)
    text = TextEncoder(len(tok), tok.max_len, m.text_width, m.text_layers, m.text_heads, dropout=m.dropout,
                       pooling=m.pooling, pad_id=tok.pad_id)
    return CLIP(image, text, m.embed_dim, m.logit_scale_init, math.log(m.logit_scale_max))


def prompt_ids(cfg: ClipConfig, info: dict, ensemble: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, pad_mask) of the class-major zero-shot prompts: every template, or `eval.template` alone."""
    templates = TEMPLATES if ensemble else (cfg.eval.template,)
    return CaptionTokenizer.from_info(info).encode(class_prompts(templates, len(info["classes"])))


def make_task(cfg: ClipConfig, info: dict) -> Contrastive:
    return Contrastive(build_clip(cfg.model, info), cfg.train.optim, prompt_ids(cfg, info, False),
                       len(info["classes"]))


# --- evaluation --------------------------------------------------------------------------------------------
@torch.no_grad()
def image_features(model: CLIP, images: torch.Tensor, info: dict, batch_size: int) -> torch.Tensor:
    """(N, F) image features of uint8 images, preprocessed as in training (no augmentation)."""
    tf = transform_for(info)
    chunks = eval_in_batches(model, images, lambda x: model.image_features(tf((x,))[0]), batch_size)
    return torch.cat(chunks) if chunks else torch.zeros(0, model.image_encoder.feature_dim)


def seeded_subset(images: ImageData, n: int, seed: int) -> tuple[ImageData, torch.Tensor]:
    """`n` images drawn with `seed` (all, in order, when n is 0 or at least their number), and their indices."""
    index = torch.arange(len(images))
    if 0 < n < len(images):
        index = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images.subset(index), index


@torch.no_grad()
def retrieval(model: CLIP, images: ImageData, info: dict, e: ClipEvalConfig, seed: int) -> dict:
    """recall@1/5 both ways on `images`, one caption each (module docstring)."""
    sampler = sampler_for(images, info)
    if e.retrieval_captions == "full":
        sampler = CaptionSampler(images.labels, sampler.attributes, use=sampler.use, attribute_prob=1.0,
                                 synonyms=False, templates=(e.template,))
    batch_size = e.batch_size
    texts = sampler.sample(torch.arange(len(images)), torch.Generator().manual_seed(seed))
    unique = sorted(set(texts))
    position = {t: i for i, t in enumerate(unique)}
    caption = torch.tensor([position[t] for t in texts])
    tok = CaptionTokenizer.from_info(info)
    img = model.project_image(image_features(model, images.images, info, batch_size))
    txt = torch.cat([model.encode_text(*tok.encode(unique[i:i + batch_size]))[0]
                     for i in range(0, len(unique), batch_size)])
    relevant = caption[:, None] == torch.arange(len(unique))[None, :]                 # (images, unique texts)
    i2t = recall_at_k(img @ txt.T, relevant)
    t2i = recall_at_k(txt[caption] @ img.T, caption[:, None] == caption[None, :])     # (queries, images)
    return {"retrieval_images": len(images), "retrieval_distinct_captions": len(unique),
            "retrieval_i2t_recall@1": i2t[1], "retrieval_i2t_recall@5": i2t[5],
            "retrieval_t2i_recall@1": t2i[1], "retrieval_t2i_recall@5": t2i[5]}


@torch.no_grad()
def evaluate_clip(cfg: ClipConfig, run, data: Bundle) -> dict:
    model, info, e = run.model, run.info, cfg.eval
    images: ClipImages = data.extra["images"]
    n = len(info["classes"])
    test, _ = seeded_subset(images.test, e.test_subset, run.seed)
    test_features = image_features(model, test.images, info, e.batch_size)
    test_emb = model.project_image(test_features)
    metrics = {}
    for name, ensemble in (("zero_shot", False), ("zero_shot_ensemble", True))[: 2 if e.ensemble else 1]:
        classes = class_embeddings(model, *prompt_ids(cfg, info, ensemble), n)
        pred = zero_shot_predictions(test_emb, classes)
        metrics[f"test_{name}_accuracy"] = float((pred == test.labels).float().mean())
        if not ensemble:
            cm = confusion_matrix(pred, test.labels, n)
            plot_confusion(cm, info["classes"], run.plots / "zero_shot_confusion.png",
                           title=f"zero-shot '{e.template}' (rows: true, cols: predicted)")
    probe_train, _ = seeded_subset(images.train, e.probe_train, run.seed)
    probe = linear_probe((image_features(model, probe_train.images, info, e.batch_size), probe_train.labels),
                         (image_features(model, images.val.images, info, e.batch_size), images.val.labels),
                         (test_features, test.labels), n, e.probe_l2, e.probe_iters)
    metrics.update({"test_linear_probe_accuracy": probe["test_accuracy"],
                    "val_linear_probe_accuracy": probe["val_accuracy"], "linear_probe_l2": probe["l2"],
                    "test_images": len(test), "logit_scale": float(model.scale())})
    subset, _ = seeded_subset(images.test, e.retrieval_images, run.seed)
    metrics.update(retrieval(model, subset, info, e, run.seed))
    history = [r for r in run.history("") if "epoch" in r]
    if history:
        plot_curves(history, run.plots / "curves.png", title="clip")
        metrics["epochs_trained"] = max(r["epoch"] for r in history)
        scored = [r for r in history if "val_zero_shot_accuracy" in r]
        if scored:
            metrics["best_val_zero_shot_accuracy"] = max(r["val_zero_shot_accuracy"] for r in scored)
    return metrics


# --- predictor ---------------------------------------------------------------------------------------------
class ClipPredictor(Predictor):
    inputs = (f"image files (zero-shot class probabilities from the class prompts), or '{TEXT_PREFIX}PROMPT' "
              "(the nearest Fashion-MNIST test images to the prompt, e.g. 'text:a dark sneaker')")

    def __init__(self, run):
        self.run, self.cfg, self.info = run, run.cfg, run.info
        self.model: CLIP = run.model
        self.model.eval()
        self.tok = CaptionTokenizer.from_info(self.info)
        c, h, w = self.info["shape"]
        self.size, self.channels = (h, w), c
        self.transform = transform_for(self.info)
        with torch.no_grad():
            ids = prompt_ids(self.cfg, self.info, self.cfg.eval.ensemble)
            self.classes = class_embeddings(self.model, *ids, len(self.info["classes"]))
        self._pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def examples(self, folder) -> list[str]:
        paths = write_example_images(folder, self.info["shape"])
        return [*paths, f"{TEXT_PREFIX}a photo of a sneaker", f"{TEXT_PREFIX}a dark, wide coat"]

    def _images(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unit embeddings, test indices, labels) of the retrieval pool, computed once."""
        if self._pool is None:
            test = load_fashion_mnist("test", self.cfg.data.path or None)
            pool, index = seeded_subset(test, self.cfg.eval.retrieval_images, self.run.seed)
            feats = image_features(self.model, pool.images, self.info, self.cfg.eval.batch_size)
            self._pool = (self.model.project_image(feats), index, pool.labels)
        return self._pool

    @torch.no_grad()
    def _text(self, raw: str) -> dict:
        prompt = raw[len(TEXT_PREFIX):]
        ids, pad = self.tok.encode([prompt])                   # unknown words, empty: one UserError line
        emb, _ = self.model.encode_text(ids, pad)
        pool, index, labels = self._images()
        scores = (pool @ emb[0]).clamp(-1, 1)
        top = torch.topk(scores, min(self.cfg.eval.predict_top, len(scores)))
        classes = self.info["classes"]
        return {"input": raw, "prompt": prompt,
                "nearest": [{"test_index": int(index[i]), "class": classes[int(labels[i])],
                             "similarity": round(float(s), 4)} for s, i in zip(top.values, top.indices)]}

    @torch.no_grad()
    def _image(self, raw: str) -> dict:
        (x,) = self.transform((read_image_file(raw, self.size, self.channels)[None],))
        emb = self.model.encode_image(x)
        probs = torch.softmax(self.model.scale() * emb @ self.classes.T, dim=1)[0]
        top = torch.topk(probs, min(3, len(probs)))
        classes = self.info["classes"]
        return {"input": raw, "class": classes[int(top.indices[0])], "probability": round(float(top.values[0]), 4),
                "top": [{"class": classes[int(i)], "probability": round(float(p), 4)}
                        for p, i in zip(top.values, top.indices)]}

    def __call__(self, raw: list[str]) -> list[dict]:
        prompts = [r[len(TEXT_PREFIX):] for r in raw if r.startswith(TEXT_PREFIX)]
        if prompts:
            self.tok.tokenize(prompts)              # every unknown word of every prompt in one line, up front
        return [self._text(r) if r.startswith(TEXT_PREFIX) else self._image(r) for r in raw]


SMOKE = {"train.epochs": 1, "train.batch_size": 32, "data.subset": 256, "data.val_fraction": 0.02,
         "eval.test_subset": 300, "eval.probe_train": 256, "eval.probe_l2": "1e-3", "eval.probe_iters": 20,
         "eval.retrieval_images": 64, "model.image_width": 8, "model.image_features": 32, "model.text_width": 32,
         "model.text_layers": 1}


@recipe("clip", "CLIP: CNN image and Transformer text encoders, symmetric InfoNCE on captioned Fashion-MNIST",
        ClipConfig, target="test_zero_shot_accuracy >= 0.75 (beside test_linear_probe_accuracy)",
        benchmark="OMP_NUM_THREADS=1 learnloop run clip", main_metric="test_zero_shot_accuracy", smoke=SMOKE)
class ClipParts(Parts):
    def data(self, cfg: ClipConfig, seed: int) -> Bundle:
        return clip_bundle(cfg, seed)

    def build(self, cfg: ClipConfig, info: dict) -> Contrastive:
        return make_task(cfg, info)

    def stages(self, cfg: ClipConfig, info: dict, upstream: dict) -> list[Stage]:
        return [Stage("", lambda trained: self.build(cfg, info), cfg.train, monitor="val_zero_shot_accuracy",
                      mode="max")]

    def evaluate(self, cfg: ClipConfig, run, data: Bundle) -> dict:
        return evaluate_clip(cfg, run, data)

    def predictor(self, run) -> Predictor:
        return ClipPredictor(run)
