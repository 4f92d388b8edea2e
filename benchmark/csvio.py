"""CSV files in the Poly-CAM reference format.

``<prefix>_auc_<model>_<method>.csv``: header ``,0`` then one row ``name,value`` per image;
``<prefix>_details_<model>_<method>.csv``: header ``,0,1,...,S-1`` then one row of S scores per image.
Files are written whole to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .store import DONE, H5Store


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp)
    tmp.replace(path)


def metric_csv_paths(csv_dir: Path, tag: str, metric, method: str) -> tuple[Path, Path | None]:
    prefix = metric.csv_prefix or metric.id
    if metric.has_curve:
        return csv_dir / f"{prefix}_auc_{tag}_{method}.csv", csv_dir / f"{prefix}_details_{tag}_{method}.csv"
    return csv_dir / f"{prefix}_{tag}_{method}.csv", None


def write_metric_csvs(csv_dir: Path, tag: str, metric, method: str, store: H5Store) -> Path:
    """Export the done rows of ``<metric>/<method>`` from the metrics store (list order)."""
    key = f"{metric.id}/{method}"
    done = np.flatnonzero(store.status(key) == DONE)
    names = [store.names[i] for i in done]
    values_path, curve_path = metric_csv_paths(csv_dir, tag, metric, method)
    _atomic_csv(pd.DataFrame({0: store.read(key, "value")[done]}, index=names), values_path)
    if curve_path is not None:
        curves = store.read(key, "curve")[done]
        _atomic_csv(pd.DataFrame(curves.astype(np.float64), index=names), curve_path)
    return values_path


def read_values_csv(path: Path) -> pd.Series:
    """Read a ``,0`` CSV (ours or the reference code's) as a Series indexed by image name."""
    return pd.read_csv(path, index_col=0).iloc[:, 0]
