"""The paper's tables, built from the CSV files alone (no model is run).

Inputs, in ``<run dir>/csv/`` of each model folder ``<results>/<profile>/<model tag>/``:
``ins_auc_<tag>_<method>.csv`` / ``del_auc_<tag>_<method>.csv`` (insertion / deletion AUC per image),
``sens_<tag>_<method>.csv`` (max-sensitivity per image) and ``randomisation_<tag>.csv`` (cascading
randomisation, long format); ``provenance.json`` next to ``csv/`` gives the profile and protocol.

Every cell is a mean over images with its standard error and the number of images behind it::

    mean = (1/n) sum_i v_i,   SE = s / sqrt(n),   s^2 = (1/(n-1)) sum_i (v_i - mean)^2   (SE undefined for n = 1)

Ins-Del is computed per image, ``ins_i - del_i``, over the images that have both. Next to it, in brackets, the
95 % percentile interval of a paired, seeded bootstrap over images (:mod:`benchmark.outputs.stats`; seed and number
of resamples in the notes and the CSV columns ``bootstrap_seed``, ``bootstrap_resamples``). The paper's published
values (:mod:`benchmark.outputs.published`) sit in separate columns labelled "paper"; they are shown, never tested
against, and no interval or test concerns them.

Tables: Table 1 (CAM-based methods) and Table 4 (all methods): insertion, deletion, Ins-Del per method and model;
Tables 2-3: Poly-CAM after each fusion step and CAM on each isolated layer; Table 5: max-sensitivity;
randomisation summary: mean similarity between the maps of the trained and the randomised model, per method,
convention and randomisation step; ``ranks``: per model and metric (insertion, deletion, Ins-Del), the methods'
mean ranks over the images they all have, with intervals, and the group not distinguishable from the best;
``pairwise_<tag>_<metric>``: every two methods of Table 4 on the same images, the mean paired difference, its
interval, the Wilcoxon signed-rank p-value and Holm's adjustment. Missing methods, models or inputs are listed under
each table, and one line under each table (:func:`symbols_line`) explains every symbol it uses.

The model-independent baselines (:data:`FLOOR_METHODS`) are the floor: the last rows of Tables 1, 4 and 5, labelled
``(floor)``, never compared, ranked or marked best; a method's mean that does not beat the best floor mean of its
model is marked ``(floor not cleared)`` in Tables 1 and 4.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.atomic import write_text
from benchmark.core.csvfiles import SIMILARITIES

from . import published as pub
from . import significance as sig
from .runs import (
    FLOOR_METHODS,
    VARIANTS,
    Run,
    ablation_layer_count,
    elsewhere_hint,
    find_runs,
    has_runs,
    is_ablation,
    is_floor,
    load_run,
    method_label,
)
from .stats import ALPHA, DEFAULT_RESAMPLES, DEFAULT_SEED, LEVEL, WILCOXON_TEXT

FLOOR_TEXT = ("Floor: model-independent baselines, computed by `run` with no model pass (random_map: uniform noise "
              "seeded per image; centre_prior: a Gaussian at the image centre; edge_map: Sobel edges of the image). A "
              "method should beat them; they are left out of the best / ≈best marks, the ranks and the pairwise "
              "tests, so adding them changes no verdict among the methods.")
LATEX_ESCAPES = str.maketrans({**{c: "\\" + c for c in "_%&#$"}, "<": "$<$", ">": "$>$", "±": r"$\pm$",
                               "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≈": r"$\approx$"})


def mean_se(values) -> tuple[int, float, float]:
    """(n, mean, standard error) of the finite values; SE = sample std (ddof 1) / sqrt(n), NaN when n < 2."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return 0, float("nan"), float("nan")
    return n, float(v.mean()), float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


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
    symbols: str = ""  # one line under the table: every symbol its cells and header use

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {self.title}", ""]
        lines += [n + "  " for n in self.notes]
        if self.rows:
            lines += ["", "| " + " | ".join(self.header) + " |",
                      "|" + "|".join(["---"] + ["---:"] * (len(self.header) - 1)) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            if self.symbols:
                lines += ["", self.symbols]
        else:
            lines += ["", "_No data._"]
        if self.missing:
            lines += ["", "Missing:"] + [f"- {m}" for m in self.missing]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return str(s).translate(LATEX_ESCAPES)
        cols = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\hline",
                 " & ".join(esc(h) for h in self.header) + r" \\", r"\hline"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        lines += [r"\hline", r"\end{tabular}",
                  rf"\caption{{{esc(self.title)}. {esc(' '.join(self.notes + [self.symbols]).strip())}}}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        e = html.escape
        out = [f"<h2>{e(self.title)}</h2>"] + [f"<p>{e(n)}</p>" for n in self.notes]
        if self.rows:
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in self.header) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self.rows]
            out.append("</tbody></table>")
            if self.symbols:
                out.append(f"<p><small>{e(self.symbols)}</small></p>")
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


