import hashlib

import pytest

from learnloop.data import load, load_digits, locate, registry
from learnloop.errors import CorruptFileError, DataMissingError, UserError


def test_fashion_from_system_package(needs_fashion):
    d = load("fashion-mnist", split="test")
    assert d.images.shape == (10000, 1, 28, 28) and d.images.dtype.is_floating_point is False
    assert d.labels.bincount().tolist() == [1000] * 10
    assert d.classes[0] == "T-shirt/top"


def test_env_dir_takes_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in registry.spec("mnist").files:
        (folder / f).write_bytes(b"")
    assert locate("mnist") == folder


def test_missing_dataset_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    with pytest.raises(DataMissingError, match="MNIST IDX"):
        locate("mnist")


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError, match="fashion-mnist"):
        load("imagenet")


def test_user_path_must_hold_the_files(tmp_path):
    with pytest.raises(DataMissingError, match="does not hold"):
        locate("fashion-mnist", tmp_path)
    with pytest.raises(UserError, match="no such"):
        locate("fashion-mnist", tmp_path / "nope")


def test_download_checks_sha256(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    out = registry.download(src.as_uri(), tmp_path / "dl" / "a.bin", good)
    assert out.read_bytes() == b"payload"
    with pytest.raises(CorruptFileError, match="SHA-256"):
        registry.download(src.as_uri(), tmp_path / "dl" / "b.bin", "0" * 64)
    assert not (tmp_path / "dl" / "b.bin").exists()


def test_digits_embedded():
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and int(d.images.max()) == 255
