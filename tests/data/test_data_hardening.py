"""Bad data files: each case crafts the file in tmp_path and expects a one-line error naming it.

Cases a user can hit by pointing `data_path` (or $LEARNLOOP_DATA) at a folder: IDX folders (MNIST,
Fashion-MNIST, KMNIST), the tabular CSVs and the text corpora. A FIFO must be refused without being
opened for reading (that would block forever): those tests run the call in a daemon thread and unblock
it by opening the FIFO's write end if it hangs, so a regression fails instead of hanging the suite.
"""

import gzip
import os
import struct
import threading

import numpy as np
import pytest

from learnloop.data import load, load_adult, load_compas, load_german, load_idx_folder, locate
from learnloop.data.idx import read_idx, write_idx
from learnloop.data.ner import load_tweet_ner
from learnloop.data.text import load_fortunes, load_language_excerpts, read_text
from learnloop.data.vision import load_fashion_mnist
from learnloop.errors import CorruptFileError, DataMissingError, UserError


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


def idx_folder(root, name="d", n=5, labels=None, gz=True, images=None):
    folder = root / name
    folder.mkdir()
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        x = images if images is not None else np.arange(n * 16, dtype=np.uint8).reshape(n, 4, 4)
        y = labels if labels is not None else (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
    return folder


def raises_without_blocking(fn, fifo, error=UserError):
    """fn() must raise `error` promptly; if it blocks on the FIFO, unblock it and fail."""
    out = {}

    def run():
        try:
            fn()
        except BaseException as e:          # noqa: BLE001 - handed to the test thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))      # a writer that closes: the reader sees EOF
        t.join(10)
        pytest.fail(f"blocked reading the FIFO {fifo}")
    assert isinstance(out.get("error"), error), out.get("error")
    msg = str(out["error"])
    assert "\n" not in msg and str(fifo) in msg and "FIFO" in msg
    return msg


# --- IDX: labels -----------------------------------------------------------------------------------------
def test_fashion_label_outside_the_ten_classes(tmp_path):
    folder = idx_folder(tmp_path, labels=np.array([0, 1, 12, 3, 4], np.uint8))
    with pytest.raises(CorruptFileError) as err:
        load_fashion_mnist("train", folder)
    msg = one_line(err)
    assert "train-labels-idx1-ubyte.gz" in msg and "label 12" in msg and "0..9" in msg


def test_negative_label_in_a_signed_labels_file(tmp_path):
    folder = idx_folder(tmp_path, labels=np.array([0, 1, -3, 3, 4], np.int8))
    with pytest.raises(CorruptFileError, match="train-labels-idx1-ubyte.gz: label -3 is negative") as err:
        load_idx_folder(folder, "train")
    one_line(err)


def test_float_labels_are_refused_not_truncated(tmp_path):
    folder = idx_folder(tmp_path, labels=np.array([0, 1, 2.5, 3, 4], np.float32))
    with pytest.raises(CorruptFileError, match="train-labels-idx1-ubyte.gz: expected .*integer labels") as err:
        load("mnist", folder, split="train")
    one_line(err)


def test_labels_within_explicit_classes_still_load(tmp_path):
    folder = idx_folder(tmp_path, labels=np.array([0, 9, 2, 3, 4], np.uint8))
    d = load_fashion_mnist("test", folder)
    assert d.labels.tolist() == [0, 9, 2, 3, 4] and len(d.classes) == 10


# --- IDX: sizes --------------------------------------------------------------------------------------------
def test_idx_with_zero_items(tmp_path):
    folder = idx_folder(tmp_path, n=0, labels=np.zeros(0, np.uint8))
    assert read_idx(folder / "train-images-idx3-ubyte.gz").shape == (0, 4, 4)   # a valid IDX file...
    with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte.gz: holds no images") as err:
        load_fashion_mnist("train", folder)                                     # ...but not a dataset
    one_line(err)


def test_absurd_row_count_is_refused_before_allocating(tmp_path):
    p = tmp_path / "absurd-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2 ** 31, 28, 28) + bytes(100))
    with pytest.raises(CorruptFileError) as err:
        read_idx(p)
    msg = one_line(err)
    assert str(p) in msg and "2147483648" in msg and "the file holds 100" in msg


def test_absurd_row_count_in_gzip_is_refused_before_decompressing(tmp_path):
    p = tmp_path / "absurd.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2 ** 31, 28, 28) + bytes(100)))
    with pytest.raises(CorruptFileError) as err:
        read_idx(p)
    assert str(p) in one_line(err) and "gzip data can hold" in str(err.value)


def test_dimensions_whose_product_overflows_64_bits(tmp_path):
    p = tmp_path / "overflow-idx4"
    p.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536))   # 2**64 wraps to 0
    with pytest.raises(CorruptFileError) as err:
        read_idx(p)
    assert str(p) in one_line(err) and "18446744073709551616" in str(err.value)


