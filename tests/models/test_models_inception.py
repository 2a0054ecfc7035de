"""FIDInceptionV3: pytorch-fid's architecture and key names, shapes, preprocessing, weight loading."""

import pytest
import torch
import torch.nn.functional as F

from learnloop.errors import CorruptFileError, UserError
from learnloop.models.inception import FIDInceptionV3, load_inception_weights


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = FIDInceptionV3(resize_input=False).eval()
    for mod in m.modules():          # non-trivial BN statistics so that a bad load would change outputs
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def test_parameter_count_and_key_names_match_pt_inception(model):
    sd = model.state_dict()
    # torchvision's inception_v3 without the aux head: 23,834,568 parameters for 1000 classes; FID's has 1008
    assert sum(p.numel() for p in model.parameters()) == 23_834_568 + 8 * 2049
    assert sd["fc.weight"].shape == (1008, 2048)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_shapes_on_a_small_batch(model):
    x = torch.rand(2, 3, 75, 75)                     # the smallest input the stem and reductions accept
    with torch.no_grad():
        phi = model(x)
        logits = model.logits(x)
    assert phi.shape == (2, 2048) and logits.shape == (2, 1008)
    assert (phi >= 0).all() and torch.isfinite(phi).all()


def test_preprocess_resizes_to_299_and_maps_to_minus_one_one():
    m = FIDInceptionV3()
    x = torch.rand(3, 1, 28, 28)
    y = m.preprocess(x)
    assert y.shape == (3, 3, 299, 299)
    resized = F.interpolate(x.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", align_corners=False)
    expected = 2 * resized - 1
    torch.testing.assert_close(y, expected)
    assert y.min() >= -1 and y.max() <= 1


def test_full_pipeline_on_fashion_sized_uint8_images():
    m = FIDInceptionV3()
    images = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    feats, probs = m.features_and_probs(images)
    assert feats.shape == (1, 2048) and probs.shape == (1, 1008)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    with pytest.raises(UserError, match="N, 1 or 3"):
        m.features(torch.zeros(2, 28, 28))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_save_random_weights_and_load_them_back(model, tmp_path, suffix):
    path = tmp_path / f"pt_inception{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)                      # plain tensors: loadable with weights_only=True
    loaded = load_inception_weights(path, FIDInceptionV3(resize_input=False))
    assert not loaded.training
    x = torch.rand(2, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(loaded.logits(x), model.logits(x))


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_inception_weights(tmp_path / "missing.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(CorruptFileError):
        load_inception_weights(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(CorruptFileError, match="do not fit"):
        load_inception_weights(wrong)
