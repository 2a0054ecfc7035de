"""The one epoch loader (learnloop.data.loader.EpochLoader) and the six loaders built on it.

The pinned digests were recorded with the loaders as they were before they shared a base, so a
world_size=1 run sees bit-for-bit the batches (and corruption, and prompts) it saw before.
"""

import hashlib
import math

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from learnloop.data.collators import CollatingLoader, causal_collate, mlm_collate, span_corruption_collate
from learnloop.data.loader import EpochLoader, RandomBatches, TensorLoader
from learnloop.data.text import BucketLoader, LMWindowLoader
from learnloop.errors import UserError
from learnloop.tasks.in_context import PromptLoader


def digest(loader, epochs=(0, 1, 4)) -> str:
    """sha256 over len() and the exact bytes, dtype and shape of every tensor of every batch."""
    h = hashlib.sha256()
    for e in epochs:
        loader.set_epoch(e)
        h.update(b"epoch;")
        for batch in loader:
            for t in batch:
                t = t.contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _tensor_loaders():
    x = torch.arange(23)
    xs = (x, x.double() * 1.5, torch.randn(23, 2, generator=torch.Generator().manual_seed(9)))
    return {
        "tensor-plain": TensorLoader(xs, 5),
        "tensor-plain-drop": TensorLoader(xs, 5, drop_last=True),
        "tensor-shuffle": TensorLoader(xs, 5, shuffle=True, seed=3),
        "tensor-shuffle-drop": TensorLoader(xs, 5, shuffle=True, drop_last=True, seed=0),
        "tensor-transform": TensorLoader(xs, 4, True, False, 2, transform=lambda b: (b[0] * 2, b[1])),
        "tensor-one-batch": TensorLoader((x,), 100, shuffle=True, seed=1),
    }


def _random_batches():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (20, 1, 2, 2), generator=g, dtype=torch.uint8)
    labels = torch.arange(20) % 10
    return {
        "random-batches": RandomBatches(images, labels, 6, 7, seed=0),
        "random-batches-seed2": RandomBatches(images, labels, 20, 3, seed=2),
        "random-batches-small": RandomBatches(images, labels, 4, 2, seed=5),
    }


def _bucket_loaders():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 15, (37,), generator=g).tolist()
    seqs = [list(range(1, n + 1)) for n in lengths]
    labels, other = torch.arange(37), torch.arange(37) * 10
    return {
        "bucket-shuffle": BucketLoader(seqs, labels, other, batch_size=4, seed=3, bucket_size=3),
        "bucket-plain": BucketLoader(seqs, labels, batch_size=5, shuffle=False),
        "bucket-big": BucketLoader(seqs, labels, batch_size=4, seed=0, bucket_size=50, max_len=20),
    }


def _lm_loaders():
    ids = torch.arange(500) * 3
    return {
        "lm-shuffle": LMWindowLoader(ids, 7, 3, 6, seed=1),
        "lm-shuffle-full": LMWindowLoader(ids[:100], 9, 2, seed=4),
        "lm-eval": LMWindowLoader(ids, 7, 8, shuffle=False),
        "lm-eval-capped": LMWindowLoader(ids, 7, 8, 2, shuffle=False),
        "lm-eval-divisible": LMWindowLoader(ids[:36], 5, 2, shuffle=False),
    }


def _collating_loaders():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(4, 30, (20, 12), generator=g)
    for i, n in enumerate(torch.randint(3, 13, (20,), generator=g).tolist()):
        ids[i, n:] = 0
    sentinels = list(range(40, 60))

    def mlm(x, gen):
        return mlm_collate(x, gen, mask_id=3, vocab_size=30)

    def span(x, gen):
        return span_corruption_collate(x, gen, sentinel_ids=sentinels, eos_id=3, bos_id=2)

    return {
        "collate-mlm": CollatingLoader(TensorLoader((ids,), 6, shuffle=True, seed=1), mlm, seed=1),
        "collate-causal": CollatingLoader(TensorLoader((ids,), 6), causal_collate, seed=0),
        "collate-span": CollatingLoader(TensorLoader((ids,), 8, shuffle=True, seed=2), span, seed=5),
    }


