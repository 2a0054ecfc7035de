"""BERT's tokenizer (Devlin et al., 2019): basic tokenization, then WordPiece (Wu et al., 2016), written to give
the ids of the Hugging Face `tokenizers` fast tokenizer (BertNormalizer + BertPreTokenizer + WordPiece, as in
all-MiniLM-L6-v2's tokenizer.json), which differs in places from the original Python BERT code.

Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK], those in the vocabulary) written literally in the text are
cut out first, matched exactly (case-sensitive, leftmost-longest, also inside words) on the raw text, and
become their own ids; the text between them goes through the steps below, each part on its own.
Basic, in tokenizer.json's order:
1. clean: drop NUL, U+FFFD and control/format/private-use characters (categories Cc, Cf, Co; tab, newline and
   carriage return are whitespace), map whitespace (Zs, Zl, Zp, \t \n \r) to ' ';
2. put spaces around CJK ideographs (the Unified Ideograph blocks, as `tokenizers` lists them: its range
   U+2B920-U+2CEAF leaves out U+2B820-U+2B91F, unlike the original BERT code);
3. when `lower`: strip accents (NFD, drop nonspacing marks Mn), then lower-case character by character, with
   no context: a final capital sigma becomes σ, not ς ("ΟΔΟΣ" -> "οδοσ"), unlike str.lower();
4. split on whitespace, then split every punctuation character (ASCII punctuation or category P*) into its
   own token.
WordPiece: each word is cut greedily into the longest vocabulary pieces from the left, continuation pieces
prefixed with '##'; a word with no such cut (or over `max_chars` = 100 characters) becomes [UNK].
`vocab.txt` holds one piece per line; the line number is the id.

Known residual difference: character classes come from Python's `unicodedata` (Unicode 14 on Python 3.11),
while `tokenizers` uses older tables (the `unicode_categories` crate), so a few hundred code points assigned
or re-classified since (rare scripts, e.g. U+0890, U+2E55, U+1734) are treated differently; unassigned code
points are kept (as [UNK]) by both.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from learnloop.errors import CorruptFileError, UserError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def _clean(text: str) -> str:
    """Steps 1 and 2 of the module docstring."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if ch in "\t\n\r" or cat in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif cat in ("Cc", "Cf", "Co", "Cs"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def normalize(text: str, lower: bool = True) -> str:
    """Steps 1-3 of the module docstring (tokenizers' BertNormalizer)."""
    text = _clean(text)
    if lower:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        text = "".join(c.lower() for c in text)
    return text


def basic_tokenize(text: str, lower: bool = True) -> list[str]:
    """Steps 1-4 of the module docstring: words and punctuation marks, before WordPiece."""
    tokens = []
    for word in normalize(text, lower).split():
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
        self.specials = tuple(t for t in SPECIALS if t in self.index)
        # longest first, so that at one position the longest special wins (tokenizers' leftmost-longest match)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.specials, key=len,
                                                                                 reverse=True)) + ")")

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
        """Pieces of `text`; special tokens written in it stay whole (see the module docstring)."""
        out = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:                                  # re.split puts the matched specials at odd positions
                out.append(part)
            elif part:
                out.extend(p for w in basic_tokenize(part, self.lower) for p in self.wordpiece(w))
        return out

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = [self.index[t] for t in self.tokenize(text)]
        return [self.index["[CLS]"], *ids, self.index["[SEP]"]] if add_special else ids

    def decode(self, ids) -> str:
        text = " ".join(self.vocab[i] for i in ids if self.vocab[i] not in ("[PAD]", "[CLS]", "[SEP]"))
        return text.replace(" ##", "")
