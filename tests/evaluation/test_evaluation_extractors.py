"""The extractor registry and the one resize rule: shapes, values against PIL, the Fashion evaluator's features
bit-for-bit, a user-registered network, Inception-v3 with weights the test writes, and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from learnloop.errors import UserError
from learnloop.evaluation import (
    Extractor,
    ImageSpec,
    ModuleExtractor,
    evaluate_images,
    extractor_names,
    get_extractor,
    prepare_images,
    register_extractor,
)
from learnloop.evaluation.extractors import clear_extractor_cache


@pytest.fixture(scope="module")
def test_images():
    from learnloop.data.vision import load_fashion_mnist

    return load_fashion_mnist("test").images


def pil_resize(plane: torch.Tensor, size: tuple[int, int], method) -> torch.Tensor:
    """One float plane (H, W) resized by PIL (mode F), the reference implementation of antialiased resizing."""
    out = Image.fromarray(plane.numpy().astype(np.float32)).resize((size[1], size[0]), method)
    return torch.from_numpy(np.array(out))


# --- the resize rule -----------------------------------------------------------------------------------
def test_shapes_and_dtypes():
    grey = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)               # (N, H, W) gains C = 1
    out = prepare_images(grey, ImageSpec(3, (64, 48), (-1.0, 1.0)))
    assert out.shape == (5, 3, 64, 48) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])   # grey -> RGB: repeated
    assert out.min() >= -1 and out.max() <= 1
    rgb = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    assert prepare_images(rgb, ImageSpec(1, (28, 28))).shape == (2, 1, 28, 28)
    assert prepare_images(torch.zeros(0, 1, 8, 8), ImageSpec(3, (16, 16))).shape == (0, 3, 16, 16)


def test_identity_when_the_input_already_fits():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    spec = ImageSpec(1, (28, 28))
    assert torch.equal(prepare_images(images, spec), images.float() / 255)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(prepare_images(x, spec), x)


def test_value_ranges_map_linearly():
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = prepare_images(u8, ImageSpec(1, (1, 3), (-1.0, 1.0)))
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 51 / 255 * 2 - 1, 1.0]))
    tanh = torch.tensor([-1.0, 0.0, 0.5, 1.0]).view(1, 1, 1, 4)                # a tanh generator's output
    out = prepare_images(tanh, ImageSpec(1, (1, 4)), value_range=(-1, 1))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    out = prepare_images(tanh, ImageSpec(1, (1, 4), (-2.0, 2.0)), value_range=(-1, 1))
    torch.testing.assert_close(out.flatten(), torch.tensor([-2.0, 0.0, 1.0, 2.0]))


def test_rgb_to_grey_is_itu_r_601_luma_as_pil():
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 9, 7), dtype=torch.uint8, generator=g)
    ours = prepare_images(rgb, ImageSpec(1, (9, 7)))[:, 0] * 255
    pil = torch.stack([torch.from_numpy(np.array(Image.fromarray(im.permute(1, 2, 0).numpy(), "RGB").convert("L")))
                       for im in rgb]).float()
    assert (ours - pil).abs().max() <= 0.5 + 1e-3                             # PIL rounds to integers
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(prepare_images(red, ImageSpec(1, (1, 1)))) == pytest.approx(0.299)
    grey_as_rgb = torch.rand(2, 1, 5, 5).expand(-1, 3, -1, -1)                 # R = G = B gives the grey back
    torch.testing.assert_close(prepare_images(grey_as_rgb, ImageSpec(1, (5, 5))), grey_as_rgb[:, :1])


@pytest.mark.parametrize("size", [(28, 28), (28, 20), (20, 60)])
def test_shrinking_is_antialiased_bicubic_as_pil(size):
    x = torch.rand(1, 1, 64, 48, generator=torch.Generator().manual_seed(1))
    ours = prepare_images(x, ImageSpec(1, size))[0, 0]
    torch.testing.assert_close(ours, pil_resize(x[0, 0], size, Image.BICUBIC).clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(64, 64), (299, 299), (28, 90)])
def test_upsampling_is_plain_bilinear_as_pytorch_fid_and_pil(size):
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ours = prepare_images(x, ImageSpec(1, size))
    assert torch.equal(ours, F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    torch.testing.assert_close(ours[0, 0], pil_resize(x[0, 0], size, Image.BILINEAR), atol=1e-5, rtol=0)


def test_downsampling_does_not_alias_a_fine_checkerboard():
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().view(1, 1, 64, 64)
    ours = prepare_images(board, ImageSpec(1, (28, 28)))
    aliased = F.interpolate(board, size=(28, 28), mode="bilinear", align_corners=False)
    assert ours.std() < 0.05 and (ours.mean() - 0.5).abs() < 0.02             # a flat grey, as it should look
    assert aliased.std() > 5 * ours.std()


def test_bad_images_are_one_line_user_errors():
    spec = ImageSpec(1, (28, 28))
    cases = [
        (torch.zeros(2, 2, 28, 28), "2 channels"),
        (torch.zeros(2, 4, 28, 28, dtype=torch.uint8), "4 channels"),
        (torch.zeros(2, 1, 1, 28, 28), "shape"),
        (torch.zeros(2, 1, 0, 28), "shape"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.int32), "uint8 or float"),
        (torch.full((2, 1, 28, 28), 1.5), r"\[0, 1\]"),
        (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
        (np.zeros((2, 1, 28, 28)), "torch tensor"),
    ]
    for images, message in cases:
        with pytest.raises(UserError, match=message) as e:
            prepare_images(images, spec)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        prepare_images(torch.full((1, 1, 4, 4), -1.5), spec, value_range=(-1, 1))
    with pytest.raises(UserError, match="lo < hi"):
        prepare_images(torch.zeros(1, 1, 4, 4), spec, value_range=(1, 0))


def test_image_spec_validates():
    for bad in (dict(channels=2, size=(28, 28)), dict(channels=1, size=(28, 0)),
                dict(channels=1, size=(28, 28), value_range=(1.0, 1.0))):
        with pytest.raises(ValueError):
            ImageSpec(**bad)
    assert str(ImageSpec(3, (299, 299), (-1.0, 1.0))) == "3x299x299 in [-1, 1]"


# --- registry ------------------------------------------------------------------------------------------
def test_builtin_names_and_one_line_errors():
    assert {"fashion", "inception-v3"} <= set(extractor_names())
    with pytest.raises(UserError, match="unknown extractor 'nope'; known: .*fashion.*inception-v3") as e:
        get_extractor("nope")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="inception-v3.*weights=PATH") as e:
        get_extractor("inception-v3")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="no option 'weights'"):
        get_extractor("fashion", weights="x.safetensors")
    with pytest.raises(UserError, match="letters, digits"):
        register_extractor("has space", lambda: None)
    with pytest.raises(UserError, match="already registered"):
        register_extractor("fashion", lambda: None)


class TinyConv(nn.Module):
    """A tiny RGB conv net: 8-d features, and a 3-class head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(16, 8))
        self.head = nn.Linear(8, 3)


