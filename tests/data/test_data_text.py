"""learnloop.data.text: file errors, vocabularies, padding/packing, bucketing, LM windows, the shared split."""

import pytest
import torch

from learnloop.data.text import (
    BucketLoader,
    LMWindowLoader,
    Vocab,
    char_vocab,
    collate,
    encode_texts,
    fortunes_documents,
    fortunes_lm_corpus,
    lengths_to_mask,
    pack,
    pad_sequences,
    read_text,
    split_texts,
    word_tokens,
    word_vocab,
)
from learnloop.errors import CorruptFileError, UserError


def test_read_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorruptFileError, match="empty"):
        read_text(tmp_path / "empty.txt")
    with pytest.raises(CorruptFileError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(UserError, match="no such file"):
        read_text(tmp_path / "missing.txt")


def test_vocab_roundtrip_and_specials():
    v = char_vocab(["abca", "bd"])
    assert v.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and v.tokens[4] == "a"
    assert v.decode(v.encode(list("abcd"))) == list("abcd")
    assert v.encode(["z"]) == [v.unk_id]
    with pytest.raises(UserError, match="not in the vocabulary"):
        v.encode(["z"], strict=True)
    assert Vocab.from_dict(v.to_dict()).tokens == v.tokens
    w = word_vocab(["Hello, world!", "hello there"], min_freq=2)
    assert w.tokens[4:] == ["hello"] and word_tokens("Hi, you.") == ["hi", ",", "you", "."]
    assert encode_texts(["ab"], v) == [[v.index["a"], v.index["b"]]]


def test_pad_collate_pack_and_mask():
    ids, lengths = pad_sequences([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(UserError, match="exceeds the model's limit of 2"):
        pad_sequences([[1, 2, 3]], max_len=2)
    assert pad_sequences([[1, 2, 3]], max_len=2, truncate=True)[0].tolist() == [[1, 2]]
    x, lens, y = collate([([1, 2], 0), ([3], 1)])
    assert x.tolist() == [[1, 2], [3, 0]] and y.tolist() == [0, 1]
    packed = pack(x, lens)
    assert packed.batch_sizes.tolist() == [2, 1]
    assert lengths_to_mask(lens).tolist() == [[True, True], [True, False]]


def test_bucket_loader_is_seeded_and_groups_lengths():
    seqs = [[1] * n for n in range(1, 101)]
    labels = torch.arange(100)
    a = list(BucketLoader(seqs, labels, batch_size=10, seed=3, bucket_size=10))
    b = list(BucketLoader(seqs, labels, batch_size=10, seed=3, bucket_size=10))
    assert all(torch.equal(p[2], q[2]) for p, q in zip(a, b))
    assert sorted(torch.cat([bt[2] for bt in a]).tolist()) == list(range(100))
    for ids, lens, lab in a:
        assert ids.shape[1] == int(lens.max()) and torch.equal(lens, lab + 1)
    assert max(int(lens.max() - lens.min()) for _, lens, _ in a) < 100
    with pytest.raises(UserError, match="limit"):
        BucketLoader(seqs, labels, max_len=50)


def test_lm_windows_shift_by_one_and_resume_exactly():
    ids = torch.arange(1000)
    loader = LMWindowLoader(ids, seq_len=16, batch_size=4, batches=5, seed=1)
    loader.set_epoch(2)
    batches = list(loader)
    assert len(batches) == 5
    for x, y in batches:
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    again = LMWindowLoader(ids, seq_len=16, batch_size=4, batches=5, seed=1)
    again.set_epoch(2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches, again))
    val = list(LMWindowLoader(ids, seq_len=16, batch_size=8, shuffle=False))
    assert torch.equal(torch.cat([x for x, _ in val]).flatten(), ids[: sum(x.numel() for x, _ in val)])
    with pytest.raises(UserError, match="too short"):
        LMWindowLoader(torch.arange(5), seq_len=16, batch_size=2)


def test_split_texts_keeps_documents_whole():
    docs = [f"doc{i}" for i in range(50)]
    tr, va = split_texts(docs, 0.2, seed=0)
    assert len(va) == 10 and sorted(tr + va) == sorted(docs)
    with pytest.raises(UserError):
        split_texts(docs, 1.5)


def test_fortunes_split_is_shared_and_labelled(tmp_path):
    for name, entries in {"a": ["alpha one", "alpha two", "alpha three"], "b": ["beta one", "beta two"]}.items():
        (tmp_path / f"{name}.txt").write_text("\n%\n".join(entries) + "\n%\n")
    train_text, val_text = fortunes_lm_corpus(0.4, seed=0, path=tmp_path)
    train_docs, val_docs = fortunes_documents(0.4, seed=0, path=tmp_path)
    assert len(val_docs) == 2 and {c for c, _ in train_docs + val_docs} == {"a", "b"}
    assert val_text == "\n\n".join(e for _, e in val_docs) + "\n"
    assert train_text == "\n\n".join(e for _, e in train_docs) + "\n"