def _prompt_loaders():
    return {
        "prompt": PromptLoader(3, 2, 4, 3, seed=5),
        "prompt-fixed": PromptLoader(2, 3, 5, 2, seed=1, fixed=True),
    }


def all_loaders():
    return {**_tensor_loaders(), **_random_batches(), **_bucket_loaders(), **_lm_loaders(),
            **_collating_loaders(), **_prompt_loaders()}


# recorded with the loaders as they were before the shared base (world_size=1)
PINNED = {
    "tensor-plain": "3e4c833f4aa4fb89",
    "tensor-plain-drop": "e438ee33f0665a15",
    "tensor-shuffle": "22c1f33db8744a80",
    "tensor-shuffle-drop": "137fcf4b221eacbd",
    "tensor-transform": "6892ec758ba2bb84",
    "tensor-one-batch": "d0700a0f329e32bf",
    "random-batches": "a4195501280a03f6",
    "random-batches-seed2": "5a84a4168a76e5bf",
    "random-batches-small": "c79bf5977df5bbeb",
    "bucket-shuffle": "aef51e28f98c8730",
    "bucket-plain": "4ab92e683a1c221e",
    "bucket-big": "0c95ea36abc942fe",
    "lm-shuffle": "9ecdeb7ca0334494",
    "lm-shuffle-full": "ac8e386e708df0a7",
    "lm-eval": "bf43e541f50c2865",
    "lm-eval-capped": "fa49c6b9876101c6",
    "lm-eval-divisible": "8e2fa59df0641db1",
    "collate-mlm": "fdfd7d257b57c3b9",
    "collate-causal": "414338087d4d23a0",
    "collate-span": "190e30588e9653f2",
    "prompt": "5ab92812981fbd0b",
    "prompt-fixed": "4acdd87425c6a651",
}


@pytest.mark.parametrize("name", sorted(all_loaders()))
def test_world_size_one_output_is_pinned(name):
    assert digest(all_loaders()[name]) == PINNED[name]


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("name", sorted(all_loaders()))
def test_len_agrees_with_iteration(name, world_size):
    loader = all_loaders()[name]
    loader.set_rank(world_size - 1, world_size)
    for e in (0, 1, 2):
        loader.set_epoch(e)
        assert len(loader) == sum(1 for _ in loader), (name, e)


