"""Captions for Fashion-MNIST images, a word-level caption tokenizer, and a loader of (image, caption) batches.

A caption names the item's class (with synonyms where English has them: "t-shirt"/"top"/"tee",
"sneaker"/"trainer", ...) and, each with probability `attribute_prob`, attributes computed from the image
itself, in one of several templates ("a photo of a sneaker", "a dark ankle boot", "a picture of a light,
narrow dress"). The attributes, on the item's pixels F = {p : x_p > FOREGROUND} of a uint8 image x:

    brightness  mean of x over F                 "dark" / "light" / "bright": below the first tercile, between
                                                 the terciles, above the second (terciles of the training split)
    width       bounding-box width / height of F "narrow" / "wide": below / above the training median
    pattern     standard deviation of x over F   "plain" / "textured": below / above the training median

The thresholds are computed on the training split once (`attribute_thresholds`) and travel with the run
(`caption_info`), so a later run that consumes this one (text-to-image) captions its images identically.
A caption is drawn per image per epoch from the epoch's generator (`EpochLoader.generator`): a function of
(seed, epoch) only, so resumed runs see the same captions. Validation and test loaders draw once (epoch 0)
and keep those captions.

Tokenizer: lower-case, the punctuation , . ; : ! ? becomes a space, words are split at whitespace (so
"t-shirt" is one word). Vocabulary = [PAD] [BOS] [EOS] + every word of the templates, class names and
attributes, sorted. `encode(texts)` returns ids (B, T) = [BOS] w_1 .. w_n [EOS] [PAD].. and `pad_mask`
(B, T), True at [PAD] (the `key_padding_mask` convention of learnloop.nn.attention / torch), T the longest
caption of the batch (or `length`). Unknown words are one `UserError` naming every one of them; an empty
prompt is a `UserError` too.

For a consumer of a trained CLIP run (`load_run`): `CaptionTokenizer.from_info(run.info)` rebuilds the
tokenizer, `CaptionSampler.from_info(run.info, images, labels)` captions new images the same way, and
`encode_empty(n)` gives the null caption [BOS] [EOS] (classifier-free guidance's unconditional input).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from learnloop.data.loader import EpochLoader
from learnloop.errors import UserError

PAD, BOS, EOS = "[PAD]", "[BOS]", "[EOS]"
SPECIALS = (PAD, BOS, EOS)
FOREGROUND = 32                     # uint8 level above which a pixel belongs to the item (background is ~0)

# class id -> names; the first is the canonical name used by zero-shot prompts
CLASS_NAMES = (
    ("t-shirt", "top", "tee"),
    ("pair of trousers", "pair of pants"),
    ("pullover", "sweater", "jumper"),
    ("dress",),
    ("coat", "jacket"),
    ("sandal",),
    ("shirt", "blouse"),
    ("sneaker", "trainer"),
    ("bag", "handbag"),
    ("ankle boot", "boot"),
)
ATTRIBUTES = {
    "brightness": ("dark", "light", "bright"),
    "width": ("narrow", "wide"),
    "pattern": ("plain", "textured"),
}
# {a} is the article of what follows ("a"/"an"), {desc} = [attributes] class name
TEMPLATES = (
    "a photo of {a} {desc}",
    "a picture of {a} {desc}",
    "an image of {a} {desc}",
    "a photo of the {desc}",
    "a small photo of {a} {desc}",
    "a black and white photo of {a} {desc}",
    "a low resolution photo of {a} {desc}",
    "a product photo of {a} {desc}",
    "{a} {desc}",
    "this is {a} {desc}",
)
PROMPT_TEMPLATE = TEMPLATES[0]      # the single zero-shot template; the ensemble uses all of TEMPLATES
_PUNCTUATION = re.compile(r"[,.;:!?]")
MAX_SHOWN_KNOWN = 12


# --- attributes --------------------------------------------------------------------------------------------
def image_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, C, H, W) uint8 -> {"brightness", "width", "pattern"}: (N,) float statistics of the item's pixels
    (module docstring). An image without item pixels gets brightness 0, width 0, pattern 0."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float().mean(1)                                   # (N, H, W) grey
    fg = x > FOREGROUND
    n = fg.sum((1, 2)).clamp_min(1).float()
    mean = (x * fg).sum((1, 2)) / n
    var = ((x - mean[:, None, None]) ** 2 * fg).sum((1, 2)) / n
    cols, rows = fg.any(1), fg.any(2)                            # (N, W), (N, H)

    def extent(mask: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(mask.shape[1], dtype=torch.float32)
        hi = torch.where(mask, idx, torch.full_like(idx, -1.0)).amax(1)
        lo = torch.where(mask, idx, torch.full_like(idx, float(mask.shape[1]))).amin(1)
        return (hi - lo + 1).clamp_min(0)

    width, height = extent(cols), extent(rows)
    return {"brightness": mean, "width": width / height.clamp_min(1), "pattern": var.sqrt()}


def attribute_thresholds(images: torch.Tensor) -> dict[str, list[float]]:
    """Cut points of each attribute on (training) images: brightness terciles, width and pattern medians."""
    stats = image_statistics(images)
    if len(images) == 0:
        raise UserError("captions: no images to compute attribute thresholds from")
    out = {}
    for name, words in ATTRIBUTES.items():
        qs = torch.arange(1, len(words), dtype=torch.float64) / len(words)
        out[name] = [float(v) for v in torch.quantile(stats[name].double(), qs)]
    return out


def attribute_values(images: torch.Tensor, thresholds: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """{attribute: (N,) long index into ATTRIBUTES[attribute]}: how many cut points each statistic exceeds."""
    stats = image_statistics(images)
    out = {}
    for name, words in ATTRIBUTES.items():
        cuts = thresholds.get(name)
        if not isinstance(cuts, list) or len(cuts) != len(words) - 1 or \
                not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in cuts):
            raise UserError(f"captions: attribute '{name}' needs {len(words) - 1} thresholds, got {cuts!r}")
        out[name] = torch.bucketize(stats[name].double(), torch.tensor(cuts, dtype=torch.float64), right=True)
    return out


# --- captions ----------------------------------------------------------------------------------------------
def article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def fill(template: str, desc: str) -> str:
    """A template with its {a} and {desc} slots filled ("a photo of {a} {desc}", "ankle boot" ->
    "a photo of an ankle boot")."""
    return template.replace("{a}", article(desc)).replace("{desc}", desc)


def class_prompts(templates: Sequence[str] = (PROMPT_TEMPLATE,), num_classes: int = len(CLASS_NAMES)) -> list[str]:
    """Zero-shot prompts, class-major: prompt c * K + k is template k with class c's canonical name."""
    return [fill(t, CLASS_NAMES[c][0]) for c in range(num_classes) for t in templates]


