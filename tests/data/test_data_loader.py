import torch

from learnloop.data import TensorLoader, group_split, random_split, stratified_split
from learnloop.data.augment import RandAugment, random_affine, random_crop, random_flip


def test_loader_covers_every_sample_once_per_epoch():
    x = torch.arange(103)
    loader = TensorLoader((x, x * 2), batch_size=10, shuffle=True, seed=3)
    seen = torch.cat([b[0] for b in loader])
    assert len(loader) == 11 and sorted(seen.tolist()) == list(range(103))
    assert all(torch.equal(b[1], b[0] * 2) for b in loader)


def test_loader_order_is_a_function_of_seed_and_epoch():
    x = torch.arange(50)
    a, b = TensorLoader((x,), 7, shuffle=True, seed=1), TensorLoader((x,), 7, shuffle=True, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))
    b.set_epoch(3)
    assert not torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))


def test_drop_last_and_transform():
    loader = TensorLoader((torch.ones(10, 2),), 4, drop_last=True, transform=lambda b: (b[0] * 3,))
    batches = list(loader)
    assert len(batches) == 2 and all(b[0].shape == (4, 2) and b[0].max() == 3 for b in batches)


def test_splits():
    tr, va = random_split(100, 0.2, seed=0)
    assert len(va) == 20 and len(set(tr.tolist()) | set(va.tolist())) == 100
    labels = torch.tensor([0] * 80 + [1] * 20)
    tr, va = stratified_split(labels, 0.25, seed=0)
    assert labels[va].bincount().tolist() == [20, 5]
    groups = torch.arange(60) // 6
    tr, va = group_split(groups, 0.3, seed=1)
    assert not set(groups[tr].tolist()) & set(groups[va].tolist())
    assert len(tr) + len(va) == 60 and len(va) > 0
    assert torch.equal(group_split(groups, 0.3, seed=1)[1], va)


def test_augmentations_keep_shape_range_and_are_batched():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    for f in (random_flip, random_crop, random_affine, RandAugment(2, 15)):
        y = f(x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6
        assert not torch.equal(y, x)


def test_flip_is_exact_mirror_and_crop_is_shift():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    y = random_flip(x, p=1.0)
    assert torch.equal(y, x.flip(-1))
    g = torch.Generator().manual_seed(0)
    c = random_crop(x, padding=0, generator=g)
    assert torch.equal(c, x)


def test_augmentation_is_reproducible_under_seed():
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(5)
    a = RandAugment(2, 9)(x)
    torch.manual_seed(5)
    b = RandAugment(2, 9)(x)
    assert torch.equal(a, b)
