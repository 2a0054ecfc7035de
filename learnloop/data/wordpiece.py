"""BERT's tokenizer (Devlin et al., 2019): basic tokenization, then WordPiece (Wu et al., 2016).

Basic: drop control characters, map whitespace to ' ', put spaces around CJK ideographs, lower-case and
strip accents (NFD, drop combining marks) when `lower`, split on whitespace, then split every punctuation
character into its own token. WordPiece: each word is cut greedily into the longest vocabulary pieces
from the left, continuation pieces prefixed with '##'; a word with no such cut (or over 100 characters)
becomes [UNK]. `vocab.txt` holds one piece per line; the line number is the id.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from learnloop.errors import CorruptFileError, UserError


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            out.append(" ")
        elif cat.startswith("C"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def basic_tokenize(text: str, lower: bool = True) -> list[str]:
    tokens = []
    for word in _clean(text).split():
        if lower:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punct(ch):
                if piece:
                    tokens.append(piece)
                tokens.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            tokens.append(piece)
    return tokens


class WordPieceTokenizer:
    def __init__(self, vocab: list[str], lower: bool = True, unk: str = "[UNK]", max_chars: int = 100):
        self.vocab, self.lower, self.unk, self.max_chars = vocab, lower, unk, max_chars
        self.index = {t: i for i, t in enumerate(vocab)}
        for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
            if special not in self.index:
                raise CorruptFileError(f"WordPiece vocabulary lacks the special token {special}")

    @classmethod
    def from_file(cls, path: str | os.PathLike, lower: bool = True) -> WordPieceTokenizer:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: no such vocabulary file")
        return cls(p.read_text(encoding="utf-8").splitlines(), lower)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int:
        return self.index[token]

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.index:
                    break
                end -= 1
            if end == start:
                return [self.unk]
            pieces.append(sub)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for w in basic_tokenize(text, self.lower) for p in self.wordpiece(w)]

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = [self.index[t] for t in self.tokenize(text)]
        return [self.index["[CLS]"], *ids, self.index["[SEP]"]] if add_special else ids

    def decode(self, ids) -> str:
        text = " ".join(self.vocab[i] for i in ids if self.vocab[i] not in ("[PAD]", "[CLS]", "[SEP]"))
        return text.replace(" ##", "")
