"""The paper's tables, built from the CSV files alone (no model is run).

Inputs, in ``<run dir>/csv/`` of each model folder ``<results>/<profile>/<model tag>/``:
``ins_auc_<tag>_<method>.csv`` / ``del_auc_<tag>_<method>.csv`` (insertion / deletion AUC per image),
``sens_<tag>_<method>.csv`` (max-sensitivity per image) and ``randomisation_<tag>.csv`` (cascading
randomisation, long format); ``provenance.json`` next to ``csv/`` gives the profile and protocol.

Every cell is a mean over images with its standard error and the number of images behind it::

    mean = (1/n) sum_i v_i,   SE = s / sqrt(n),   s^2 = (1/(n-1)) sum_i (v_i - mean)^2   (SE undefined for n = 1)

Ins-Del is computed per image, ``ins_i - del_i``, over the images that have both. The paper's published values
(:mod:`benchmark.outputs.published`) sit in separate columns labelled "paper"; they are shown, never tested against.

Tables: Table 1 (CAM-based methods) and Table 4 (all methods): insertion, deletion, Ins-Del per method and model;
Tables 2-3: Poly-CAM after each fusion step and CAM on each isolated layer; Table 5: max-sensitivity;
randomisation summary: mean similarity between the maps of the trained and the randomised model, per method,
convention and randomisation step. Missing methods, models or inputs are listed under each table.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.atomic import write_text
from benchmark.core.csvfiles import read_values_csv

from . import published as pub

ABLATION_RE = re.compile(r"^(pcam(p|m|pm)_(step\d+|nolnorm)|cam(p|m|pm)_l\d+)$")
VARIANTS = {"p": "+", "m": "-", "pm": "±"}
SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
RANDOMISATION_COLUMNS = ("image", "method", "convention", "step", "layer") + SIMILARITIES
MODEL_LABELS = {"vgg16": "VGG16", "resnet50": "ResNet50"}


def is_ablation(method: str) -> bool:
    """True for the Poly-CAM ablation ids (``pcamW_stepK``, ``camW_lI``, ``pcamW_nolnorm``)."""
    return bool(ABLATION_RE.match(method))


def ablation_layer_count(ids) -> int:
    """Number of Poly-CAM layers implied by ablation ids: step K means K+1 layers, camW_lI means I layers."""
    steps = [int(m.rsplit("step", 1)[1]) for m in ids if "_step" in m]
    layers = [int(m.rsplit("_l", 1)[1]) for m in ids if m.startswith("cam")]
    return max([s + 1 for s in steps] + layers + [1])


def mean_se(values) -> tuple[int, float, float]:
    """(n, mean, standard error) of the finite values; SE = sample std (ddof 1) / sqrt(n), NaN when n < 2."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return 0, float("nan"), float("nan")
    return n, float(v.mean()), float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """One model folder: its tag, its CSV folder and what its provenance says."""

    tag: str
    run_dir: Path
    provenance: dict = field(default_factory=dict)
    csv: Path | None = None  # default: <run_dir>/csv

    @property
    def csv_dir(self) -> Path:
        return Path(self.csv) if self.csv is not None else self.run_dir / "csv"

    @property
    def profile(self) -> str:
        return self.provenance.get("protocol", {}).get("profile", {}).get("name", "unknown")

    @property
    def label(self) -> str:
        return MODEL_LABELS.get(self.tag, self.tag)

    def protocol_text(self) -> str:
        p = self.provenance.get("protocol", {}).get("profile")
        if not p:
            return f"`{self.tag}`: profile unknown (no provenance.json)"
        ins = self.provenance.get("metrics", {}).get("insertion") or self.provenance.get("metrics", {}).get("deletion")
        insdel = (f"{ins.get('steps')} insertion/deletion steps, blur {ins.get('blur_kernel')}x"
                  f"{ins.get('blur_kernel')} sigma {ins.get('blur_sigma')}, ") if ins else ""
        return (f"`{self.tag}`: profile `{p.get('name')}` ({insdel}{p.get('image_size')} px, antialias "
                f"{p.get('antialias')})")

    def polycam_layers(self) -> list[str] | None:
        m = self.provenance.get("model", {})
        sets, preset = m.get("layer_sets") or {}, m.get("polycam_preset")
        return list(sets[preset]) if preset in sets else None

    def _per_method(self, stem: str, read) -> dict:
        """``{method: read(path)}`` for the files ``<stem>_<tag>_<method>.csv`` of the CSV folder."""
        pattern = re.compile(rf"^{re.escape(stem)}_{re.escape(self.tag)}_(.+)\.csv$")
        out = {}
        if self.csv_dir.is_dir():
            for path in sorted(self.csv_dir.glob(f"{stem}_*.csv")):
                m = pattern.match(path.name)
                if m:
                    out[m.group(1)] = read(path)
        return out

    def curves(self, prefix: str) -> dict[str, pd.DataFrame]:
        """``{method: per-image curves}`` from ``<prefix>_details_<tag>_<method>.csv`` files."""
        return self._per_method(f"{prefix}_details", lambda p: pd.read_csv(p, index_col=0).astype(np.float64))

    def values(self, prefix: str) -> dict[str, pd.Series]:
        """``{method: per-image Series}`` from ``<prefix>_<tag>_<method>.csv`` files."""
        return self._per_method(prefix, lambda p: read_values_csv(p).astype(np.float64))

    def ablation_aucs(self) -> tuple[dict, dict, set[str]]:
        """(insertion values, deletion values, the Poly-CAM ablation map ids among them)."""
        ins, dele = self.values("ins_auc"), self.values("del_auc")
        return ins, dele, {m for m in set(ins) | set(dele) if is_ablation(m)}