class CaptionSampler:
    """Draws one caption per image: a template, a class name (a synonym, with `synonyms`), and each attribute
    of `attributes` with probability `attribute_prob`, in the order of ATTRIBUTES ("a dark, wide coat")."""

    def __init__(self, labels: torch.Tensor, attributes: dict[str, torch.Tensor], *, use: Sequence[str] =
                 tuple(ATTRIBUTES), attribute_prob: float = 0.5, synonyms: bool = True,
                 templates: Sequence[str] = TEMPLATES):
        unknown = [a for a in use if a not in ATTRIBUTES]
        if unknown:
            raise UserError(f"captions: unknown attributes {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(ATTRIBUTES)}")
        if len(set(use)) != len(use):
            raise UserError(f"captions: attributes {', '.join(map(repr, use))} repeat one; name each once")
        if not 0.0 <= attribute_prob <= 1.0:
            raise UserError(f"captions: attribute_prob must lie in [0, 1], got {attribute_prob}")
        if not templates:
            raise UserError("captions: no templates")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(CLASS_NAMES)):
            raise UserError(f"captions: labels must lie in 0..{len(CLASS_NAMES) - 1}")
        self.labels = labels.long()
        self.attributes = {a: attributes[a].long() for a in use}
        self.use, self.attribute_prob, self.synonyms = tuple(use), float(attribute_prob), synonyms
        self.templates = tuple(templates)

    @classmethod
    def from_info(cls, info: dict, images: torch.Tensor, labels: torch.Tensor) -> CaptionSampler:
        """The sampler a run's `caption_info` describes, over new images."""
        spec = info.get("captions") if isinstance(info, dict) else None
        if not isinstance(spec, dict):
            raise UserError("data.json has no 'captions' object; was it written by the clip recipe?")
        kinds = {"thresholds": dict, "use": list, "attribute_prob": (int, float), "synonyms": bool, "templates": list}
        bad = [k for k, kind in kinds.items() if not isinstance(spec.get(k), kind) or isinstance(spec.get(k), bool)
               and kind is not bool]
        if bad or not all(isinstance(t, str) for t in spec["templates"] + spec["use"]):
            raise UserError(f"data.json: 'captions' has malformed {', '.join(bad) or 'templates/use'}")
        return cls(labels, attribute_values(images, spec["thresholds"]), use=spec["use"],
                   attribute_prob=float(spec["attribute_prob"]), synonyms=spec["synonyms"],
                   templates=spec["templates"])

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, i: int, attrs: Sequence[str], name: int) -> str:
        words = [ATTRIBUTES[a][int(self.attributes[a][i])] for a in attrs]
        names = CLASS_NAMES[int(self.labels[i])]
        item = names[name % len(names)]
        return f"{', '.join(words)} {item}" if words else item

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> list[str]:
        """One caption per image in `index`, every random choice drawn from `generator` for the whole batch."""
        n = len(index)
        template = torch.randint(len(self.templates), (n,), generator=generator)
        name = torch.randint(1 << 20, (n,), generator=generator) if self.synonyms else torch.zeros(n, dtype=torch.long)
        keep = torch.rand(n, max(len(self.use), 1), generator=generator) < self.attribute_prob
        out = []
        for j, i in enumerate(index.tolist()):
            attrs = [a for k, a in enumerate(self.use) if keep[j, k]]
            out.append(fill(self.templates[int(template[j])], self.describe(i, attrs, int(name[j]))))
        return out

    def max_words(self) -> int:
        """Words in the longest caption this sampler can draw."""
        longest_name = max(len(n.split()) for names in CLASS_NAMES for n in names)
        longest_template = max(len(t.replace("{desc}", "").split()) for t in self.templates)
        return longest_template + len(self.use) + longest_name