def test_truncated_plain_idx(tmp_path):
    p = tmp_path / "t-idx3-ubyte"
    write_idx(p, np.zeros((10, 3, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(CorruptFileError, match="truncated") as err:
        read_idx(p)
    assert str(p) in one_line(err)


def test_truncated_gzip_idx(tmp_path):
    p = tmp_path / "t.gz"
    write_idx(p, np.arange(90, dtype=np.uint8).reshape(10, 3, 3))
    p.write_bytes(p.read_bytes()[:-9])
    with pytest.raises(CorruptFileError, match="truncated") as err:
        read_idx(p)
    assert str(p) in one_line(err)


def test_truncated_idx_header(tmp_path):
    p = tmp_path / "h-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0]))
    with pytest.raises(CorruptFileError, match="truncated IDX header") as err:
        read_idx(p)
    assert str(p) in one_line(err)


def test_trailing_bytes_after_the_data(tmp_path):
    p = tmp_path / "extra.gz"
    write_idx(p, np.zeros((2, 2), np.uint8))
    raw = gzip.decompress(p.read_bytes()) + b"\x07"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(CorruptFileError, match="found more") as err:
        read_idx(p)
    assert str(p) in one_line(err)


def test_image_and_label_counts_differ_names_both_files(tmp_path):
    folder = idx_folder(tmp_path, labels=np.zeros(4, np.uint8))
    with pytest.raises(CorruptFileError, match="do not match") as err:
        load_idx_folder(folder, "test")
    msg = one_line(err)
    assert "t10k-images-idx3-ubyte.gz holds 5 images" in msg and "t10k-labels-idx1-ubyte.gz 4 labels" in msg


def test_images_of_the_wrong_type_name_the_file(tmp_path):
    folder = idx_folder(tmp_path, images=np.zeros((5, 4, 4), np.int32))
    with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte.gz: expected uint8 images") as err:
        load_idx_folder(folder, "train")
    one_line(err)


# --- IDX: compression decided by content ------------------------------------------------------------------
def test_uncompressed_idx_folder_through_the_registry(tmp_path):
    folder = idx_folder(tmp_path, gz=False)
    assert locate("fashion-mnist", folder) == folder
    d = load_fashion_mnist("train", folder)
    assert d.images.shape == (5, 1, 4, 4) and d.labels.tolist() == [0, 1, 2, 3, 4]


def test_uncompressed_idx_folder_in_learnloop_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    idx_folder(tmp_path, name="mnist", gz=False)
    assert load("mnist", split="test").images.shape == (5, 1, 4, 4)


def test_plain_content_under_a_gz_name_and_gzip_under_a_plain_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    plain_named_gz, gz_named_plain = tmp_path / "a.gz", tmp_path / "b-idx2-ubyte"
    write_idx(tmp_path / "a-plain", a)
    plain_named_gz.write_bytes((tmp_path / "a-plain").read_bytes())
    gz_named_plain.write_bytes(gzip.compress((tmp_path / "a-plain").read_bytes()))
    np.testing.assert_array_equal(read_idx(plain_named_gz), a)
    np.testing.assert_array_equal(read_idx(gz_named_plain), a)


# --- IDX: not a regular file ------------------------------------------------------------------------------
def test_folder_where_an_idx_file_is_expected(tmp_path):
    folder = idx_folder(tmp_path)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte.gz").mkdir()
    for call in (lambda: load_fashion_mnist("train", folder), lambda: load_idx_folder(folder, "train"),
                 lambda: read_idx(folder / "train-images-idx3-ubyte.gz")):
        with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte.gz: is a folder") as err:
            call()
        one_line(err)


def test_fifo_where_an_idx_file_is_expected(tmp_path):
    folder = idx_folder(tmp_path)
    fifo = folder / "train-labels-idx1-ubyte.gz"
    fifo.unlink()
    os.mkfifo(fifo)
    raises_without_blocking(lambda: read_idx(fifo), fifo, CorruptFileError)
    raises_without_blocking(lambda: load_idx_folder(folder, "train"), fifo, CorruptFileError)
    raises_without_blocking(lambda: load_fashion_mnist("train", folder), fifo, CorruptFileError)


# --- data_path ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["fashion-mnist", "mnist", "digits", "adult", "compas", "german"])
def test_missing_data_path_is_an_error_naming_it(tmp_path, dataset):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'}: no such") as err:
        load(dataset, tmp_path / "nope")
    one_line(err)


def test_path_given_to_an_embedded_dataset_is_not_ignored(tmp_path):
    with pytest.raises(UserError, match="digits.*embedded.*do not give it a path") as err:
        load("digits", tmp_path)
    one_line(err)


def test_data_path_that_is_a_file(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"x")
    with pytest.raises(UserError, match="is a file; give the folder") as err:
        load_fashion_mnist("train", p)
    one_line(err)


def test_empty_data_path_means_the_standard_search(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    idx_folder(tmp_path, name="mnist")
    monkeypatch.chdir(tmp_path)                        # "" used to mean the current folder
    assert locate("mnist", "") == tmp_path / "mnist"


def test_user_folder_missing_one_file_names_it(tmp_path):
    folder = idx_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataMissingError, match="missing t10k-labels-idx1-ubyte.gz or") as err:
        locate("mnist", folder)
    assert "train-images" not in one_line(err)


# --- tabular --------------------------------------------------------------------------------------------------
ADULT_ROW = (b"39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, "
             b"2174, 0, 40, United-States, <=50K\n")
ADULT_TEST = b"|1x3 Cross validator\n" + ADULT_ROW.replace(b"<=50K", b">50K.")
COMPAS_HEAD = (b"sex,age,age_cat,race,juv_fel_count,juv_misd_count,juv_other_count,priors_count,c_charge_degree,"
               b"two_year_recid,days_b_screening_arrest,is_recid,score_text,decile_score\n")
COMPAS_ROW = b"Male,30,25 - 45,White,0,0,0,1,F,1,0,0,Low,3\n"
GERMAN_ROW = b"A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 1\n"


def table(root, files, name="t"):
    folder = root / name
    folder.mkdir()
    for filename, content in files.items():
        (folder / filename).write_bytes(content)
    return folder


def test_good_tabular_files_load(tmp_path):
    adult = load_adult(table(tmp_path, {"adult.data": ADULT_ROW * 2, "adult.test": ADULT_TEST}, "a"))
    assert adult.y.tolist() == [0, 0, 1] and adult.split.tolist() == ["train", "train", "test"]
    compas = load_compas(table(tmp_path, {"compas-scores-two-years.csv": COMPAS_HEAD + COMPAS_ROW}, "c"))
    assert compas.y.tolist() == [1]
    assert load_german(table(tmp_path, {"german.data": GERMAN_ROW}, "g")).y.tolist() == [1]


def test_adult_empty_file(tmp_path):
    folder = table(tmp_path, {"adult.data": b"", "adult.test": ADULT_TEST})
    with pytest.raises(CorruptFileError, match="adult.data: (file is empty|holds no rows)") as err:
        load_adult(folder)
    one_line(err)


def test_adult_truncated_last_row(tmp_path):
    folder = table(tmp_path, {"adult.data": ADULT_ROW + ADULT_ROW[:40], "adult.test": ADULT_TEST})
    with pytest.raises(CorruptFileError, match="adult.data: line 2 has too few fields") as err:
        load_adult(folder)
    one_line(err)


def test_adult_truncated_row_line_counts_the_test_header(tmp_path):
    folder = table(tmp_path, {"adult.data": ADULT_ROW, "adult.test": ADULT_TEST + ADULT_ROW[:40]})
    with pytest.raises(CorruptFileError, match="adult.test: line 3 has too few fields"):
        load_adult(folder)


def test_adult_label_out_of_range(tmp_path):
    folder = table(tmp_path, {"adult.data": ADULT_ROW.replace(b"<=50K", b"=50K"), "adult.test": ADULT_TEST})
    with pytest.raises(CorruptFileError, match="unexpected income labels") as err:
        load_adult(folder)
    one_line(err)


def test_adult_not_utf8(tmp_path):
    folder = table(tmp_path, {"adult.data": ADULT_ROW.replace(b"State", b"St\xffte"), "adult.test": ADULT_TEST})
    with pytest.raises(CorruptFileError, match="adult.data: cannot parse") as err:
        load_adult(folder)
    one_line(err)


@pytest.mark.parametrize("label", [b"2", b"", b"-1"])
def test_compas_label_outside_0_1(tmp_path, label):
    row = COMPAS_ROW.replace(b",F,1,", b",F," + label + b",")
    folder = table(tmp_path, {"compas-scores-two-years.csv": COMPAS_HEAD + COMPAS_ROW + row})
    with pytest.raises(CorruptFileError, match="compas-scores-two-years.csv: two_year_recid must be 0 or 1") as err:
        load_compas(folder)
    one_line(err)


def test_compas_header_only(tmp_path):
    folder = table(tmp_path, {"compas-scores-two-years.csv": COMPAS_HEAD})
    with pytest.raises(CorruptFileError, match="compas-scores-two-years.csv: holds no rows") as err:
        load_compas(folder)
    one_line(err)


def test_compas_empty_file(tmp_path):
    folder = table(tmp_path, {"compas-scores-two-years.csv": b""})
    with pytest.raises(CorruptFileError, match="compas-scores-two-years.csv: file is empty") as err:
        load_compas(folder)
    one_line(err)


def test_compas_text_in_a_numeric_column(tmp_path):
    row = COMPAS_ROW.replace(b",0,0,Low", b",soon,0,Low")
    folder = table(tmp_path, {"compas-scores-two-years.csv": COMPAS_HEAD + row})
    with pytest.raises(CorruptFileError, match="column days_b_screening_arrest must be numeric") as err:
        load_compas(folder)
    one_line(err)


def test_german_empty_file(tmp_path):
    folder = table(tmp_path, {"german.data": b""})
    with pytest.raises(CorruptFileError, match="german.data: (file is empty|holds no rows)") as err:
        load_german(folder)
    one_line(err)


def test_german_label_out_of_range(tmp_path):
    folder = table(tmp_path, {"german.data": GERMAN_ROW + GERMAN_ROW.replace(b" 1\n", b" 3\n")})
    with pytest.raises(CorruptFileError, match="credit column must hold 1 .* or 2") as err:
        load_german(folder)
    one_line(err)


def test_german_data_is_a_folder(tmp_path):
    folder = table(tmp_path, {})
    (folder / "german.data").mkdir()
    with pytest.raises(CorruptFileError, match="german.data: is a folder, not a regular file") as err:
        load_german(folder)
    one_line(err)


def test_german_data_is_a_fifo(tmp_path):
    folder = table(tmp_path, {})
    os.mkfifo(folder / "german.data")
    raises_without_blocking(lambda: load_german(folder), folder / "german.data", CorruptFileError)


def test_fifo_in_learnloop_data_is_skipped_not_read(tmp_path, monkeypatch):
    if any(os.path.isdir(d) for d in ("/usr/share/datasets/mnist",)):
        pytest.skip("a system MNIST copy would be found instead")
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    folder = idx_folder(tmp_path, name="mnist")
    fifo = folder / "train-images-idx3-ubyte.gz"
    fifo.unlink()
    os.mkfifo(fifo)
    out = {}
    t = threading.Thread(target=lambda: out.update(error=pytest.raises(DataMissingError, locate, "mnist")),
                         daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("blocked on a FIFO in $LEARNLOOP_DATA")
    assert "mnist not found" in str(out["error"].value)


# --- text -------------------------------------------------------------------------------------------------------
def test_language_excerpt_not_utf8(tmp_path):
    folder = table(tmp_path, {"en.txt": b"hello there, this is english text\n", "de.txt": b"Gr\xfc\xdfe aus Berlin\n"})
    with pytest.raises(CorruptFileError, match="de.txt: not UTF-8 text") as err:
        load_language_excerpts(folder)
    one_line(err)


def test_language_excerpt_empty_file(tmp_path):
    folder = table(tmp_path, {"en.txt": b"  \n"})
    with pytest.raises(CorruptFileError, match="en.txt: file is empty") as err:
        load_language_excerpts(folder)
    one_line(err)


def test_language_excerpt_folder_named_txt(tmp_path):
    folder = table(tmp_path, {"en.txt": b"hello there, this is english text\n"})
    (folder / "de.txt").mkdir()
    with pytest.raises(CorruptFileError, match="de.txt: is a folder, not a regular file") as err:
        load_language_excerpts(folder)
    one_line(err)


def test_language_excerpt_fifo(tmp_path):
    folder = table(tmp_path, {"en.txt": b"hello there, this is english text\n"})
    os.mkfifo(folder / "de.txt")
    raises_without_blocking(lambda: load_language_excerpts(folder), folder / "de.txt", CorruptFileError)


def test_fortunes_not_utf8_is_refused_not_replaced(tmp_path):
    folder = table(tmp_path, {"computers.txt": b"A fortune\n%\nAnother \xff\xfe fortune\n%\n"})
    with pytest.raises(CorruptFileError, match="computers.txt: not UTF-8 text") as err:
        load_fortunes(folder)
    one_line(err)


def test_fortunes_fifo_category(tmp_path):
    folder = table(tmp_path, {"computers.txt": b"A fortune\n%\n"})
    os.mkfifo(folder / "science.txt")
    raises_without_blocking(lambda: load_fortunes(folder), folder / "science.txt", CorruptFileError)


def test_fortunes_path_is_a_file(tmp_path):
    p = tmp_path / "computers.txt"
    p.write_text("A fortune\n%\n")
    with pytest.raises(UserError, match="is a file, not a folder") as err:
        load_fortunes(p)
    one_line(err)


def test_ner_not_utf8(tmp_path):
    folder = table(tmp_path, {"ner.txt": b"hello\tO\nw\xffrld\tB-geo-loc\n"})
    with pytest.raises(CorruptFileError, match="ner.txt: not UTF-8 text") as err:
        load_tweet_ner(folder / "ner.txt")
    one_line(err)


def test_ner_empty(tmp_path):
    folder = table(tmp_path, {"ner.txt": b"\n \n"})
    with pytest.raises(CorruptFileError, match="ner.txt: no sentences") as err:
        load_tweet_ner(folder / "ner.txt")
    one_line(err)


def test_ner_path_is_a_folder_or_fifo(tmp_path):
    folder = table(tmp_path, {})
    with pytest.raises(UserError, match="is a folder, not a regular file") as err:
        load_tweet_ner(folder)
    one_line(err)
    os.mkfifo(folder / "ner.txt")
    raises_without_blocking(lambda: load_tweet_ner(folder / "ner.txt"), folder / "ner.txt")


def test_read_text_fifo(tmp_path):
    os.mkfifo(tmp_path / "a.txt")
    raises_without_blocking(lambda: read_text(tmp_path / "a.txt"), tmp_path / "a.txt", CorruptFileError)
