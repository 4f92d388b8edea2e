"""CSV files in the Poly-CAM reference format: the names and the layout, written atomically, read back.

``<prefix>_auc_<model>_<method>.csv``: header ``,0`` then one row ``name,value`` per image (a metric with a
curve, e.g. ``ins_auc_vgg16_gradcam.csv``); ``<prefix>_details_<model>_<method>.csv``: header ``,0,1,...,S-1``
then one row of S scores per image; ``<prefix>_<model>_<method>.csv`` for a metric without a curve
(``sens_vgg16_gradcam.csv``); ``randomisation_<model>.csv``, the sanity check's similarities in long format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_text


def metric_csv_paths(csv_dir: Path, tag: str, prefix: str, method: str, has_curve: bool) -> tuple[Path, Path | None]:
    """(values file, curves file or None) of one metric and method."""
    csv_dir = Path(csv_dir)
    if has_curve:
        return csv_dir / f"{prefix}_auc_{tag}_{method}.csv", csv_dir / f"{prefix}_details_{tag}_{method}.csv"
    return csv_dir / f"{prefix}_{tag}_{method}.csv", None


def write_frame(df: pd.DataFrame, path: Path, index: bool = True) -> Path:
    """A data frame as CSV, written atomically."""
    return write_text(path, df.to_csv(index=index))


def write_values(path: Path, names: list[str], values: np.ndarray) -> Path:
    """Header ``,0`` and one ``name,value`` row per image."""
    return write_frame(pd.DataFrame({0: np.asarray(values)}, index=names), path)


def write_curves(path: Path, names: list[str], curves: np.ndarray) -> Path:
    """Header ``,0,1,...,S-1`` and one row of S scores per image."""
    return write_frame(pd.DataFrame(np.asarray(curves).astype(np.float64), index=names), path)


REWRITE = "a results folder's CSV files are written again from metrics.h5 by `python -m benchmark metrics`"


class CSVFileError(ValueError):
    """A CSV file that cannot be read as the format its name says; the message names the file and the reason."""


def _read_numeric(path: Path, layout: str) -> pd.DataFrame:
    """The CSV at ``path`` (first column: image names) as float64, or :class:`CSVFileError` naming the file and
    the first value that is not a number."""
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise CSVFileError(f"{path} is not a {layout} CSV ({type(err).__name__}: {str(err).strip()}); "
                           f"{REWRITE}") from None
    if df.shape[1] < 1:
        raise CSVFileError(f"{path} has no value column (expected a {layout} CSV); {REWRITE}")
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & df.notna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise CSVFileError(f"{path}: the value {df.iat[row, col]!r} of {df.index[row]!r} (column {df.columns[col]!r})"
                           f" is not a number; {REWRITE}")
    return num.astype(np.float64)


def read_values_csv(path: Path) -> pd.Series:
    """Read a ``,0`` CSV (ours or the reference code's) as a float64 Series indexed by image name."""
    return _read_numeric(path, "values (header ',0', rows 'name,value')").iloc[:, 0]


def read_curves_csv(path: Path) -> pd.DataFrame:
    """Read a ``,0,1,...,S-1`` curves CSV as a float64 [images, S] DataFrame indexed by image name."""
    return _read_numeric(path, "curves (header ',0,1,...', one row of scores per image)")


SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
RANDOMISATION_COLUMNS = ("image", "method", "convention", "step", "layer") + SIMILARITIES


def read_randomisation(path: Path) -> pd.DataFrame:
    """Read a ``randomisation_<tag>.csv`` (long format; names and layers as text) and check its columns."""
    df = pd.read_csv(path, dtype={c: str for c in ("image", "method", "convention", "layer")}, keep_default_na=False,
                     na_values={s: ["", "nan", "NaN"] for s in SIMILARITIES})
    absent = [c for c in RANDOMISATION_COLUMNS if c not in df.columns]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; expected {list(RANDOMISATION_COLUMNS)}")
    return df