def load_run(run_dir: str | Path, tag: str | None = None) -> Run:
    run_dir = Path(run_dir)
    prov_path = run_dir / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    return Run(tag or run_dir.name, run_dir, prov)


def _model_order(tag: str) -> tuple:
    base = tag.split("-")[0]
    return (MODEL_LABELS.get(base) is None, list(MODEL_LABELS).index(base) if base in MODEL_LABELS else 0, tag)


def find_runs(results_dir: str | Path) -> list[Run]:
    """The model folders under ``results_dir`` (or ``results_dir`` itself if it is one): folders with ``csv/``.
    The paper's models come first (VGG16, ResNet50), then the others by name."""
    results_dir = Path(results_dir)
    if (results_dir / "csv").is_dir():
        return [load_run(results_dir)]
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no results folder {results_dir}: run the benchmark first (python -m benchmark run)")
    runs = [load_run(d) for d in results_dir.iterdir() if (d / "csv").is_dir()]
    return sorted(runs, key=lambda r: _model_order(r.tag))


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class Table:
    """A rendered table: display cells (Markdown/LaTeX/HTML) and the numeric data behind them (CSV)."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # protocol, profile, what the columns mean
    missing: list[str] = field(default_factory=list)  # what could not be built and why

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {self.title}", ""]
        lines += [n + "  " for n in self.notes]
        if self.rows:
            lines += ["", "| " + " | ".join(self.header) + " |",
                      "|" + "|".join(["---"] + ["---:"] * (len(self.header) - 1)) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        else:
            lines += ["", "_No data._"]
        if self.missing:
            lines += ["", "Missing:"] + [f"- {m}" for m in self.missing]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            s = re.sub(r"([_%&#$])", r"\\\1", str(s))
            return s.replace("±", r"$\pm$").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
        cols = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\hline",
                 " & ".join(esc(h) for h in self.header) + r" \\", r"\hline"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        lines += [r"\hline", r"\end{tabular}", rf"\caption{{{esc(self.title)}. {esc(' '.join(self.notes))}}}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        e = html.escape
        out = [f"<h2>{e(self.title)}</h2>"] + [f"<p>{e(n)}</p>" for n in self.notes]
        if self.rows:
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in self.header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self.rows]
            out.append("</tbody></table>")
        else:
            out.append("<p><em>No data.</em></p>")
        if self.missing:
            out.append("<p>Missing:</p><ul>" + "".join(f"<li>{e(m)}</li>" for m in self.missing) + "</ul>")
        return "\n".join(out) + "\n"

    def write(self, out_dir: Path, stem: str | None = None) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or self.key
        paths = {"csv": out_dir / f"{stem}.csv", "markdown": out_dir / f"{stem}.md", "latex": out_dir / f"{stem}.tex"}
        write_text(paths["csv"], self.data.to_csv(index=False))
        write_text(paths["markdown"], self.markdown(level=1))
        write_text(paths["latex"], self.latex())
        return paths


def fmt(mean: float, se: float, digits: int = 3) -> str:
    """``mean ± se``; ``-`` when there is no value; the mean alone when SE is undefined (n = 1)."""
    if mean is None or np.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if se is None or np.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def _fmt_paper(vals, digits: int = 2) -> str:
    if vals is None:
        return ""
    if isinstance(vals, (int, float)):
        return f"{vals:.{digits}f}"
    return " / ".join(f"{v:.{digits}f}" for v in vals)


def _n_text(r: dict) -> str:
    if r["n_ins"] == r["n_del"] == r["n_both"]:
        return str(r["n_ins"])
    return f"{r['n_ins']}/{r['n_del']}/{r['n_both']}"


def faithfulness_stats(ins: pd.Series | None, dele: pd.Series | None) -> dict:
    """n, mean and SE of insertion, deletion and per-image Ins-Del (over the images having both)."""
    ins = ins if ins is not None else pd.Series(dtype=np.float64)
    dele = dele if dele is not None else pd.Series(dtype=np.float64)
    both = ins.index.intersection(dele.index)
    n_i, m_i, s_i = mean_se(ins)
    n_d, m_d, s_d = mean_se(dele)
    n_b, m_b, s_b = mean_se(ins[both] - dele[both]) if len(both) else (0, float("nan"), float("nan"))
    return {"n_ins": n_i, "insertion": m_i, "insertion_se": s_i, "n_del": n_d, "deletion": m_d, "deletion_se": s_d,
            "n_both": n_b, "ins_del": m_b, "ins_del_se": s_b}


FAITH_COLS = ["n_ins", "insertion", "insertion_se", "n_del", "deletion", "deletion_se", "n_both", "ins_del",
              "ins_del_se"]


def faithfulness_table(csv_dir: Path, tag: str) -> pd.DataFrame:
    """Per method (ablation ids included): n, mean and SE of insertion, deletion and Ins-Del for one model."""
    run = Run(tag, Path(csv_dir).parent, csv=Path(csv_dir))
    ins, dele = run.values("ins_auc"), run.values("del_auc")
    rows = [{"method": m, **faithfulness_stats(ins.get(m), dele.get(m))} for m in sorted(set(ins) | set(dele))]
    return pd.DataFrame(rows, columns=["method"] + FAITH_COLS)


def _method_rows(found: set[str], paper_ids: tuple[str, ...], extra_ok, show_paper: bool) -> list[str]:
    """Paper rows (in the paper's order) that are found or have published values shown, then the extra ids found."""
    rows = [m for m in paper_ids if m in found or show_paper]
    rows += sorted(m for m in found if m not in paper_ids and extra_ok(m))
    return rows


def _profile_notes(runs: list[Run]) -> list[str]:
    notes = ["Protocol: " + "; ".join(r.protocol_text() for r in runs) + "."]
    profiles = {r.profile for r in runs}
    if len(profiles) > 1:
        notes.append(f"WARNING: the models were run with different profiles ({', '.join(sorted(profiles))}).")
    if any(r.profile != "paper" for r in runs):
        notes.append("Profiles other than `paper` do not follow the paper's protocol: compare with the paper "
                     "columns with care.")
    return notes


def faithfulness_tables(runs: list[Run], expect_paper_models: bool = False) -> dict[str, Table]:
    """Table 1 (CAM-based methods) and Table 4 (all methods), models side by side."""
    stats: dict[str, dict[str, dict]] = {}
    for run in runs:
        ins, dele = run.values("ins_auc"), run.values("del_auc")
        stats[run.tag] = {m: faithfulness_stats(ins.get(m), dele.get(m)) for m in set(ins) | set(dele)
                          if not is_ablation(m)}
    show_paper = any(r.tag in pub.MODELS for r in runs)
    found = set().union(*[set(s) for s in stats.values()]) if stats else set()
    specs = {
        "table1": (pub.TABLE1_TITLE.replace("Table 1:", "Table 1 (ours vs paper):"), pub.TABLE1_METHODS,
                   lambda m: m == "cam" or m.startswith("calm")),
        "table4": (pub.TABLE4_TITLE.replace("Table 4:", "Table 4 (ours vs paper):"), pub.TABLE4_METHODS,
                   lambda m: True),
    }
    out = {}
    for key, (title, paper_ids, extra_ok) in specs.items():
        methods = _method_rows(found, paper_ids, extra_ok, show_paper)
        header = ["method"]
        for run in runs:
            header += [f"{run.label} n", f"{run.label} Insertion ↑", f"{run.label} Deletion ↓",
                       f"{run.label} Ins-Del ↑"]
            if run.tag in pub.MODELS:
                header.append(f"{run.label} paper Ins / Del / Ins-Del")
        rows, records = [], []
        for m in methods:
            cells = [m]
            for run in runs:
                s = stats[run.tag].get(m)
                paper = pub.faithfulness(run.tag, m)
                if s is None:
                    cells += ["0", "-", "-", "-"]
                else:
                    cells += [_n_text(s), fmt(s["insertion"], s["insertion_se"]), fmt(s["deletion"], s["deletion_se"]),
                              fmt(s["ins_del"], s["ins_del_se"])]
                if run.tag in pub.MODELS:
                    cells.append(_fmt_paper(paper))
                rec = {"table": key, "model": run.tag, "profile": run.profile, "method": m,
                       "paper_label": pub.PAPER_LABELS.get(m, "")}
                rec.update(s or {c: (0 if c.startswith("n_") else np.nan) for c in FAITH_COLS})
                rec.update(dict(zip(["paper_insertion", "paper_deletion", "paper_ins_del"], paper or (np.nan,) * 3)))
                records.append(rec)
            rows.append(cells)
        data = pd.DataFrame(records, columns=["table", "model", "profile", "method", "paper_label"] + FAITH_COLS +
                            ["paper_insertion", "paper_deletion", "paper_ins_del"])
        notes = _profile_notes(runs) + [
            "Ours: mean over images ± standard error (sample std / sqrt(n)); n = images behind the cells (shown as "
            "n_ins/n_del/n_both when they differ); Ins-Del is computed per image over the images having both. "
            "Built from the CSV files alone."]
        if show_paper:
            notes.append(f"Paper columns: published values ({pub.PAPER}), shown for comparison only; the paper's "
                         "Ins-Del column is copied as printed.")
        missing = []
        for run in runs:
            absent = [m for m in paper_ids if m not in stats[run.tag]]
            if absent:
                missing.append(f"{run.tag}: no insertion/deletion CSV for {', '.join(absent)}")
            for m, s in sorted(stats[run.tag].items()):
                if m in methods and (s["n_ins"] == 0 or s["n_del"] == 0):
                    missing.append(f"{run.tag}/{m}: only {'deletion' if s['n_ins'] == 0 else 'insertion'} present")
        if expect_paper_models:
            for t in pub.MODELS:
                if t not in stats:
                    missing.append(f"model {t}: no results folder (one of the paper's two models)")
        out[key] = Table(key, title, header, rows, data, notes, missing)
    return out


def _layer_label(names: list[str] | None, i: int, n_layers: int) -> str:
    if names and len(names) == n_layers:
        return f"l{i} {names[i - 1]}"
    return f"l{i}"


def ablation_table(run: Run) -> Table | None:
    """Tables 2-3 for one model: PCAM W after each fusion step and CAM W on each isolated layer (deepest first);
    PCAM W without LNorm (paper B.2, no published number) at the end. None if the run has no ablation CSVs."""
    ins, dele, ids = run.ablation_aucs()
    if not ids:
        return None
    n_layers = ablation_layer_count(ids)
    names = run.polycam_layers()
    paper_layers = pub.PAPER_LAYERS.get(run.tag) if n_layers == 5 else None
    title = pub.ABLATION_TITLES.get(run.tag, f"Tables 2-3 (Poly-CAM fusion steps and isolated-layer CAM) - {run.tag}")
    has_paper = run.tag in pub.ABLATION
    header = ["method", "layer (deepest first)", "id", "n", "Insertion ↑", "Deletion ↓", "Ins-Del ↑"]
    if has_paper:
        header += ["paper layer", "paper Ins / Del / Ins-Del"]
    rows, records, missing = [], [], []
    for w, sign in VARIANTS.items():
        plan = []
        for depth in range(n_layers):  # depth 0 = the deepest layer
            li = n_layers - depth
            step = depth + 1
            plan.append((f"PCAM{sign}", li, f"pcam{w}" if step == n_layers else f"pcam{w}_step{step}"))
        plan += [(f"CAM{sign}", n_layers - d, f"cam{w}_l{n_layers - d}") for d in range(n_layers)]
        plan.append((f"PCAM{sign} no LNorm", 1, f"pcam{w}_nolnorm"))
        if not any(mid in ids for _, _, mid in plan):
            missing.append(f"no ablation CSVs for PCAM{sign} (pcam{w} computed with ablations?)")
            continue
        for label, li, mid in plan:
            if mid not in ins and mid not in dele:
                missing.append(f"{mid}: no insertion/deletion CSV")
            s = faithfulness_stats(ins.get(mid), dele.get(mid))
            paper = pub.ablation(run.tag, mid) if has_paper else None
            layer = _layer_label(names, li, n_layers) + (" (all layers)" if label.endswith("no LNorm") else "")
            cells = [label, layer, mid, _n_text(s), fmt(s["insertion"], s["insertion_se"]),
                     fmt(s["deletion"], s["deletion_se"]), fmt(s["ins_del"], s["ins_del_se"])]
            if has_paper:
                cells += [paper_layers[li - 1] if paper_layers and paper else "", _fmt_paper(paper)]
            rows.append(cells)
            records.append({"table": "ablation", "model": run.tag, "profile": run.profile, "method": mid,
                            "variant": label, "layer_index": li, "layer": names[li - 1] if names and
                            len(names) == n_layers else "", "paper_layer": paper_layers[li - 1] if paper_layers
                            and paper else "", **s,
                            **dict(zip(["paper_insertion", "paper_deletion", "paper_ins_del"],
                                       paper or (np.nan,) * 3))})
    notes = _profile_notes([run]) + [
        f"PCAM W at layer l = Poly-CAM fused from the deepest layer down to l (fusion step k = L - l + 1; at l1 it "
        f"is pcamW itself); CAM W at layer l = the map of layer l alone (Eq. 2). L = {n_layers} layers"
        + (f": {', '.join(names)} (shallow to deep)." if names and len(names) == n_layers else "."),
        "Mean ± standard error over images; n = images." +
        (" Paper columns: published values, for comparison only." if has_paper else "")]
    data = pd.DataFrame(records)
    return Table(f"ablation_{run.tag}", title, header, rows, data, notes, missing)


def sensitivity_table(runs: list[Run], expect_paper_models: bool = False) -> Table | None:
    """Table 5: mean max-sensitivity (lower is better) per method, models side by side. None without sens CSVs."""
    vals = {r.tag: {m: s for m, s in r.values("sens").items() if not is_ablation(m)} for r in runs}
    with_sens = [r for r in runs if vals[r.tag]]
    if not with_sens:
        return None
    found = set().union(*[set(v) for v in vals.values()])
    show_paper = any(r.tag in pub.MODELS for r in with_sens)
    methods = _method_rows(found, pub.TABLE5_METHODS, lambda m: True, show_paper)
    header = ["method"]
    for r in with_sens:
        header += [f"{r.label} n", f"{r.label} max-sensitivity ↓"]
        header += [f"{r.label} paper"] if r.tag in pub.MODELS else []
    rows, records, missing = [], [], []
    for m in methods:
        cells = [m]
        for r in with_sens:
            n, mean, se = mean_se(vals[r.tag][m]) if m in vals[r.tag] else (0, np.nan, np.nan)
            paper = pub.sensitivity(r.tag, m)
            cells += [str(n), fmt(mean, se, 4)] + ([_fmt_paper(paper, 4)] if r.tag in pub.MODELS else [])
            records.append({"table": "table5", "model": r.tag, "profile": r.profile, "method": m, "n": n,
                            "max_sensitivity": mean, "max_sensitivity_se": se,
                            "paper_max_sensitivity": np.nan if paper is None else paper})
        rows.append(cells)
    for r in with_sens:
        absent = [m for m in pub.TABLE5_METHODS if m not in vals[r.tag]]
        if absent:
            missing.append(f"{r.tag}: no sens CSV for {', '.join(absent)}")
    for r in runs:
        if r not in with_sens:
            missing.append(f"{r.tag}: no max-sensitivity CSV (sens_{r.tag}_<method>.csv)")
    if expect_paper_models:
        missing += [f"model {t}: no results folder" for t in pub.MODELS if t not in vals]
    notes = _profile_notes(with_sens) + [
        "Mean max-sensitivity over images ± standard error (lower is better); n = images."]
    if show_paper:
        notes.append(f"Paper columns: published values ({pub.TABLE5_NOTE}), for comparison only.")
    return Table("table5", pub.TABLE5_TITLE.replace("Table 5:", "Table 5 (ours vs paper):"), header, rows,
                 pd.DataFrame(records), notes, missing)


RC_SOURCES = (("rc", "harness"), ("rc_calm", "calm"), ("rc_harness", "harness"), ("rc_custom", "custom"))


def remove_classify_table(runs: list[Run]) -> Table | None:
    """CALM's remove-and-classify: per model, method and protocol, the dataset ratio sum(top-k correct) /
    sum(random-k correct) for each erased fraction k (lower is better), from the ``rc_details`` CSVs of the metrics
    stage (protocol ``harness``) and the ``rc_<protocol>_details`` CSVs of ``remove-classify``. None without them."""
    from metrics.remove_and_classify import ERASE_K, ratios_from_curves

    curves = {r.tag: [(prefix, protocol, m, c) for prefix, protocol in RC_SOURCES
                      for m, c in r.curves(prefix).items() if not is_ablation(m)] for r in runs}
    with_rc = [r for r in runs if curves[r.tag]]
    if not with_rc:
        return None
    header = ["model", "method", "protocol", "n"] + [f"k={k:g} ↓" for k in ERASE_K] + ["mean ↓"]
    rows, records = [], []
    for r in with_rc:
        for prefix, protocol, m, c in curves[r.tag]:
            ratios = ratios_from_curves(c.to_numpy())
            mean = float(np.nanmean(list(ratios.values()))) if not all(np.isnan(v) for v in ratios.values()) \
                else float("nan")
            rows.append([r.label, m, protocol, str(len(c))] + [f"{ratios[k]:.3f}" for k in ERASE_K] + [f"{mean:.3f}"])
            records.append({"table": "remove_classify", "model": r.tag, "profile": r.profile, "method": m,
                            "protocol": protocol, "source": f"{prefix}_details", "n": len(c),
                            **{f"ratio_k{k:g}": ratios[k] for k in ERASE_K}, "ratio_mean": mean})
    notes = _profile_notes(with_rc) + [
        "Remove-and-classify (CALM, Kim et al. 2021): for each fraction k of the pixels, the images still classified "
        "as the explained class after erasing the k most attributed pixels (zero baseline), divided by the same "
        "count after erasing k random pixels. Lower is better: the map found what the model needs. A ratio is over "
        "the whole image set (n images), not a mean of per-image values.",
        "Protocol: `calm` = the authors' evaluation (`remove-classify --protocol calm`: the ground-truth label "
        "explained and counted, raw maps, torch.topk ranking, PIL resize, numpy random pixels); `harness` = the "
        "clean top-1 explained and counted, the stored normalised maps, stable ranking, the profile's resize, "
        "random pixels seeded per image (the metrics stage's `remove_classify`, or `remove-classify --protocol "
        "harness`); `custom` = other choices, listed in `remove_classify_custom.json`."]
    return Table("remove_classify", "Remove-and-classify ratio (CALM's evaluation)", header, rows,
                 pd.DataFrame(records), notes, [])


def read_randomisation(path: Path) -> pd.DataFrame:
    """Read a ``randomisation_<tag>.csv`` (long format) and check its columns."""
    df = pd.read_csv(path)
    absent = [c for c in RANDOMISATION_COLUMNS if c not in df.columns]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; expected {list(RANDOMISATION_COLUMNS)}")
    return df


def randomisation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per method, convention and step: the layer reset at that step, and n, mean, SE of each similarity."""
    records = []
    for (method, conv, step), g in df.groupby(["method", "convention", "step"], sort=True):
        rec = {"method": method, "convention": conv, "step": int(step), "layer": str(g["layer"].iloc[0])}
        for sim in SIMILARITIES:
            rec[f"n_{sim}"], rec[sim], rec[f"{sim}_se"] = mean_se(g[sim])
        records.append(rec)
    return pd.DataFrame(records)


def randomisation_table(runs: list[Run]) -> Table | None:
    """Summary of the cascading randomisation (paper Figures 26-28, no published numbers): per model, method and
    convention, the mean similarity at the last randomisation step (the CSV has every step)."""
    parts, rows, missing, notes_models = [], [], [], []
    for r in runs:
        path = r.csv_dir / f"randomisation_{r.tag}.csv"
        if not path.exists():
            missing.append(f"{r.tag}: no {path.name}")
            continue
        summ = randomisation_summary(read_randomisation(path))
        summ.insert(0, "profile", r.profile)
        summ.insert(0, "model", r.tag)
        parts.append(summ)
        notes_models.append(r)
        for (method, conv), g in summ.groupby(["method", "convention"], sort=True):
            last = g.loc[g["step"].idxmax()]
            n = sorted({int(last[f"n_{s}"]) for s in SIMILARITIES})
            rows.append([r.tag, method, conv, f"{int(last['step'])} ({last['layer']})", "/".join(map(str, n))] +
                        [fmt(last[s], last[f"{s}_se"]) for s in SIMILARITIES])
    if not parts:
        return None
    header = ["model", "method", "convention", "last step (layer reset)", "n"] + list(SIMILARITIES)
    notes = _profile_notes(notes_models) + [
        "Similarity between the map of the trained model and the map after randomising the layers from the top "
        "down to the given step (Adebayo et al. 2018): mean ± standard error over images at the last step "
        "(everything randomised); every step is in the CSV and in the randomisation figure. The paper shows this "
        "test as images only (Figures 26-28): there is no published number."]
    return Table("randomisation", "Cascading randomisation (sanity check)", header, rows,
                 pd.concat(parts, ignore_index=True), notes, missing)


# ------------------------------------------------------------------------------------------------ building
def build_all(runs: list[Run], out_dir: Path, expect_paper_models: bool = False) -> dict:
    """Build every table that the CSV files allow; write ``<stem>.{csv,md,tex}`` and ``tables.{md,tex}`` in
    ``out_dir``. Returns ``{"tables": {key: Table}, "paths": {key: {...}}, "missing": [...], "markdown": ...}``."""
    if not runs:
        raise FileNotFoundError(f"no model folder with a csv/ folder to build tables from (looked in {out_dir.parent})")
    tables: dict[str, Table] = {}
    missing: list[str] = []
    faith = faithfulness_tables(runs, expect_paper_models)
    tables["table1"], tables["table4"] = faith["table1"], faith["table4"]
    for r in runs:
        t = ablation_table(r)
        if t is None:
            missing.append(f"Tables 2-3: {r.tag} has no Poly-CAM ablation CSVs (pcamW_stepK, camW_lI; computed with "
                           "the Poly-CAM parameter ablations=True, as in the paper profile)")
        else:
            tables[t.key] = t
    t5 = sensitivity_table(runs, expect_paper_models)
    if t5 is None:
        missing.append("Table 5: no max-sensitivity CSV (sens_<tag>_<method>.csv) for any model")
    else:
        tables["table5"] = t5
    rc = remove_classify_table(runs)
    if rc is not None:  # an optional metric (--metrics remove_classify): not listed as missing
        tables["remove_classify"] = rc
    rnd = randomisation_table(runs)
    if rnd is None:
        missing.append("randomisation summary: no randomisation_<tag>.csv for any model")
    else:
        tables["randomisation"] = rnd
    stems = {"table4": "faithfulness", "table1": "table1_cam"}
    paths = {k: t.write(out_dir, stems.get(k, k)) for k, t in tables.items()}
    md = "\n".join(t.markdown(level=2) for t in tables.values())
    if missing:
        md += "\n## Not built\n\n" + "\n".join(f"- {m}" for m in missing) + "\n"
    write_text(out_dir / "tables.md", md)
    write_text(out_dir / "tables.tex", "\n".join(t.latex() for t in tables.values()))
    return {"tables": tables, "paths": paths, "missing": missing, "markdown": out_dir / "tables.md"}


def build_tables(run_dir: Path, tag: str) -> dict:
    """Build the tables of one model folder in ``<run_dir>/tables/``. Returns the Table 4 (faithfulness) paths
    (``csv``, ``markdown``, ``latex``) and its data frame (``table``), plus everything :func:`build_all` returns."""
    run_dir = Path(run_dir)
    csv_dir = run_dir / "csv"
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"no CSV folder {csv_dir}: run the metrics stage first")
    res = build_all([load_run(run_dir, tag)], run_dir / "tables")
    t4 = res["tables"]["table4"]
    return {**res, **res["paths"]["table4"], "table": t4.data[[c for c in t4.data.columns if c != "table"]]}


def build_results_tables(results_dir: Path, out_dir: Path | None = None) -> dict:
    """Build the multi-model tables of every model folder under ``results_dir`` in ``<results_dir>/tables/``."""
    results_dir = Path(results_dir)
    runs = find_runs(results_dir)
    single = (results_dir / "csv").is_dir()
    return {**build_all(runs, Path(out_dir) if out_dir else results_dir / "tables", expect_paper_models=not single),
            "runs": runs}