def tiny_factory(head: bool = True):
    net = TinyConv()
    return ModuleExtractor(net.body, ImageSpec(3, (16, 16), (-1.0, 1.0)), name="tiny-conv",
                           head=net.head if head else None, batch_size=7)


def test_a_registered_module_scores_any_image_format():
    register_extractor("test-tiny", tiny_factory, replace=True)
    ext = get_extractor("test-tiny")
    assert isinstance(ext, Extractor) and ext is get_extractor("test-tiny")          # shared per options
    assert (ext.feature_dim, ext.num_classes) == (8, 3)
    assert get_extractor("test-tiny", head=False).num_classes == 0
    grey = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    feats, probs = ext.features_and_probs(grey)
    assert feats.shape == (20, 8) and probs.shape == (20, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(20))
    net = TinyConv()                                        # what the rule feeds it, by hand, in one batch
    x = F.interpolate(grey.float() / 255, size=(16, 16), mode="bicubic", align_corners=False,
                      antialias=True).clamp(0, 1).expand(-1, 3, -1, -1) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(feats, net.body(x), atol=1e-5, rtol=1e-5)
    as_tanh = grey.float() / 255 * 2 - 1                    # the same images from a tanh generator
    torch.testing.assert_close(ext.features(as_tanh, value_range=(-1, 1)), feats, atol=1e-5, rtol=1e-5)
    register_extractor("test-tiny", tiny_factory, replace=True)                        # a new instance
    assert get_extractor("test-tiny") is not ext


