"""Captions from labels and image attributes, the caption tokenizer (against `tokenizers`' WordLevel model) and
the caption loader."""

import json

import numpy as np
import pytest
import torch

from learnloop.data.captions import (
    ATTRIBUTES, CLASS_NAMES, FOREGROUND, PROMPT_TEMPLATE, SPECIALS, TEMPLATES, CaptionLoader, CaptionSampler,
    CaptionTokenizer, attribute_thresholds, attribute_values, caption_info, caption_vocabulary, class_prompts, fill,
    image_statistics, words,
)
from learnloop.errors import UserError


def tokenizer(max_len=24):
    return CaptionTokenizer(caption_vocabulary(), max_len)


def random_images(n=400, seed=0):
    """Rectangles of random size, brightness and noise on a black background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(4, 27, (2,), generator=g))
        level = int(torch.randint(60, 230, (1,), generator=g))
        noise = torch.randint(-25, 26, (h, w), generator=g)
        x[i, 0, 1:1 + h, 1:1 + w] = (level + noise).clamp(FOREGROUND + 1, 255).to(torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=g)


# --- attributes ----------------------------------------------------------------------------------------------
def test_image_statistics_by_hand():
    x = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    x[0, 0, 2:12, 5:25] = 100                                   # 10 rows x 20 columns, flat
    x[0, 0, 2:12, 5] = 200                                      # one brighter column
    x[1, 0, 0, 0] = FOREGROUND                                  # at the threshold: background
    x[2, 0, 3, 4] = x[2, 0, 20, 4] = 255                        # two pixels: height 18, width 1
    s = image_statistics(x)
    item = x[0, 0][x[0, 0] > FOREGROUND].double()
    assert s["brightness"][0].item() == pytest.approx(item.mean().item())
    assert s["pattern"][0].item() == pytest.approx(item.std(unbiased=False).item(), rel=1e-5)
    assert s["width"][0].item() == pytest.approx(20 / 10)
    assert [s[k][1].item() for k in ("brightness", "width", "pattern")] == [0, 0, 0]     # no item pixels
    assert s["width"][2].item() == pytest.approx(1 / 18) and s["pattern"][2].item() == 0


def test_thresholds_are_numpy_quantiles_and_split_evenly():
    x, _ = random_images(600)
    cuts = attribute_thresholds(x)
    stats = image_statistics(x)
    for name, values in ATTRIBUTES.items():
        q = np.arange(1, len(values)) / len(values)
        np.testing.assert_allclose(cuts[name], np.quantile(stats[name].double().numpy(), q), rtol=1e-9)
    counts = {k: torch.bincount(v, minlength=len(ATTRIBUTES[k])) for k, v in attribute_values(x, cuts).items()}
    assert all(abs(int(c) - 200) <= 2 for c in counts["brightness"])
    for name in ("width", "pattern"):                           # ties at the median (integer widths) go up
        assert int(counts[name][0]) <= 300 <= int(counts[name][1])


def test_attribute_values_bucket_edges():
    x = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    for i, level in enumerate((100, 150, 200)):
        x[i, 0, 5:10, 5:10] = level
    v = attribute_values(x, {"brightness": [150.0, 180.0], "width": [1.0], "pattern": [1.0]})
    assert v["brightness"].tolist() == [0, 1, 2]               # a value on a cut point goes up
    assert v["width"].tolist() == [1, 1, 1]                    # square: ratio 1 = the cut
    with pytest.raises(UserError, match="brightness"):
        attribute_values(x, {"brightness": [1.0], "width": [1.0], "pattern": [1.0]})


# --- captions --------------------------------------------------------------------------------------------------
def name_in(caption_words, name):
    n = words(name)
    return any(caption_words[i:i + len(n)] == n for i in range(len(caption_words)))


def test_captions_name_the_class_and_true_attributes():
    x, y = random_images()
    values = attribute_values(x, attribute_thresholds(x))
    sampler = CaptionSampler(y, values, attribute_prob=0.5)
    vocab = set(caption_vocabulary())
    caps = sampler.sample(torch.arange(len(y)), torch.Generator().manual_seed(1))
    seen_attrs = 0
    for i, cap in enumerate(caps):
        ws = words(cap)
        assert set(ws) <= vocab
        assert len(ws) <= sampler.max_words()
        label = int(y[i])
        assert any(name_in(ws, n) for n in CLASS_NAMES[label])
        others = [n for c, names in enumerate(CLASS_NAMES) if c != label for n in names]
        # "shirt" is a word of no other name; "t-shirt" is one word: no other class may appear
        assert not any(name_in(ws, n) for n in others if not any(name_in(words(m), n) for m in CLASS_NAMES[label]))
        for attr, options in ATTRIBUTES.items():
            said = [w for w in ws if w in options]
            assert said in ([], [options[int(values[attr][i])]])
            seen_attrs += bool(said)
    assert 0.35 * 3 * len(caps) < seen_attrs < 0.65 * 3 * len(caps)


def test_caption_options_and_articles():
    x, y = random_images(200)
    values = attribute_values(x, attribute_thresholds(x))
    g = torch.Generator().manual_seed(0)
    bare = CaptionSampler(y, values, attribute_prob=0.0, synonyms=False, templates=("{a} {desc}",))
    assert bare.sample(torch.arange(200), g) == [fill("{a} {desc}", CLASS_NAMES[int(c)][0]) for c in y]
    full = CaptionSampler(y, values, attribute_prob=1.0, use=("brightness",))
    assert all(sum(w in ATTRIBUTES["brightness"] for w in words(c)) == 1 for c in full.sample(torch.arange(200), g))
    syn = CaptionSampler(torch.full((2000,), 7), {k: torch.zeros(2000, dtype=torch.long) for k in ATTRIBUTES},
                         attribute_prob=0.0)
    texts = " ".join(syn.sample(torch.arange(2000), g))
    assert "sneaker" in texts and "trainer" in texts
    assert fill(PROMPT_TEMPLATE, "ankle boot") == "a photo of an ankle boot"
    assert fill("an image of {a} {desc}", "dark, wide coat") == "an image of a dark, wide coat"
    assert class_prompts(TEMPLATES[:2], 2) == ["a photo of a t-shirt", "a picture of a t-shirt",
                                              "a photo of a pair of trousers", "a picture of a pair of trousers"]
    with pytest.raises(UserError, match="'colour'"):
        CaptionSampler(y, values, use=("colour",))
    with pytest.raises(UserError, match="repeat"):
        CaptionSampler(y, values, use=("width", "width"))
    with pytest.raises(UserError, match="labels"):
        CaptionSampler(torch.tensor([10]), values)


def test_sampling_is_seeded():
    x, y = random_images(100)
    sampler = CaptionSampler(y, attribute_values(x, attribute_thresholds(x)))
    idx = torch.arange(100)
    a = sampler.sample(idx, torch.Generator().manual_seed(3))
    assert a == sampler.sample(idx, torch.Generator().manual_seed(3))
    assert a != sampler.sample(idx, torch.Generator().manual_seed(4))


def test_sampler_from_info_survives_json():
    x, y = random_images(100)
    cuts = attribute_thresholds(x)
    info = json.loads(json.dumps({"captions": caption_info(cuts, ("width", "pattern"), 0.3, False)}))
    again = CaptionSampler.from_info(info, x, y)
    direct = CaptionSampler(y, attribute_values(x, cuts), use=("width", "pattern"), attribute_prob=0.3,
                            synonyms=False)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert again.sample(torch.arange(100), g1) == direct.sample(torch.arange(100), g2)
    with pytest.raises(UserError, match="captions"):
        CaptionSampler.from_info({}, x, y)


# --- tokenizer ------------------------------------------------------------------------------------------------
def test_vocabulary_holds_every_caption_word_once():
    vocab = caption_vocabulary()
    assert vocab[:3] == list(SPECIALS) and len(set(vocab)) == len(vocab)
    assert {"t-shirt", "shirt", "ankle", "boot", "an", "dark", "bright", "wide", "textured"} <= set(vocab)
    assert "zebra" not in vocab


def test_encode_shapes_specials_and_padding():
    tok = tokenizer()
    ids, pad = tok.encode(["a photo of a sneaker", "A Dark,  wide  COAT."])
    assert ids.shape == pad.shape == (2, 7)
    assert ids[:, 0].tolist() == [tok.bos_id] * 2
    assert ids[0, 6] == tok.eos_id and ids[1, 5] == tok.eos_id
    assert pad.tolist() == [[False] * 7, [False] * 6 + [True]] and (ids[pad] == tok.pad_id).all()
    assert tok.decode(ids) == ["a photo of a sneaker", "a dark wide coat"]
    assert tok.encode(["a bag"], length=10)[0].shape == (1, 10)


def test_against_tokenizers_word_level():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = tokenizer()
    ref = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tok.vocab)}, unk_token="[PAD]"))
    ref.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("[,.;:!?]"), " ")])
    ref.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    ref.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                       special_tokens=[("[BOS]", tok.bos_id), ("[EOS]", tok.eos_id)])
    ref.enable_padding(pad_id=tok.pad_id, pad_token="[PAD]")
    texts = ["a photo of a sneaker", "A PICTURE of a light, narrow dress.", "an ankle boot!", "t-shirt",
             "this is a\tbright\n textured   top;", "a photo of the pair of pants?", "dark:dark,dark"]
    got_ids, got_pad = tok.encode(texts)
    enc = ref.encode_batch(texts)
    assert got_ids.tolist() == [e.ids for e in enc]
    assert (~got_pad).long().tolist() == [e.attention_mask for e in enc]


def test_unknown_words_are_all_named_in_one_line():
    tok = tokenizer()
    with pytest.raises(UserError) as e:
        tok.encode(["a zebra", "a purple sneaker", "zebra\nstripes"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("unknown words 'zebra', 'purple', 'stripes'; known: ")
    assert msg.count("'zebra'") == 1 and "..." in msg
    with pytest.raises(UserError, match=r"^unknown word 'x\\x00y'"):
        tok.encode(["a x\x00y"])


@pytest.mark.parametrize("text", ["", "   ", ",.;", "\n\t"])
def test_empty_prompt_is_a_user_error(text):
    with pytest.raises(UserError, match="empty prompt"):
        tokenizer().encode([text])


def test_other_bad_prompts():
    tok = tokenizer(max_len=6)
    with pytest.raises(UserError, match="at most 4"):
        tok.encode(["a photo of a dark sneaker"])
    with pytest.raises(UserError, match="no prompt"):
        tok.encode([])
    with pytest.raises(UserError, match="text"):
        tok.encode([3])


def test_empty_caption_for_guidance():
    tok = tokenizer()
    ids, pad = tok.encode_empty(3)
    assert ids.tolist() == [[tok.bos_id, tok.eos_id]] * 3 and not pad.any()
    ids, pad = tok.encode_empty(2, length=5)
    assert ids.shape == (2, 5) and pad[:, 2:].all() and not pad[:, :2].any() and tok.decode(ids) == ["", ""]
    with pytest.raises(ValueError):
        tok.encode_empty(1, length=tok.max_len + 1)


def test_tokenizer_from_info():
    tok = tokenizer()
    info = json.loads(json.dumps({"vocab": tok.vocab, "max_len": tok.max_len}))
    again = CaptionTokenizer.from_info(info)
    assert again.vocab == tok.vocab and again.encode(["a bag"])[0].equal(tok.encode(["a bag"])[0])
    for bad in ({"vocab": "abc", "max_len": 5}, {"vocab": ["a", "b"], "max_len": 5},
                {"vocab": tok.vocab + ["a"], "max_len": 5}, {"vocab": tok.vocab, "max_len": 2},
                {"vocab": tok.vocab, "max_len": "9"}):
        with pytest.raises(UserError):
            CaptionTokenizer.from_info(bad)


# --- loader ---------------------------------------------------------------------------------------------------
def test_caption_loader_epochs_and_fixed_captions():
    x, y = random_images(50)
    sampler = CaptionSampler(y, attribute_values(x, attribute_thresholds(x)))
    tok = tokenizer()

    def epoch(loader, e):
        loader.set_epoch(e)
        batches = list(loader)
        return batches, [t for b in batches for t in tok.decode(b[1])]

    loader = CaptionLoader(x, sampler, tok, 16, shuffle=True, seed=5)
    b0, t0 = epoch(loader, 0)
    assert [len(b[0]) for b in b0] == [16, 16, 16, 2]
    order = torch.cat([b[3] for b in b0])
    assert sorted(order.tolist()) == sorted(y.tolist())
    assert t0 == epoch(CaptionLoader(x, sampler, tok, 16, shuffle=True, seed=5), 0)[1]        # (seed, epoch)
    loader.set_epoch(0)
    c0 = loader.captions()
    loader.set_epoch(1)
    assert loader.captions() != c0                              # a fresh caption per image per epoch
    for images, ids, pad, labels in b0:                         # each image keeps its own label and caption
        assert images.dtype == torch.uint8 and ids.shape == pad.shape and (ids[pad] == tok.pad_id).all()
        assert ids.shape[1] == int((~pad).sum(1).max())         # padded to the batch's longest caption
        for text, label in zip(tok.decode(ids), labels.tolist()):
            assert any(name_in(words(text), n) for n in CLASS_NAMES[label])
    fixed = CaptionLoader(x, sampler, tok, 16, shuffle=False, fixed=True, seed=5)
    assert epoch(fixed, 0)[1] == epoch(fixed, 3)[1]
    assert len(CaptionLoader(x, sampler, tok, 16, shuffle=True, drop_last=True)) == 3


@pytest.mark.parametrize("broken", [{"thresholds": []}, {"use": "width"}, {"attribute_prob": "0.5"},
                                    {"synonyms": 1}, {"templates": [3]},
                                    {"thresholds": {"brightness": ["a", 1.0], "width": [1.0], "pattern": [1.0]}},
                                    {"thresholds": {"brightness": [float("nan"), 1.0], "width": [1.0],
                                                    "pattern": [1.0]}}])
def test_malformed_caption_info_is_one_user_error(broken):
    x, y = random_images(10)
    spec = {**caption_info(attribute_thresholds(x), tuple(ATTRIBUTES), 0.5, True), **broken}
    with pytest.raises(UserError) as e:
        CaptionSampler.from_info({"captions": spec}, x, y)
    assert "\n" not in str(e.value)
