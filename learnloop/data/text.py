"""Text utilities: corpora that ship with system/pip packages, vocabularies, padding and length buckets.

Corpora (offline):
- fortunes: Debian's `fortunes` package, /usr/share/games/fortunes/<category> with entries separated by
  lines holding a single '%'. Each file is a category (computers, science, ...).
- language excerpts: `music21`'s languageExcerpts/trainingData/<lang>.txt (cn de en fr it la nl).
Any user folder of UTF-8 `.txt` files works in place of either (one file per class / category).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.data.loader import EpochLoader
from learnloop.data.registry import user_path
from learnloop.errors import CorruptFileError, DataMissingError, UserError
from learnloop.utils.io import open_regular

FORTUNES_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes")
LANGUAGE_NAMES = {"cn": "Chinese", "de": "German", "en": "English", "fr": "French", "it": "Italian",
                  "la": "Latin", "nl": "Dutch"}


def _read_utf8(path: Path) -> str:
    """A regular file's text (a FIFO or a folder is refused without blocking); non-UTF-8 is corrupt."""
    try:
        with open_regular(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file; empty or non-UTF-8 files raise a one-line error naming the file."""
    path = Path(path)
    text = _read_utf8(path)
    if not text.strip():
        raise CorruptFileError(f"{path}: file is empty")
    return text


# --- corpora ---------------------------------------------------------------------------------------------
def _fortune_dir(path=None) -> Path:
    if path:
        return user_path(path, "folder")
    env = os.environ.get("LEARNLOOP_DATA")
    candidates = ([Path(env) / "fortunes"] if env else []) + [Path(d) for d in FORTUNES_DIRS]
    for c in candidates:
        if c.is_dir() and (any(c.glob("*.dat")) or any(c.glob("*.txt"))):
            return c
    raise DataMissingError("fortunes corpus not found: install it with `apt-get install fortunes` "
                           "(or put category text files in $LEARNLOOP_DATA/fortunes/)")


def load_fortunes(path=None, categories: Sequence[str] | None = None, max_chars: int = 2000) -> dict[str, list[str]]:
    """{category: [fortune, ...]} from the fortunes files (entries split on '%' lines).

    Files with a `.dat` index twin (the strfile format) or ending in `.txt` are categories; offensive
    (`off/`) sets are never read. Entries longer than `max_chars` are skipped (ASCII-art pages). A
    category that is not a regular UTF-8 file is a one-line error naming it."""
    folder = _fortune_dir(path)
    files = {p.stem if p.suffix == ".txt" else p.name: p for p in sorted(folder.iterdir())
             if p.suffix == ".txt" or (p.suffix == "" and (folder / f"{p.name}.dat").exists())}
    if categories:
        missing = [c for c in categories if c not in files]
        if missing:
            raise UserError(f"unknown fortune categories {missing}; available: {', '.join(sorted(files))}")
        files = {c: files[c] for c in categories}
    corpus = {}
    for name, p in files.items():
        raw = _read_utf8(p)
        entries = [e.strip("\n") for e in re.split(r"^%\s*$", raw, flags=re.MULTILINE)]
        entries = [e for e in entries if e.strip() and len(e) <= max_chars]
        if entries:
            corpus[name] = entries
    if not corpus:
        raise DataMissingError(f"{folder}: no fortune files found")
    return corpus


def language_excerpts_dir(path=None) -> Path:
    if path:
        return user_path(path, "folder")
    env = os.environ.get("LEARNLOOP_DATA")
    if env and (Path(env) / "language-excerpts").is_dir():
        return Path(env) / "language-excerpts"
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise DataMissingError("language excerpts not found: pip install music21 (it ships "
                               "languageExcerpts/trainingData/*.txt), or put <lang>.txt files in "
                               "$LEARNLOOP_DATA/language-excerpts/")
    return Path(spec.origin).parent / "languageExcerpts" / "trainingData"


def load_language_excerpts(path=None, min_chars: int = 20) -> dict[str, list[str]]:
    """{language code: [line, ...]} — one non-empty line of at least `min_chars` characters per sample."""
    folder = language_excerpts_dir(path)
    out = {}
    for f in sorted(folder.glob("*.txt")):
        lines = [ln.strip() for ln in read_text(f).splitlines()]
        out[f.stem] = [ln for ln in lines if len(ln) >= min_chars]
    if not out:
        raise DataMissingError(f"{folder}: no <language>.txt files")
    return out


# --- vocabularies ----------------------------------------------------------------------------------------
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


@dataclass
class Vocab:
    """Token <-> id map. Ids 0..3 are <pad>, <unk>, <bos>, <eos>; `unk` handling is explicit:
    `encode(..., strict=True)` refuses unknown tokens instead of mapping them to <unk>."""

    tokens: list[str]

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        counts = Counter(tok for seq in sequences for tok in seq)
        specials = [PAD, UNK, BOS, EOS]
        common = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                  if c >= min_freq and t not in specials]
        if max_size is not None:
            common = common[: max(max_size - len(specials), 0)]
        return cls(specials + common)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    def encode(self, tokens: Sequence[str], strict: bool = False) -> list[int]:
        if strict:
            unknown = sorted({t for t in tokens if t not in self.index})
            if unknown:
                shown = ", ".join(repr(t) for t in unknown[:10])
                raise UserError(f"{len(unknown)} token(s) not in the vocabulary: {shown}")
        return [self.index.get(t, 1) for t in tokens]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> list[str]:
        return [self.tokens[i] for i in ids if not (skip_special and i < 4)]

    def to_dict(self) -> dict:
        return {"tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(list(d["tokens"]))


def char_tokens(text: str) -> list[str]:
    return list(text)


_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def word_tokens(text: str, lower: bool = True) -> list[str]:
    """Words and single punctuation marks."""
    return _WORD.findall(text.lower() if lower else text)


def char_vocab(texts: Iterable[str], **kw) -> Vocab:
    return Vocab.build((char_tokens(t) for t in texts), **kw)


def word_vocab(texts: Iterable[str], **kw) -> Vocab:
    return Vocab.build((word_tokens(t) for t in texts), **kw)


# --- padding, packing and bucketing ----------------------------------------------------------------------
def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, max_len: int | None = None,
                  truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into a (B, T) LongTensor; returns (ids, lengths). Sequences longer than
    `max_len` are an error unless `truncate` is set."""
    lengths = [len(s) for s in seqs]
    if max_len is not None:
        too_long = [n for n in lengths if n > max_len]
        if too_long and not truncate:
            raise UserError(f"sequence of length {max(too_long)} exceeds the model's limit of {max_len}")
        lengths = [min(n, max_len) for n in lengths]
    T = max(max(lengths, default=0), 1)
    out = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        if n:
            out[i, :n] = torch.as_tensor(list(s[:n]), dtype=torch.long)
    return out, torch.tensor(lengths, dtype=torch.long)


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True at real (non-pad) positions."""
    T = int(max_len if max_len is not None else lengths.max())
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class BucketLoader(EpochLoader):
    """Batches of similar-length sequences (less padding): sort by length within shuffled chunks of
    `bucket_size` batches, then shuffle the batch order. Yields (ids (B, T), lengths (B,), labels...).
    Epoch e's order depends only on (seed, e), as with `TensorLoader`; under DDP each rank buckets its
    own shard of the permutation (without shuffle: of the length-sorted order)."""

    def __init__(self, seqs: Sequence[Sequence[int]], *targets: torch.Tensor, batch_size: int = 32,
                 shuffle: bool = True, seed: int = 0, bucket_size: int = 50, pad_id: int = 0,
                 max_len: int | None = None, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                         world_size=world_size)
        self.seqs, self.targets, self.bucket = list(seqs), targets, bucket_size
        self.n, self.pad_id, self.max_len = len(self.seqs), pad_id, max_len
        if any(len(t) != self.n for t in targets):
            raise ValueError(f"{self.n} sequences but targets of lengths {[len(t) for t in targets]}")
        if max_len is not None:
            pad_sequences([max(self.seqs, key=len)] if self.seqs else [], pad_id, max_len)  # fail early

    def _lengths(self) -> torch.Tensor:
        return torch.tensor([len(s) for s in self.seqs], dtype=torch.long)

    def permutation(self, g: torch.Generator) -> torch.Tensor:
        if not self.shuffle:
            return self._lengths().argsort(stable=True)
        return super().permutation(g)

    def _batches(self) -> list[torch.Tensor]:
        if not self.shuffle:
            return self.split(self.indices())
        lengths = self._lengths()
        g = self.generator()
        perm = self.shard(self.permutation(g))
        chunk = self.batch_size * self.bucket
        batches = []
        for start in range(0, len(perm), chunk):
            idx = perm[start:start + chunk]
            idx = idx[lengths[idx].argsort(stable=True)]
            batches.extend(idx.split(self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        for idx in self._batches():
            ids, lens = pad_sequences([self.seqs[i] for i in idx.tolist()], self.pad_id, self.max_len)
            yield (ids, lens, *(t[idx] for t in self.targets))


def split_texts(texts: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of whole documents (never cutting one) into train and validation lists."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, round(len(texts) * val_fraction))
    return [texts[i] for i in perm[k:]], [texts[i] for i in perm[:k]]


def fortunes_documents(val_fraction: float = 0.1, seed: int = 0, path=None,
                       categories: Sequence[str] | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The documents behind `fortunes_lm_corpus`, with their category: (train, val) lists of
    (category, fortune). A classifier evaluated on fortunes from `val` never saw them during LM training."""
    corpus = load_fortunes(path, categories)
    docs = [(name, e) for name in sorted(corpus) for e in corpus[name]]
    train, val = split_texts(docs, val_fraction, seed)
    return train, val


def fortunes_lm_corpus(val_fraction: float = 0.1, seed: int = 0, path=None,
                       categories: Sequence[str] | None = None) -> tuple[str, str]:
    """The shared language-modelling split of the fortunes corpus: (train text, validation text), whole
    fortunes on one side only, joined by blank lines. Every LM recipe (LSTM char-lm, gpt-char) uses this
    same split so their validation losses compare."""
    train, val = fortunes_documents(val_fraction, seed, path, categories)
    return "\n\n".join(e for _, e in train) + "\n", "\n\n".join(e for _, e in val) + "\n"


# --- collate and packing -----------------------------------------------------------------------------------
def collate(items: Sequence[tuple[Sequence[int], int]], pad_id: int = 0, max_len: int | None = None,
            truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(ids, label), ...] -> (ids (B, T) right-padded, lengths (B,), labels (B,))."""
    ids, lengths = pad_sequences([s for s, _ in items], pad_id, max_len, truncate)
    return ids, lengths, torch.tensor([int(y) for _, y in items], dtype=torch.long)


def pack(ids: torch.Tensor, lengths: torch.Tensor, batch_first: bool = True):
    """A padded batch (plus lengths) as a torch PackedSequence (accepted by torch.nn and learnloop.nn RNNs)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    return pack_padded_sequence(ids, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)


def encode_texts(texts: Sequence[str], vocab: Vocab, level: str = "char") -> list[list[int]]:
    """Token ids of every text at `level` 'char' or 'word' (unknown tokens -> <unk>)."""
    if level not in ("char", "word"):
        raise UserError(f"level must be 'char' or 'word', got '{level}'")
    tok = char_tokens if level == "char" else word_tokens
    return [vocab.encode(tok(t)) for t in texts]


class LMWindowLoader(EpochLoader):
    """Language-model batches from one long id stream: inputs ids[s:s+T] and targets ids[s+1:s+T+1].

    Training (`shuffle=True`): `batches` batches of random window starts per epoch, drawn from a generator
    seeded by (seed, epoch), so a resumed run sees the same windows. Evaluation (`shuffle=False`):
    consecutive non-overlapping windows covering the stream once (up to `batches` batches if given).
    Under DDP the ranks split the epoch's starts: training draws ceil(batches / world_size) *
    world_size batches of starts and each rank gets ceil(batches / world_size) of them; evaluation shards
    the windows (padded) and caps each rank at `batches`."""

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, batches: int | None = None,
                 shuffle: bool = True, seed: int = 0, *, rank: int = 0, world_size: int = 1):
        ids = torch.as_tensor(ids, dtype=torch.long)
        if len(ids) < seq_len + 2:
            raise UserError(f"text of {len(ids)} tokens is too short for windows of {seq_len}")
        super().__init__(batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        self.ids, self.seq_len = ids, seq_len
        full = math.ceil(((len(ids) - 1) // seq_len) / batch_size)
        self.batches = min(batches, full) if (batches and not shuffle) else (batches or full)

    def _starts(self) -> torch.Tensor:
        return torch.arange(0, len(self.ids) - self.seq_len - 1, self.seq_len)

    def size(self) -> int:
        if self.shuffle:
            return math.ceil(self.batches / self.world_size) * self.world_size * self.batch_size
        return len(self._starts())

    def permutation(self, g: torch.Generator) -> torch.Tensor:
        if self.shuffle:        # window starts, drawn with replacement, one row per global batch
            rows = self.size() // self.batch_size
            high = len(self.ids) - self.seq_len - 1
            return torch.randint(0, high, (rows, self.batch_size), generator=g).flatten()
        return self._starts()

    def __len__(self) -> int:
        return min(super().__len__(), self.batches)

    def __iter__(self):
        offsets = torch.arange(self.seq_len + 1)
        for s in self.split(self.indices())[: len(self)]:
            w = self.ids[s[:, None] + offsets]
            yield w[:, :-1], w[:, 1:]
