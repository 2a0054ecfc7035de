import gzip

import numpy as np
import pytest

from learnloop.data.idx import read_idx, write_idx
from learnloop.data.vision import load_idx_folder
from learnloop.errors import CorruptFileError


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) * 3).reshape(2, 3, 4).astype(dtype)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_truncated_file_names_the_file(tmp_path):
    p = tmp_path / "x.idx"
    write_idx(p, np.zeros((10, 5, 5), np.uint8))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match="x.idx.*truncated"):
        read_idx(p)


def test_corrupt_gzip_and_bad_magic(tmp_path):
    p = tmp_path / "y.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"abcde")[:-6])
    with pytest.raises(CorruptFileError, match="y.gz"):
        read_idx(p)
    q = tmp_path / "z.idx"
    q.write_bytes(b"hello world")
    with pytest.raises(CorruptFileError, match="bad magic"):
        read_idx(q)


def test_user_idx_folder(tmp_path):
    """Any MNIST/KMNIST-style folder loads, gzip'd or not."""
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)).astype(np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20).astype(np.uint8) % 10)
    d = load_idx_folder(tmp_path, "train")
    assert d.images.shape == (20, 1, 28, 28) and d.labels.tolist()[:3] == [0, 1, 2] and len(d.classes) == 10


def test_mismatched_images_and_labels(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 4, 4), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(CorruptFileError, match="do not match"):
        load_idx_folder(tmp_path, "test")