def test_a_factory_must_return_an_extractor():
    register_extractor("test-not-an-extractor", lambda: nn.Linear(2, 2), replace=True)
    with pytest.raises(TypeError, match="ModuleExtractor"):
        get_extractor("test-not-an-extractor")


# --- the Fashion evaluator through the registry ----------------------------------------------------------
def test_fashion_features_are_bit_for_bit_the_evaluators(test_images, needs_fashion):
    from learnloop.models.evaluator import load_fashion_evaluator

    model, ext = load_fashion_evaluator(), get_extractor("fashion")
    assert ext.spec == ImageSpec(1, (28, 28), (0.0, 1.0)) and get_extractor() is ext      # the default
    images = test_images[:1100]                                             # spans the 500-image batches
    f, p = ext.features_and_probs(images)
    f0, p0 = model.features_and_probs(images)
    assert torch.equal(f, f0) and torch.equal(p, p0)
    assert torch.equal(ext.features(images[:37].float() / 255), model.features(images[:37].float() / 255))
    assert torch.equal(ext.probs(images[:37]), model.probs(images[:37]))
    assert torch.equal(ext.features(images[:37, 0]), f0[:37])                 # (N, 28, 28) as well


def test_fashion_features_of_a_28px_grey_image_and_its_64px_rgb_version_are_close(test_images, needs_fashion):
    ext = get_extractor("fashion")
    small = test_images[:300]
    big = F.interpolate(small.float() / 255, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    big = (big.expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)         # a 64x64 RGB image file
    a, b = ext.features(small), ext.features(big)
    between = (a - a.roll(1, 0)).norm(dim=1).mean()                          # two different garments
    assert (a - b).norm(dim=1).mean() < 0.25 * between                       # measured: 0.17
    assert F.cosine_similarity(a, b).mean() > 0.95
    assert (ext.probs(small).argmax(1) == ext.probs(big).argmax(1)).float().mean() > 0.93
    r = evaluate_images(big, k=5, splits=5, with_floor=False)
    assert r["fid"] < 0.2 * r["ceiling"]["fid"] and r["recall"] > 0.7
    assert r["protocol"]["fake_input"] == "uint8 3x64x64"


# --- Inception-v3 with weights the test writes -----------------------------------------------------------
def test_inception_v3_by_name_matches_the_model(tmp_path):
    from safetensors.torch import save_file

    from learnloop.models.inception import FIDInceptionV3, load_inception_weights

    torch.manual_seed(0)
    model = FIDInceptionV3()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "pt_inception.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")},
              str(path))
    try:
        ext = get_extractor("inception-v3", weights=str(path))
        assert ext.spec == ImageSpec(3, (299, 299), (-1.0, 1.0))
        assert (ext.feature_dim, ext.num_classes) == (2048, 1008)
        images = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
        f, p = ext.features_and_probs(images)
        f0, p0 = load_inception_weights(path).features_and_probs(images)    # pytorch-fid's own pipeline
        torch.testing.assert_close(f, f0, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(p, p0, atol=1e-6, rtol=1e-6)
        with pytest.raises(UserError, match="not found"):
            get_extractor("inception-v3", weights=str(tmp_path / "missing.pth"))
    finally:
        clear_extractor_cache()                                              # do not keep 95 MB alive
