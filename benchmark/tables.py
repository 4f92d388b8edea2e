"""Tables built from the CSV files alone (no model is run): the faithfulness table (paper Table 1 / Table 4).

For each method: the number of images, the mean insertion and deletion AUC and Ins-Del (computed per image over
the images that have both), each with its standard error (sample std / sqrt(n)).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .csvio import read_values_csv


def _mean_se(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def faithfulness_table(csv_dir: Path, tag: str) -> pd.DataFrame:
    pattern = re.compile(rf"^(ins|del)_auc_{re.escape(tag)}_(.+)\.csv$")
    found: dict[str, dict[str, pd.Series]] = {}
    for path in sorted(Path(csv_dir).glob("*_auc_*.csv")):
        m = pattern.match(path.name)
        if m:
            found.setdefault(m.group(2), {})[m.group(1)] = read_values_csv(path)
    rows = []
    for method, d in sorted(found.items()):
        ins, dele = d.get("ins", pd.Series(dtype=float)), d.get("del", pd.Series(dtype=float))
        both = ins.index.intersection(dele.index)
        (im, ise), (dm, dse) = _mean_se(ins), _mean_se(dele)
        diff_m, diff_se = _mean_se(ins[both] - dele[both]) if len(both) else (float("nan"), float("nan"))
        rows.append({"method": method, "n_ins": len(ins), "insertion": im, "insertion_se": ise, "n_del": len(dele),
                     "deletion": dm, "deletion_se": dse, "n_both": len(both), "ins_del": diff_m, "ins_del_se": diff_se})
    cols = ["method", "n_ins", "insertion", "insertion_se", "n_del", "deletion", "deletion_se", "n_both",
            "ins_del", "ins_del_se"]
    return pd.DataFrame(rows, columns=cols)


def _fmt(m: float, se: float) -> str:
    if np.isnan(m):
        return "-"
    return f"{m:.3f}" if np.isnan(se) else f"{m:.3f} ± {se:.3f}"


def to_markdown(df: pd.DataFrame, title: str, note: str) -> str:
    lines = [f"# {title}", "", note, "",
             "| method | n | Insertion ↑ | Deletion ↓ | Ins-Del ↑ |", "|---|---:|---:|---:|---:|"]
    for r in df.itertuples():
        n = r.n_ins if r.n_ins == r.n_del == r.n_both else f"{r.n_ins}/{r.n_del}"
        lines.append(f"| {r.method} | {n} | {_fmt(r.insertion, r.insertion_se)} | {_fmt(r.deletion, r.deletion_se)}"
                     f" | {_fmt(r.ins_del, r.ins_del_se)} |")
    return "\n".join(lines) + "\n"


def build_tables(run_dir: Path, tag: str) -> dict:
    """Write ``tables/faithfulness.{csv,md}`` for a run folder; return the paths written."""
    run_dir = Path(run_dir)
    csv_dir = run_dir / "csv"
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"no CSV folder {csv_dir}: run the metrics stage first")
    df = faithfulness_table(csv_dir, tag)
    prov_path = run_dir / "provenance.json"
    profile = "unknown"
    if prov_path.exists():
        profile = json.loads(prov_path.read_text()).get("protocol", {}).get("profile", {}).get("name", "unknown")
    note = (f"Model `{tag}`, profile `{profile}`. Mean over images ± standard error; n = images behind each cell. "
            "Built from the CSV files in csv/.")
    out = run_dir / "tables"
    out.mkdir(exist_ok=True)
    df.insert(0, "profile", profile)
    df.to_csv(out / "faithfulness.csv", index=False)
    (out / "faithfulness.md").write_text(to_markdown(df, f"Faithfulness ({tag})", note))
    return {"csv": out / "faithfulness.csv", "markdown": out / "faithfulness.md", "table": df}