def caption_info(thresholds: dict[str, list[float]], use: Sequence[str], attribute_prob: float, synonyms: bool,
                 templates: Sequence[str] = TEMPLATES) -> dict:
    """The JSON that lets a later run caption images like this one (`CaptionSampler.from_info`)."""
    return {"thresholds": thresholds, "use": list(use), "attribute_prob": attribute_prob, "synonyms": synonyms,
            "templates": list(templates)}


# --- tokenizer ---------------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Lower-cased words of a text, the punctuation , . ; : ! ? removed."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def caption_vocabulary(templates: Sequence[str] = TEMPLATES) -> list[str]:
    """[PAD], [BOS], [EOS], then every word captions and prompts can contain, sorted."""
    vocab = {"a", "an"}
    for t in templates:
        vocab.update(words(t.replace("{a}", " ").replace("{desc}", " ")))
    vocab.update(w for names in CLASS_NAMES for n in names for w in words(n))
    vocab.update(w for values in ATTRIBUTES.values() for w in values)
    return [*SPECIALS, *sorted(vocab)]


def _shown(word: str, limit: int = 40) -> str:
    return repr(word if len(word) <= limit else word[:limit] + "...")


class CaptionTokenizer:
    """Word-level tokenizer over a fixed caption vocabulary (module docstring). `max_len` bounds the tokens
    of one encoded text, [BOS] and [EOS] included (the text encoder's position table)."""

    def __init__(self, vocab: Sequence[str], max_len: int):
        vocab = list(vocab)
        if vocab[:3] != list(SPECIALS) or not all(isinstance(w, str) and w for w in vocab) \
                or len(set(vocab)) != len(vocab):
            raise UserError(f"caption vocabulary must start with {', '.join(SPECIALS)} and hold distinct "
                            "non-empty words")
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 3:
            raise UserError(f"caption max_len must be an integer >= 3, got {max_len!r}")
        self.vocab, self.max_len = vocab, max_len
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.bos_id, self.eos_id = (self.index[s] for s in SPECIALS)

    @classmethod
    def from_info(cls, info: dict) -> CaptionTokenizer:
        """The tokenizer of a run's data.json (`info["vocab"]`, `info["max_len"]`)."""
        vocab, max_len = info.get("vocab"), info.get("max_len")
        if not isinstance(vocab, list):
            raise UserError("data.json: 'vocab' must be a list of words")
        return cls(vocab, max_len)

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word ids of each text (no specials); every unknown word of every text in one UserError."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise UserError("no prompt given")
        out, unknown = [], []
        for text in texts:
            if not isinstance(text, str):
                raise UserError(f"a prompt must be text, got {type(text).__name__}")
            ws = words(text)
            if not ws:
                raise UserError(f"empty prompt {_shown(text)}: give words such as 'a photo of a sneaker'")
            unknown.extend(w for w in ws if w not in self.index and w not in unknown)
            out.append([self.index.get(w, -1) for w in ws])
        if unknown:
            known = [w for w in self.vocab if w not in SPECIALS]
            shown = ", ".join(known[:MAX_SHOWN_KNOWN]) + (f", ... ({len(known)} words)" if len(known) >
                                                           MAX_SHOWN_KNOWN else "")
            noun = "word" if len(unknown) == 1 else "words"
            raise UserError(f"unknown {noun} {', '.join(map(_shown, unknown))}; known: {shown}")
        for text, ids in zip(texts, out):
            if len(ids) + 2 > self.max_len:
                raise UserError(f"prompt {_shown(text)} has {len(ids)} words; at most {self.max_len - 2} fit")
        return out

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, T) long, pad_mask (B, T) bool, True at [PAD]) for [BOS] words [EOS], padded to the
        longest text (or to `length`, at most `max_len`)."""
        seqs = [[self.bos_id, *ids, self.eos_id] for ids in self.tokenize(texts)]
        longest = max(len(s) for s in seqs)
        T = longest if length is None else length
        if T < longest or T > self.max_len:
            raise ValueError(f"length {T} must lie in {longest}..{self.max_len}")
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
        return ids, ids == self.pad_id

    def encode_empty(self, n: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` empty captions [BOS] [EOS] (padded to `length`): the unconditional input of classifier-free
        guidance (a user's empty prompt is refused by `encode`; this is the deliberate null caption)."""
        T = 2 if length is None else length
        if not 2 <= T <= self.max_len:
            raise ValueError(f"length {T} must lie in 2..{self.max_len}")
        ids = torch.full((n, T), self.pad_id, dtype=torch.long)
        ids[:, 0], ids[:, 1] = self.bos_id, self.eos_id
        return ids, ids == self.pad_id

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Texts of (B, T) ids, specials dropped."""
        return [" ".join(self.vocab[i] for i in row.tolist() if self.vocab[i] not in SPECIALS) for row in ids]


# --- loader ------------------------------------------------------------------------------------------------
class CaptionLoader(EpochLoader):
    """Batches (images, ids, pad_mask, labels) of in-memory uint8 images with one caption each, drawn by
    `sampler` from the epoch's generator (with `fixed`, always epoch 0's: the same captions every pass), padded