# --- sharding --------------------------------------------------------------------------------------------
def _images(n=20):
    return torch.randint(0, 256, (n, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


_SEQS = [list(range(1, 1 + (i * 7) % 13 + 1)) for i in range(37)]

# name -> (factory(rank, world_size), items of a batch, number of distinct items every epoch must cover)
SHARDED = {
    "tensor-shuffle": (lambda r, w: TensorLoader((torch.arange(23),), 5, shuffle=True, seed=3, rank=r,
                                                 world_size=w), lambda b: b[0], 23),
    "tensor-shuffle-drop": (lambda r, w: TensorLoader((torch.arange(23),), 2, shuffle=True, drop_last=True,
                                                      rank=r, world_size=w), lambda b: b[0], None),
    "tensor-plain": (lambda r, w: TensorLoader((torch.arange(23),), 4, rank=r, world_size=w), lambda b: b[0], 23),
    "bucket-shuffle": (lambda r, w: BucketLoader(_SEQS, torch.arange(37), batch_size=4, seed=1, bucket_size=2,
                                                 rank=r, world_size=w), lambda b: b[2], 37),
    "bucket-plain": (lambda r, w: BucketLoader(_SEQS, torch.arange(37), batch_size=4, shuffle=False, rank=r,
                                               world_size=w), lambda b: b[2], 37),
    "random-batches": (lambda r, w: RandomBatches(_images(), torch.arange(20), 6, 7, seed=2, rank=r,
                                                  world_size=w), lambda b: b[1], 20),
    "lm-shuffle": (lambda r, w: LMWindowLoader(torch.arange(300), 7, 3, 5, seed=1, rank=r, world_size=w),
                   lambda b: b[0][:, 0], None),
    "lm-eval": (lambda r, w: LMWindowLoader(torch.arange(300), 7, 4, shuffle=False, rank=r, world_size=w),
                lambda b: b[0][:, 0], 42),
}


def _epoch_items(loader, items, epoch):
    loader.set_epoch(epoch)
    return [items(b) for b in loader]


def _padded_order(loader) -> list[int]:
    """The global order, padded (or cut) to a multiple of world_size the way DistributedSampler does."""
    order = loader.permutation(loader.generator()).tolist()
    w, n = loader.world_size, len(order)
    sampler = DistributedSampler(range(n), num_replicas=w, rank=0, shuffle=False, drop_last=loader.drop_last)
    total = sampler.total_size
    return (order * math.ceil(total / max(n, 1)))[:total]


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(SHARDED))
def test_ranks_partition_the_padded_permutation(name, world_size):
    make, items, n_distinct = SHARDED[name]
    for epoch in (0, 3):
        loaders = [make(r, world_size) for r in range(world_size)]
        per_rank = [_epoch_items(lo, items, epoch) for lo in loaders]
        padded = _padded_order(loaders[0])
        assert all(_padded_order(lo) == padded for lo in loaders)       # one global order on every rank
        lengths = {len(lo) for lo in loaders}
        assert lengths == {len(b) for b in per_rank}, "every rank has len() batches, the same number"
        for r, batches in enumerate(per_rank):
            got = torch.cat(batches).tolist() if batches else []
            part = padded[r::world_size]
            if loaders[r].drop_last:                      # and its short last batch is dropped
                part = part[:len(loaders[r]) * loaders[r].batch_size]
            assert sorted(got) == sorted(part), f"rank {r} is not its part of the order"
        if n_distinct is not None:
            union = {i for batches in per_rank for b in batches for i in b.tolist()}
            assert len(union) == n_distinct
        single = make(0, 1)
        single.set_epoch(epoch)
        if not loaders[0].drop_last:
            # without drop_last the ranks together see everything one process sees (plus padding)
            seen = {i for batches in per_rank for b in batches for i in b.tolist()}
            assert {i for b in single for i in items(b).tolist()} <= seen


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_sharded_order_is_a_function_of_seed_and_epoch(name):
    make, items, _ = SHARDED[name]
    a, b = make(1, 3), make(1, 3)
    for lo in (a, b):                      # history must not matter: b jumps straight to epoch 5
        if lo is a:
            for e in range(5):
                _epoch_items(lo, items, e)
    ea, eb = _epoch_items(a, items, 5), _epoch_items(b, items, 5)
    assert all(torch.equal(p, q) for p, q in zip(ea, eb)) and len(ea) == len(eb)
    if a.shuffle:
        e6 = _epoch_items(b, items, 6)
        assert not all(torch.equal(p, q) for p, q in zip(ea, e6))


def test_shard_matches_distributed_sampler():
    for n in (0, 1, 2, 5, 10, 11, 23):
        for w in (1, 2, 3, 4, 7):
            for drop_last in (False, True):
                for r in range(w):
                    loader = TensorLoader((torch.arange(n),), 3, drop_last=drop_last, rank=r, world_size=w)
                    ref = list(DistributedSampler(range(n), num_replicas=w, rank=r, shuffle=False,
                                                  drop_last=drop_last))
                    assert loader.indices().tolist() == ref, (n, w, drop_last, r)
                    per_rank = len(ref)
                    assert len(loader) == (per_rank // 3 if drop_last else math.ceil(per_rank / 3))
                    assert sum(len(b[0]) for b in loader) == (per_rank // 3 * 3 if drop_last else per_rank)


def test_step_loaders_give_every_rank_full_batches():
    for w in (1, 2, 3):
        for r in range(w):
            rb = RandomBatches(_images(), torch.arange(20), 6, 7, rank=r, world_size=w)
            assert len(rb) == math.ceil(7 / w) and all(len(y) == 6 for _, y in rb)
            lm = LMWindowLoader(torch.arange(300), 7, 3, 5, rank=r, world_size=w)
            assert len(lm) == math.ceil(5 / w) and all(x.shape == (3, 7) for x, _ in lm)


def test_lm_ranks_split_the_single_process_windows():
    one = torch.cat([x[:, 0] for x, _ in LMWindowLoader(torch.arange(300), 7, 3, 6, seed=4)])
    ranks = [torch.cat([x[:, 0] for x, _ in LMWindowLoader(torch.arange(300), 7, 3, 6, seed=4, rank=r,
                                                           world_size=2)]) for r in range(2)]
    assert torch.equal(torch.stack(ranks, 1).flatten(), one)


def test_prompt_ranks_split_the_single_process_prompts():
    for fixed in (False, True):
        one = PromptLoader(6, 2, 4, 3, seed=5, fixed=fixed)
        one.set_epoch(2)
        ref = [xs for xs, _ in one]
        for w in (2, 3, 4):
            got = {}
            for r in range(w):
                lo = PromptLoader(6, 2, 4, 3, seed=5, fixed=fixed, rank=r, world_size=w)
                lo.set_epoch(2)
                batches = [xs for xs, _ in lo]
                assert len(batches) == len(lo) == math.ceil(6 / w)
                got.update({r + w * i: xs for i, xs in enumerate(batches)})
            assert all(torch.equal(got[b], ref[b]) for b in range(6))


def test_collating_loader_shards_through_its_inner_loader():
    ids = torch.randint(4, 30, (24, 10), generator=torch.Generator().manual_seed(0))

    def mlm(x, g):
        return mlm_collate(x, g, mask_id=3, vocab_size=30, p=0.5)

    outs = []
    for r in range(2):
        lo = CollatingLoader(TensorLoader((ids,), 4, shuffle=True, seed=1), mlm, seed=3)
        lo.set_rank(r, 2)
        assert lo.loader.rank == r and lo.loader.world_size == 2 and len(lo) == 3
        lo.set_epoch(1)
        outs.append(list(lo))
        assert len(outs[-1]) == 3
    seen = torch.cat([t for out in outs for _, t in out])
    assert seen.shape == (24, 10)
    # ranks corrupt with different streams: the same inner batch gets a different mask on rank 1
    same = [CollatingLoader(TensorLoader((ids[:4],), 4), mlm, seed=3) for _ in range(2)]
    same[1].set_rank(1, 2)
    same[1].loader.set_rank(0, 1)            # rank 1's collator over rank 0's (identical) data
    (x0, _), (x1, _) = next(iter(same[0])), next(iter(same[1]))
    assert not torch.equal(x0, x1)


def test_generators_are_functions_of_seed_epoch_and_rank():
    lo = EpochLoader(4, shuffle=True, seed=7)
    lo.n = 50
    a = lo.permutation(lo.generator(3))
    lo.set_epoch(3)
    assert torch.equal(a, lo.permutation(lo.generator())) and torch.equal(a, lo.permutation(lo.rank_generator()))
    assert not torch.equal(a, lo.permutation(lo.generator(4)))
    draws = []
    for r in range(3):
        lo.set_rank(r, 3)
        draws.append(torch.randn(8, generator=lo.rank_generator()))
        assert torch.equal(draws[-1], torch.randn(8, generator=lo.rank_generator()))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def test_bad_rank_is_a_user_error():
    for rank, world_size in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(UserError, match="rank"):
            TensorLoader((torch.arange(4),), 2, rank=rank, world_size=world_size)