def fmt(mean: float, se: float, digits: int = 3, lo: float | None = None, hi: float | None = None) -> str:
    """``mean ± se [lo, hi]``; ``-`` when there is no value; the mean alone when SE is undefined (n = 1); the
    interval only when given and finite."""
    if mean is None or np.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}" if se is None or np.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


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
CI_COLS = [f"{m}_ci_{e}" for m in ("insertion", "deletion", "ins_del") for e in ("low", "high")]
BOOT_COLS = ["bootstrap_seed", "bootstrap_resamples", "ci_level"]
GROUP_MARKS = {sig.GROUP_BEST: " best", sig.GROUP_TIED: " ≈best"}
FLOOR_MARK = " (floor not cleared)"
FLOOR_COLS = [f"{m}_clears_floor" for m in sig.METRICS]


def _boot_record(a: dict) -> dict:
    return {"bootstrap_seed": a["seed"], "bootstrap_resamples": a["resamples"], "ci_level": a["level"]}


def _boot_note(seed: int, resamples: int) -> str:
    return (f"[lo, hi]: 95 % interval of the mean, percentile interval of a paired bootstrap over images ({resamples} "
            f"resamples, seed {seed}; one resample matrix per model, shared by every method; no interval from fewer "
            "than 2 images).")


def analyse_faithfulness(run: Run, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> dict:
    """:func:`benchmark.outputs.significance.faithfulness_analysis` of one model: intervals of every insertion /
    deletion / Ins-Del cell (ablation ids included) and the comparison of Table 4's methods."""
    ins, dele = run.values("ins_auc"), run.values("del_auc")
    compared = sorted(m for m in set(ins) | set(dele) if not is_ablation(m) and not is_floor(m))
    return sig.faithfulness_analysis(ins, dele, compared, seed, resamples, LEVEL, ALPHA)


def floor_marks(stats: dict[str, dict]) -> dict[str, dict[str, bool]]:
    """``{method: {metric: clears the floor}}`` for the methods of one model that are not floor rows, where the
    model has floor rows: the mean is better than the best floor mean (higher for insertion and Ins-Del, lower
    for deletion). Empty without floor rows."""
    out = {}
    for metric, hib in sig.METRICS.items():
        floor = [s[metric] for m, s in stats.items() if is_floor(m) and np.isfinite(s[metric])]
        if not floor:
            continue
        best = max(floor) if hib else min(floor)
        for m, s in stats.items():
            if not is_floor(m) and np.isfinite(s[metric]):
                out.setdefault(m, {})[metric] = bool(s[metric] > best if hib else s[metric] < best)
    return out


def _faith_cells(s: dict, ci: dict, marks: dict | None = None) -> list[str]:
    marks = marks or {}
    return [fmt(s[k], s[f"{k}_se"], lo=ci.get(f"{k}_ci_low"), hi=ci.get(f"{k}_ci_high")) + marks.get(k, "")
            for k in ("insertion", "deletion", "ins_del")]


def faithfulness_table(csv_dir: Path, tag: str) -> pd.DataFrame:
    """Per method (ablation ids included): n, mean and SE of insertion, deletion and Ins-Del for one model."""
    run = Run(tag, Path(csv_dir).parent, csv=Path(csv_dir))
    ins, dele = run.values("ins_auc"), run.values("del_auc")
    rows = [{"method": m, **faithfulness_stats(ins.get(m), dele.get(m))} for m in sorted(set(ins) | set(dele))]
    return pd.DataFrame(rows, columns=["method"] + FAITH_COLS)


def _method_rows(found: set[str], paper_ids: tuple[str, ...], extra_ok, show_paper: bool) -> list[str]:
    """Paper rows (in the paper's order) that are found or have published values shown, then the extra ids found,
    then the floor rows found (in :data:`FLOOR_METHODS` order)."""
    rows = [m for m in paper_ids if m in found or show_paper]
    rows += sorted(m for m in found if m not in paper_ids and not is_floor(m) and extra_ok(m))
    return rows + [m for m in FLOOR_METHODS if m in found]


def _profile_notes(runs: list[Run], paper_columns: bool = False) -> list[str]:
    """The protocol of each model, and a warning for mixed profiles or a profile other than ``paper`` (which
    mentions the paper columns only where the table has some)."""
    notes = ["Protocol: " + "; ".join(r.protocol_text() for r in runs) + "."]
    profiles = {r.profile for r in runs}
    if len(profiles) > 1:
        notes.append(f"WARNING: the models were run with different profiles ({', '.join(sorted(profiles))}).")
    other = sorted({r.profile for r in runs if r.profile != "paper"})
    if other:
        notes.append(f"Profile {', '.join(f'`{p}`' for p in other)} is not the paper's protocol (cheaper parameters)"
                     + (": compare with the paper columns with care." if paper_columns else
                        ": these numbers are not comparable with the paper's."))
    return notes


_CI_RE = re.compile(r"\[-?[\d.]+, -?[\d.]+\]")
_N_RE = re.compile(r"^\d+/\d+/\d+$")


NO_VALUE = "no value (no CSV for this method and model, or no finite value)"


def symbols_line(header: list[str], rows: list[list[str]], extra: list[tuple[bool, str]] = (),
                 dash: str = NO_VALUE) -> str:
    """The one line under a table: the meaning of every symbol its header and cells use (and only those), then the
    table's own ``extra`` entries ``(used, text)``; ``dash``: what a ``-`` cell means in this table."""
    cells = [c for r in rows for c in r]
    has = lambda pred: any(pred(c) for c in cells)  # noqa: E731
    arrows = any("↑" in h for h in header), any("↓" in h for h in header)
    entries = [
        (has(lambda c: "±" in c), "a ± b: mean over images ± its standard error (sample std / sqrt(n))"),
        (has(lambda c: bool(_CI_RE.search(c))), "[lo, hi]: 95 % bootstrap interval of the mean (none for n < 2)"),
        (arrows[0] and arrows[1], "↑ higher is better, ↓ lower is better"),
        (arrows[0] and not arrows[1], "↑ higher is better"),
        (arrows[1] and not arrows[0], "↓ lower is better"),
        (has(lambda c: bool(_N_RE.match(c))), "n_ins/n_del/n_both: images with an insertion value / a deletion "
                                               "value / both (behind Ins-Del), shown when they differ"),
        (has(lambda c: c.endswith(" best") or " best " in c), "best: better than every other method (Holm-adjusted "
                                                               "Wilcoxon test)"),
        (has(lambda c: "≈best" in c), "≈best: no method is best; not distinguishable from the best mean"),
        (has(lambda c: c.endswith("(floor)")), "(floor): a model-independent baseline, never marked best"),
        (has(lambda c: "(floor not cleared)" in c), "(floor not cleared): the mean is no better than the best floor "
                                                     "row's mean of that model"),
        (has(lambda c: c == "-"), f"-: {dash}"),
        *extra]
    used = [text for ok, text in entries if ok]
    return ("Symbols: " + "; ".join(used) + ".") if used else ""


def faithfulness_tables(runs: list[Run], expect_paper_models: bool = False, analyses: dict | None = None,
                        seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> dict[str, Table]:
    """Table 1 (CAM-based methods) and Table 4 (all methods), models side by side. ``analyses``: ``{tag:
    analyse_faithfulness(run)}`` (computed here with ``seed`` and ``resamples`` when absent). Table 4 marks the
    best method of each model and metric, or the methods not distinguishable from the best."""
    analyses = analyses if analyses is not None else {r.tag: analyse_faithfulness(r, seed, resamples) for r in runs}
    boot = next(iter(analyses.values()), {"seed": seed, "resamples": resamples})
    stats: dict[str, dict[str, dict]] = {}
    for run in runs:
        ins, dele = run.values("ins_auc"), run.values("del_auc")
        stats[run.tag] = {m: faithfulness_stats(ins.get(m), dele.get(m)) for m in set(ins) | set(dele)
                          if not is_ablation(m)}
    show_paper = any(r.tag in pub.MODELS for r in runs)
    found = set().union(*[set(s) for s in stats.values()]) if stats else set()
    vs = " (ours vs paper):" if show_paper else ":"
    specs = {
        "table1": (pub.TABLE1_TITLE.replace("Table 1:", "Table 1" + vs), pub.TABLE1_METHODS,
                   lambda m: m == "cam" or m.startswith("calm")),
        "table4": (pub.TABLE4_TITLE.replace("Table 4:", "Table 4" + vs), pub.TABLE4_METHODS, lambda m: True),
    }
    out = {}
    marks = {r.tag: {metric: sig.groups(analyses[r.tag]["comparisons"].get(metric)) for metric in sig.METRICS}
             for r in runs}
    cleared = {r.tag: floor_marks(stats[r.tag]) for r in runs}
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
            cells = [method_label(m)]
            for run in runs:
                s = stats[run.tag].get(m)
                paper = pub.faithfulness(run.tag, m)
                ci = analyses[run.tag]["cells"].get(m, {})
                group = {k: marks[run.tag][k].get(m, "") for k in sig.METRICS} if key == "table4" else {}
                clears = cleared[run.tag].get(m, {})
                if s is None:
                    cells += ["0", "-", "-", "-"]
                else:
                    cells += [_n_text(s)] + _faith_cells(s, ci, {
                        k: GROUP_MARKS.get(group.get(k, ""), "") + ("" if clears.get(k, True) else FLOOR_MARK)
                        for k in sig.METRICS})
                if run.tag in pub.MODELS:
                    cells.append(_fmt_paper(paper))
                rec = {"table": key, "model": run.tag, "profile": run.profile, "method": m, "floor": is_floor(m),
                       "paper_label": pub.PAPER_LABELS.get(m, "")}
                rec.update(s or {c: (0 if c.startswith("n_") else np.nan) for c in FAITH_COLS})
                rec.update({c: ci.get(c, np.nan) for c in CI_COLS})
                rec.update({f"{k}_group": g for k, g in group.items()})
                rec.update({f"{k}_clears_floor": clears.get(k) for k in sig.METRICS})
                rec.update(_boot_record(analyses[run.tag]))
                rec.update(dict(zip(["paper_insertion", "paper_deletion", "paper_ins_del"], paper or (np.nan,) * 3)))
                records.append(rec)
            rows.append(cells)
        groups = [f"{k}_group" for k in sig.METRICS] if key == "table4" else []
        data = pd.DataFrame(records, columns=["table", "model", "profile", "method", "floor", "paper_label"] +
                            FAITH_COLS + CI_COLS + groups + FLOOR_COLS + BOOT_COLS +
                            ["paper_insertion", "paper_deletion", "paper_ins_del"])
        notes = _profile_notes(runs, paper_columns=show_paper) + [
            "Ours: mean over images ± standard error (sample std / sqrt(n)); n = images behind the cells (shown as "
            "n_ins/n_del/n_both when they differ); Ins-Del is computed per image over the images having both. "
            "Built from the CSV files alone.", _boot_note(boot["seed"], boot["resamples"])]
        if key == "table4":
            notes.append(f"best: the best mean of the model, better than every other method (Wilcoxon signed-rank "
                         f"test on the images all methods have, Holm-adjusted p < {ALPHA:g} against each); ≈best: "
                         "no method is best, and these are not distinguishable from the one with the best mean. "
                         "Every pair is in pairwise_<model>_<metric>; mean ranks in `ranks`.")
        else:
            notes.append("Significance: see the pairwise tables (every method of Table 4, Holm-adjusted).")
        if any(is_floor(m) for m in methods):
            notes.append(FLOOR_TEXT)
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
        extra = [(show_paper, "paper: the published value (two decimals), empty where the paper has none"),
                 (any(c == "0" for r in rows for c in r[1:]), "n = 0: no CSV for this method and model")]
        out[key] = Table(key, title, header, rows, data, notes, missing, symbols_line(header, rows, extra))
    return out


def _layer_label(names: list[str] | None, i: int, n_layers: int) -> str:
    if names and len(names) == n_layers:
        return f"l{i} {names[i - 1]}"
    return f"l{i}"


def ablation_table(run: Run, analysis: dict | None = None, seed: int = DEFAULT_SEED,
                   resamples: int = DEFAULT_RESAMPLES) -> Table | None:
    """Tables 2-3 for one model: PCAM W after each fusion step and CAM W on each isolated layer (deepest first);
    PCAM W without LNorm (paper B.2, no published number) at the end. None if the run has no ablation CSVs.
    ``analysis``: :func:`analyse_faithfulness` of the run (its intervals; computed here when absent)."""
    ins, dele, ids = run.ablation_aucs()
    if not ids:
        return None
    analysis = analysis if analysis is not None else analyse_faithfulness(run, seed, resamples)
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
            ci = analysis["cells"].get(mid, {})
            cells = [label, layer, mid, _n_text(s)] + _faith_cells(s, ci)
            if has_paper:
                cells += [paper_layers[li - 1] if paper_layers and paper else "", _fmt_paper(paper)]
            rows.append(cells)
            records.append({"table": "ablation", "model": run.tag, "profile": run.profile, "method": mid,
                            "variant": label, "layer_index": li, "layer": names[li - 1] if names and
                            len(names) == n_layers else "", "paper_layer": paper_layers[li - 1] if paper_layers
                            and paper else "", **s, **{c: ci.get(c, np.nan) for c in CI_COLS},
                            **_boot_record(analysis),
                            **dict(zip(["paper_insertion", "paper_deletion", "paper_ins_del"],
                                       paper or (np.nan,) * 3))})
    notes = _profile_notes([run], paper_columns=has_paper) + [
        f"PCAM W at layer l = Poly-CAM fused from the deepest layer down to l (fusion step k = L - l + 1; at l1 it "
        f"is pcamW itself); CAM W at layer l = the map of layer l alone (Eq. 2). L = {n_layers} layers"
        + (f": {', '.join(names)} (shallow to deep)." if names and len(names) == n_layers else "."),
        "Mean ± standard error over images; n = images." +
        (" Paper columns: published values, for comparison only." if has_paper else ""),
        _boot_note(analysis["seed"], analysis["resamples"])]
    data = pd.DataFrame(records)
    extra = [(True, "l1 ... lL: the Poly-CAM layers, l1 the shallowest"),
             (has_paper, "paper: the published value, empty where the paper has none")]
    return Table(f"ablation_{run.tag}", title, header, rows, data, notes, missing,
                 symbols_line(header, rows, extra))


def sensitivity_table(runs: list[Run], expect_paper_models: bool = False, seed: int = DEFAULT_SEED,
                      resamples: int = DEFAULT_RESAMPLES) -> Table | None:
    """Table 5: mean max-sensitivity (lower is better) per method, models side by side, with bootstrap intervals
    (one resample matrix per model over its sens images). None without sens CSVs."""
    vals = {r.tag: {m: s for m, s in r.values("sens").items() if not is_ablation(m)} for r in runs}
    with_sens = [r for r in runs if vals[r.tag]]
    if not with_sens:
        return None
    ci = {}
    for r in with_sens:
        names = sorted(set().union(*[s.index.tolist() for s in vals[r.tag].values()]))
        ci[r.tag] = sig.cell_intervals(sig._frame(vals[r.tag], names), seed, resamples, LEVEL)
    found = set().union(*[set(v) for v in vals.values()])
    show_paper = any(r.tag in pub.MODELS for r in with_sens)
    methods = _method_rows(found, pub.TABLE5_METHODS, lambda m: True, show_paper)
    header = ["method"]
    for r in with_sens:
        header += [f"{r.label} n", f"{r.label} max-sensitivity ↓"]
        header += [f"{r.label} paper"] if r.tag in pub.MODELS else []
    rows, records, missing = [], [], []
    for m in methods:
        cells = [method_label(m)]
        for r in with_sens:
            n, mean, se = mean_se(vals[r.tag][m]) if m in vals[r.tag] else (0, np.nan, np.nan)
            lo, hi = (ci[r.tag][0].get(m, np.nan), ci[r.tag][1].get(m, np.nan))
            paper = pub.sensitivity(r.tag, m)
            cells += [str(n), fmt(mean, se, 4, lo, hi)] + ([_fmt_paper(paper, 4)] if r.tag in pub.MODELS else [])
            records.append({"table": "table5", "model": r.tag, "profile": r.profile, "method": m,
                            "floor": is_floor(m), "n": n,
                            "max_sensitivity": mean, "max_sensitivity_se": se, "max_sensitivity_ci_low": lo,
                            "max_sensitivity_ci_high": hi, "bootstrap_seed": seed, "bootstrap_resamples": resamples,
                            "ci_level": LEVEL, "paper_max_sensitivity": np.nan if paper is None else paper})
        rows.append(cells)
    for r in with_sens:
        absent = [m for m in pub.TABLE5_METHODS if m not in vals[r.tag]]
        if absent:
            missing.append(f"{r.tag}: no sens CSV for {', '.join(absent)}")
    for r in runs:
        if r not in with_sens:
            missing.append(f"{r.tag}: no max-sensitivity CSV (sens_{r.tag}_<method>.csv); {SENSITIVITY_HOW}")
    if expect_paper_models:
        missing += [f"model {t}: no results folder" for t in pub.MODELS if t not in vals]
    notes = _profile_notes(with_sens, paper_columns=show_paper) + [
        "Mean max-sensitivity over images ± standard error (lower is better); n = images.",
        _boot_note(seed, resamples)]
    if any(is_floor(m) for m in methods):
        notes.append("Floor rows: model-independent baselines. A map that ignores the image (centre_prior) has "
                     "max-sensitivity 0: a low value alone does not make a map faithful.")
    if show_paper:
        notes.append(f"Paper columns: published values ({pub.TABLE5_NOTE}), for comparison only.")
    extra = [(show_paper, "paper: the published value, empty where the paper has none"),
             (any(c == "0" for row in rows for c in row[1:]), "n = 0: no sens CSV for this method and model")]
    title = pub.TABLE5_TITLE.replace("Table 5:", "Table 5 (ours vs paper):" if show_paper else "Table 5:")
    return Table("table5", title, header, rows, pd.DataFrame(records), notes, missing,
                 symbols_line(header, rows, extra))


SENSITIVITY_HOW = ("score it with `--metrics sensitivity` (e.g. `python -m benchmark metrics --metrics sensitivity "
                   "--model MODEL --profile PROFILE`; it re-runs each method K + 1 times per image)")
RC_SOURCES = (("rc", "harness"), ("rc_calm", "calm"), ("rc_harness", "harness"), ("rc_custom", "custom"))


def remove_classify_table(runs: list[Run]) -> Table | None:
    """CALM's remove-and-classify: per model, method and protocol, the dataset ratio sum(top-k correct) /
    sum(random-k correct) for each erased fraction k (lower is better), from the ``rc_details`` CSVs of the metrics
    stage (protocol ``harness``) and the ``rc_<protocol>_details`` CSVs of ``remove-classify``. None without them."""
    curves = {r.tag: [(prefix, protocol, m, c) for prefix, protocol in RC_SOURCES
                      for m, c in r.curves(prefix).items() if not is_ablation(m)] for r in runs}
    with_rc = [r for r in runs if curves[r.tag]]
    if not with_rc:
        return None
    from metrics.remove_and_classify import ERASE_K, ratios_from_curves  # imports torch: only when there are rc CSVs
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
    extra = [(True, "k=f: the fraction f of the pixels erased; each cell is a ratio of counts over the n images "
                    "(no ± or interval)"), (any("nan" in c for row in rows for c in row), "nan: no image was still "
                                            "classified after erasing random pixels (ratio undefined)")]
    return Table("remove_classify", "Remove-and-classify ratio (CALM's evaluation)", header, rows,
                 pd.DataFrame(records), notes, [], symbols_line(header, rows, extra))


def randomisation_summary(df: pd.DataFrame, seed: int | None = None,
                          resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Per method, convention and step: the layer reset at that step, and n, mean, SE of each similarity; with a
    ``seed``, also the bootstrap interval of each mean (one resample matrix over the CSV's images)."""
    records = []
    for (method, conv, step), g in df.groupby(["method", "convention", "step"], sort=True):
        rec = {"method": method, "convention": conv, "step": int(step), "layer": str(g["layer"].iloc[0])}
        for sim in SIMILARITIES:
            rec[f"n_{sim}"], rec[sim], rec[f"{sim}_se"] = mean_se(g[sim])
        records.append(rec)
    out = pd.DataFrame(records)
    if seed is None or out.empty:
        return out
    keys = ["method", "convention", "step"]
    wide = df.drop_duplicates(["image"] + keys).assign(step=df["step"].astype(int)).pivot(
        index="image", columns=keys, values=list(SIMILARITIES)).sort_index()
    lo, hi = sig.cell_intervals(wide.where(np.isfinite(wide.astype(np.float64))).astype(np.float64), seed, resamples,
                                LEVEL)
    for sim in SIMILARITIES:
        idx = [(sim, r.method, r.convention, r.step) for r in out.itertuples()]
        out[f"{sim}_ci_low"] = lo.reindex(idx).to_numpy()
        out[f"{sim}_ci_high"] = hi.reindex(idx).to_numpy()
    out["bootstrap_seed"], out["bootstrap_resamples"], out["ci_level"] = seed, resamples, LEVEL
    return out


def randomisation_table(runs: list[Run], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> Table | None:
    """Summary of the cascading randomisation (paper Figures 26-28, no published numbers): per model, method and
    convention, the mean similarity at the last randomisation step (the CSV has every step)."""
    parts, rows, missing, notes_models = [], [], [], []
    for r in runs:
        df = r.randomisation()
        if df is None:
            name = r.randomisation_path.name
            missing.append(f"{r.tag}: no {name}" if not r.randomisation_path.exists() else
                           f"{r.tag}: {name} left out: it disagrees with the sanity-check units it was written from")
            continue
        summ = randomisation_summary(df, seed, resamples)
        summ.insert(0, "profile", r.profile)
        summ.insert(0, "model", r.tag)
        parts.append(summ)
        notes_models.append(r)
        images = df.groupby(["method", "convention"])["image"].nunique()
        for (method, conv), g in summ.groupby(["method", "convention"], sort=True):
            last = g.loc[g["step"].idxmax()]
            n = int(images.get((method, conv), 0))
            rows.append([r.tag, method_label(method), conv, f"{int(last['step'])} ({last['layer']})", str(n)] +
                        [fmt(last[s], last[f"{s}_se"], lo=last[f"{s}_ci_low"], hi=last[f"{s}_ci_high"])
                         + ("" if int(last[f"n_{s}"]) in (0, n) else f" (n={int(last[f'n_{s}'])})")
                         for s in SIMILARITIES])
    if not parts:
        return None
    header = ["model", "method", "convention", "last step (layer reset)", "n"] + list(SIMILARITIES)
    notes = _profile_notes(notes_models) + [
        "Similarity between the map of the trained model and the map after randomising the layers from the top "
        "down to the given step (Adebayo et al. 2018): mean ± standard error over images at the last step "
        "(everything randomised); every step is in the CSV and in the randomisation figure. The paper shows this "
        "test as images only (Figures 26-28): there is no published number.", _boot_note(seed, resamples)]
    extra = [(True, "n: images of the sanity check"),
             (any(c.endswith(")") and "(n=" in c for row in rows for c in row[5:]),
              "(n=k): the similarity is defined on k of the n images only")]
    dash = ("the similarity is undefined on every image (the Spearman and HOG correlations of a constant map, e.g. a "
            "CAM that the randomised network sets to zero, are undefined)")
    return Table("randomisation", "Cascading randomisation (sanity check)", header, rows,
                 pd.concat(parts, ignore_index=True), notes, missing, symbols_line(header, rows, extra, dash))


def _procedure_notes(a: dict) -> list[str]:
    return ["n = images that every compared method has (insertion, deletion, or both for Ins-Del); methods "
            "ordered by their mean over these images, best first (insertion and Ins-Del: higher is better; "
            "deletion: lower). Ablation ids (Tables 2-3) and the floor rows are not compared.",
            f"Intervals: 95 % percentile intervals of a paired bootstrap over images ({a['resamples']} resamples, seed "
            f"{a['seed']}; the same resamples for every method of a model, so a difference's interval is paired).",
            f"Test: {WILCOXON_TEXT} of the per-image differences (p = 1 where every difference is 0), Holm's "
            f"correction over all pairs of the model and metric; significant: Holm-adjusted p < {a['alpha']:g}."]


def ranks_table(runs: list[Run], analyses: dict) -> Table | None:
    """Per model, metric and method: the mean over the common images and the mean rank (1 = best), with their
    bootstrap intervals, and the best / not-distinguishable group. None when no model has two methods to rank."""
    rows, records, missing, used = [], [], [], []
    for r in runs:
        a = analyses[r.tag]
        for metric in sig.METRICS:
            c = a["comparisons"].get(metric)
            if c is None:
                if metric in a["skipped"]:
                    missing.append(f"{r.tag} {sig.METRIC_LABELS[metric]}: {a['skipped'][metric]}")
                continue
            used.append(r) if r not in used else None
            group = sig.groups(c)
            for j in c["order"]:
                m = c["methods"][j]
                rows.append([r.label, sig.METRIC_LABELS[metric], m, str(c["n"]),
                             fmt(c["mean"][j], None, lo=c["mean_ci"][0][j], hi=c["mean_ci"][1][j]),
                             fmt(c["rank"][j], None, 2, c["rank_ci"][0][j], c["rank_ci"][1][j]),
                             group.get(m, "")])
                records.append({"model": r.tag, "profile": r.profile, "metric": metric,
                                "higher_is_better": sig.METRICS[metric], "method": m, "n": c["n"],
                                "mean": c["mean"][j], "mean_ci_low": c["mean_ci"][0][j],
                                "mean_ci_high": c["mean_ci"][1][j], "mean_rank": c["rank"][j],
                                "rank_ci_low": c["rank_ci"][0][j], "rank_ci_high": c["rank_ci"][1][j],
                                "group": group.get(m, ""), "alpha": c["alpha"], **_boot_record(a)})
    if not records:
        return None
    header = ["model", "metric", "method", "n", "mean [95% CI]", "mean rank [95% CI]", "group"]
    notes = _profile_notes(used) + [
        "Mean rank: per image, the methods are ranked (1 = best, average ranks for ties) and the ranks averaged "
        "over images."] + _procedure_notes(analyses[used[0].tag]) + [
        "group: best = better than every other method (Holm-adjusted); otherwise the methods not distinguishable "
        "from the one with the best mean."]
    extra = [(True, "n: images every compared method has"), (True, "mean rank: 1 = best")]
    return Table("ranks", "Mean ranks and the best group (insertion, deletion, Ins-Del)", header, rows,
                 pd.DataFrame(records), notes, missing, symbols_line(header, rows, extra))


def pairwise_tables(runs: list[Run], analyses: dict) -> dict[str, Table]:
    """``pairwise_<tag>_<metric>``: every two methods of Table 4 on the same images."""
    out = {}
    for r in runs:
        a = analyses[r.tag]
        for metric, c in a["comparisons"].items():
            df = sig.pairs_frame(c)
            key = f"pairwise_{r.tag}_{metric}"
            rows = [[row.method_a, row.method_b, f"{row.mean_a:.3f}", f"{row.mean_b:.3f}",
                     fmt(row.mean_diff, None, lo=row.diff_ci_low, hi=row.diff_ci_high), f"{row.p_value:.2g}",
                     f"{row.p_holm:.2g}", sig.verdict(row._asdict(), metric)] for row in df.itertuples()]
            df.insert(0, "metric", metric)
            df.insert(0, "profile", r.profile)
            df.insert(0, "model", r.tag)
            df.insert(3, "higher_is_better", sig.METRICS[metric])
            df["alpha"] = c["alpha"]
            for k, v in {**_boot_record(a), "test": "wilcoxon signed-rank", "zero_method": "wilcox",
                         "alternative": "two-sided", "correction": "holm"}.items():
                df[k] = v
            arrow = "↑" if sig.METRICS[metric] else "↓"
            header = ["method A", "method B", f"mean A {arrow}", f"mean B {arrow}", "A - B [95% CI]", "Wilcoxon p",
                      "Holm p", "verdict"]
            notes = _profile_notes([r]) + [sig.best_sentence(c, metric, c["alpha"]), f"n = {c['n']} images."]
            if 0 < c["n"] <= 10 and 2.0 / 2 ** c["n"] >= c["alpha"]:
                notes.append(f"With n = {c['n']} images the smallest two-sided Wilcoxon p-value is 2 / 2^{c['n']} = "
                             f"{2.0 / 2 ** c['n']:.3g} >= {c['alpha']:g}: no difference can be significant.")
            notes += _procedure_notes(a) + [
                "The verdict is the test's: a bootstrap interval of a difference that excludes 0 is not a test (with "
                "few images the percentile interval is too narrow)."]
            title = f"Pairwise comparison: {sig.METRIC_LABELS[metric]} {arrow}, {r.label}"
            extra = [(True, "A - B: mean of the per-image differences"),
                     (True, f"Wilcoxon p: two-sided signed-rank p-value; Holm p: adjusted over all pairs of the model "
                            f"and metric; the verdict says a method is better where Holm p < {c['alpha']:g}")]
            out[key] = Table(key, title, header, rows, df, notes, [], symbols_line(header, rows, extra))
    return out


# ------------------------------------------------------------------------------------------------ building
def build_all(runs: list[Run], out_dir: Path, expect_paper_models: bool = False, seed: int = DEFAULT_SEED,
              resamples: int = DEFAULT_RESAMPLES) -> dict:
    """Build every table that the CSV files allow; write ``<stem>.{csv,md,tex}`` and ``tables.{md,tex}`` in
    ``out_dir``. ``seed`` and ``resamples``: the bootstrap's. Returns ``{"tables": {key: Table}, "paths": {key:
    {...}}, "missing": [...], "markdown": ..., "analyses": {tag: analyse_faithfulness(...)}}``."""
    if not runs:
        raise FileNotFoundError(f"no model folder with a csv/ folder to build tables from (looked in {out_dir.parent})"
                                + elsewhere_hint(out_dir.parent))
    from .stats import check_bootstrap

    check_bootstrap(seed, resamples)
    tables: dict[str, Table] = {}
    missing: list[str] = []
    analyses = {r.tag: analyse_faithfulness(r, seed, resamples) for r in runs}
    faith = faithfulness_tables(runs, expect_paper_models, analyses)
    tables["table1"], tables["table4"] = faith["table1"], faith["table4"]
    ranks = ranks_table(runs, analyses)
    if ranks is None:
        missing.append("ranks and pairwise tables: no model has two methods with insertion/deletion values on common "
                       "images")
    else:
        tables["ranks"] = ranks
    tables.update(pairwise_tables(runs, analyses))
    for r in runs:
        t = ablation_table(r, analyses[r.tag])
        if t is None:
            missing.append(f"Tables 2-3: {r.tag} has no Poly-CAM ablation CSVs (pcamW_stepK, camW_lI; computed with "
                           "the Poly-CAM parameter ablations=True, as in the paper profile)")
        else:
            tables[t.key] = t
    t5 = sensitivity_table(runs, expect_paper_models, seed, resamples)
    if t5 is None:
        missing.append(f"Table 5: no max-sensitivity CSV (sens_<tag>_<method>.csv) for any model: {SENSITIVITY_HOW}")
    else:
        tables["table5"] = t5
    rc = remove_classify_table(runs)
    if rc is not None:  # an optional metric (--metrics remove_classify): not listed as missing
        tables["remove_classify"] = rc
    rnd = randomisation_table(runs, seed, resamples)
    if rnd is None:
        left_out = [r.tag for r in runs if r.randomisation_path.exists()]
        missing.append("randomisation summary: " + (f"the randomisation CSV of {', '.join(left_out)} left out (it "
                                                     "disagrees with its units, above)" if left_out else
                                                     "no randomisation_<tag>.csv for any model"))
    else:
        tables["randomisation"] = rnd
    stems = {"table4": "faithfulness", "table1": "table1_cam"}
    paths = {k: t.write(out_dir, stems.get(k, k)) for k, t in tables.items()}
    disagree, unchecked = store_findings(runs)
    md = "\n".join(t.markdown(level=2) for t in tables.values())
    if disagree:
        md = f"## {DISAGREE_TITLE}\n\n" + "\n".join(f"- {m}" for m in disagree) + "\n\n" + md
    if missing:
        md += "\n## Not built\n\n" + "\n".join(f"- {m}" for m in missing) + "\n"
    if unchecked:
        md += f"\n## {UNCHECKED_TITLE}\n\n" + "\n".join(f"- {m}" for m in unchecked) + "\n"
    write_text(out_dir / "tables.md", md)
    write_text(out_dir / "tables.tex", "\n".join(t.latex() for t in tables.values()))
    return {"tables": tables, "paths": paths, "missing": missing, "markdown": out_dir / "tables.md",
            "analyses": analyses, "disagree": disagree, "unchecked": unchecked}


DISAGREE_TITLE = "CSV files left out: they disagree with the stored results they were written from"
UNCHECKED_TITLE = "Files read that nothing could vouch for"


def store_findings(runs: list[Run]) -> tuple[list[str], list[str]]:
    """(the CSV files left out because they disagree with their folder's ``metrics.h5``, the files read that no
    store could vouch for), over every file read so far, each line prefixed with its model folder."""
    disagree = [f"{r.tag}: {line}" for r in runs for line in r.check.disagree]
    unchecked = [f"{r.tag}: {line}" for r in runs for line in r.check.unchecked]
    return disagree, unchecked


def build_tables(run_dir: Path, tag: str, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES) -> dict:
    """Build the tables of one model folder in ``<run_dir>/tables/``. Returns the Table 4 (faithfulness) paths
    (``csv``, ``markdown``, ``latex``) and its data frame (``table``), plus everything :func:`build_all` returns."""
    run_dir = Path(run_dir)
    csv_dir = run_dir / "csv"
    if not csv_dir.is_dir():
        hint = "" if has_runs(run_dir.parent) else elsewhere_hint(run_dir.parent)
        raise FileNotFoundError(f"no CSV folder {csv_dir}: run the metrics stage first{hint}")
    res = build_all([load_run(run_dir, tag)], run_dir / "tables", seed=seed, resamples=resamples)
    t4 = res["tables"]["table4"]
    return {**res, **res["paths"]["table4"], "table": t4.data[[c for c in t4.data.columns if c != "table"]]}


def build_results_tables(results_dir: Path, out_dir: Path | None = None, seed: int = DEFAULT_SEED,
                         resamples: int = DEFAULT_RESAMPLES) -> dict:
    """Build the multi-model tables of every model folder under ``results_dir`` in ``<results_dir>/tables/``."""
    results_dir = Path(results_dir)
    runs = find_runs(results_dir)
    single = (results_dir / "csv").is_dir()
    return {**build_all(runs, Path(out_dir) if out_dir else results_dir / "tables", expect_paper_models=not single,
                        seed=seed, resamples=resamples), "runs": runs}