to the batch's longest caption.
    `transform` runs on the (uint8 images,) batch (e.g. learnloop.data.loader.image_transform)."""

    salt = 7919

    def __init__(self, images: torch.Tensor, sampler: CaptionSampler, tokenizer: CaptionTokenizer,
                 batch_size: int = 128, *, shuffle: bool = False, fixed: bool = False, drop_last: bool = False,
                 seed: int = 0, transform=None, rank: int = 0, world_size: int = 1):
        if len(images) != len(sampler):
            raise ValueError(f"{len(images)} images but {len(sampler)} labels")
        super().__init__(batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                         world_size=world_size)
        self.images, self.sampler, self.tokenizer, self.n = images, sampler, tokenizer, len(images)
        self.fixed, self.transform = fixed, transform

    def captions(self) -> list[str]:
        """This epoch's caption of every image, in image order (epoch 0's with `fixed`)."""
        base = self.seed * 1_000_003 + (0 if self.fixed else self.epoch) + self.salt
        g = torch.Generator().manual_seed(2 * base + 1)        # a stream apart from the order's (seeded by base)
        return self.sampler.sample(torch.arange(self.n), g)

    def __iter__(self):
        texts = self.captions()
        for idx in self.split(self.indices()):
            ids, pad = self.tokenizer.encode([texts[i] for i in idx.tolist()])
            (x,) = self.transform((self.images[idx],)) if self.transform is not None else (self.images[idx],)
            yield x, ids, pad, self.sampler.labels[idx]
