"""One report of a run: every table and figure, the provenance, and what is missing.

``build_report(results)`` takes a results folder (``results/<profile>``, every model folder in it) or one model
folder, builds the tables from the CSV files alone (:mod:`benchmark.outputs.tables`, written to
``<results>/tables/``), draws the figures from the stored results (:mod:`benchmark.outputs.figures`,
``<results>/figures/*.png``) and writes ``<results>/report.md`` and ``<results>/report.html`` next to them, each
through an atomic write. No model is run. ``seed`` and ``resamples`` are the bootstrap's
(:mod:`benchmark.outputs.stats`); a pairwise table with more than :data:`MAX_PAIRS` rows is shown in the report
as the best method against every other (the whole table is in ``tables/``).
"""

from __future__ import annotations

import dataclasses
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from benchmark.core.atomic import write_text

from .figures import describe_provenance, run_figures, significance_figure
from .significance import METRIC_LABELS, METRICS
from .stats import ALPHA, DEFAULT_RESAMPLES, DEFAULT_SEED
from .tables import DISAGREE_TITLE, UNCHECKED_TITLE, Table, build_results_tables, store_findings

FIGURE_CAPTIONS = {
    "curves": "Mean insertion (left) and deletion (right) curves per method group, the floor in its own row "
              "(paper Figures 18-25)",
    "ablation": "Poly-CAM after each fusion step vs CAM on each isolated layer (paper Figures 11-12)",
    "maps": "Saliency maps: each image, then every method's map (paper Figures 3/5)",
    "randomisation": "Cascading randomisation: similarity to the trained model's map per step, per method and "
                     "convention (cf. Figures 26-28)",
    "grid": "Cascading randomisation grid (paper Figures 26-28)",
    **{f"significance_{m}": f"Which differences are real ({label}): mean ranks, and paired differences to the best "
       "method" for m, label in METRIC_LABELS.items()},
}
MAX_GRIDS = 6  # randomisation grids (one per image, drawn by the sanity check) shown per model
MAX_PAIRS = 45  # pairwise rows shown in the report (10 methods); above, the best against every other
HOW_TO_READ = (
    "How to read the statistics: [lo, hi] after a mean is its 95 % bootstrap interval over images (the same "
    "resampled images for every method of a model), and two methods differ only where their pairwise table says so "
    f"(Wilcoxon signed-rank test on the same images, Holm-adjusted p < {ALPHA:g} over all pairs of the model and "
    "metric), not where their means merely differ. \"best\" marks a method that beats every other in that sense, "
    "\"≈best\" the methods not distinguishable from the best mean when none does, and the significance figures "
    "show the same at a glance. Rows marked (floor) are maps that ignore the model (random, centre, edges): the "
    "level every method should beat, never compared or marked best; \"(floor not cleared)\" marks a mean that "
    "does not beat them. Every table ends with a line explaining its symbols.")


def _report_table(t: Table) -> Table:
    """A pairwise table longer than MAX_PAIRS rows: its first rows, the best method against every other."""
    if not t.key.startswith("pairwise_") or len(t.rows) <= MAX_PAIRS:
        return t
    first = [r for r in t.rows if r[0] == t.rows[0][0]]
    return dataclasses.replace(t, rows=first, notes=t.notes + [
        f"Shown: the best method against every other ({len(first)} of {len(t.rows)} pairs); every pair is in "
        f"tables/{t.key}.csv and .md."])


def _md(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"{'#' * b[1]} {b[2]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {i}" for i in b[1]) + "\n")
        elif kind == "table":
            out.append(b[1].markdown(level=2))
        elif kind == "kv":
            cols = b[1]
            out.append("| | " + " | ".join(f"`{c}`" for c in cols) + " |\n|---|" + "---|" * len(cols))
            out.append("\n".join(f"| {k} | " + " | ".join(str(v).replace("|", "/") for v in vals) + " |"
                                 for k, vals in b[2]) + "\n")
        elif kind == "img":
            out.append(f"![{b[1]}]({b[2]})\n")
    return "\n".join(out)


def _html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
           "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
           "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            out.append(b[1].html())
        elif kind == "kv":
            out.append("<table><tr><th></th>" + "".join(f"<th>{e(c)}</th>" for c in b[1]) + "</tr>")
            out += ["<tr><th>" + e(k) + "</th>" + "".join(f"<td>{e(str(v))}</td>" for v in vals) + "</tr>"
                    for k, vals in b[2]]
            out.append("</table>")
        elif kind == "img":
            out.append(f"<figure><img src='{e(b[2])}' alt='{e(b[1])}'><figcaption>{e(b[1])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def drift_text(drift: dict) -> str:
    names = sorted({n for r in drift["methods"].values() for n in r.get("image_names", [])})
    return (f"This run computed at {drift['precision']}; the maps and metric values of {len(names)} image(s) were "
            f"computed again at fp32 (the paper protocol) and compared: largest absolute and relative map "
            f"difference, and the largest and mean absolute difference of each metric's value (AUC).")


def drift_lines(drift: dict) -> list[str]:
    """One line per map id: ``map max |d| (relative), metric max / mean |d|`` (runners/drift.py)."""
    lines = []
    for oid, r in sorted(drift["methods"].items()):
        parts = [f"`{oid}`: map max |d| {r['map_max_abs_diff']:.2e} (relative {r['map_max_rel_diff']:.2e})"]
        parts += [f"{m} max |d| {v['max_abs_diff']:.2e}, mean {v['mean_abs_diff']:.2e}"
                  for m, v in sorted(r.get("metrics", {}).items())]
        lines.append("; ".join(parts))
    return lines or ["no stored maps to compare"]


class BuiltReport(NamedTuple):
    """The report's Markdown path and the CSV files it left out because they disagree with their store."""

    path: Path
    disagree: list[str]


def build_report(results: str | Path, n_map_images: int = 4, seed: int = DEFAULT_SEED,
                 resamples: int = DEFAULT_RESAMPLES) -> BuiltReport:
    """Write ``report.md`` (and ``report.html``) in ``results`` with its tables and ``figures/``. ``results``: a
    folder of model folders (``results/<profile>``) or one model folder."""
    results = Path(results)
    built = build_results_tables(results, seed=seed, resamples=resamples)
    runs = built["runs"]
    tables: dict[str, Table] = built["tables"]
    fig_dir = results / "figures"
    figures, missing = {}, list(built["missing"])
    for run in runs:
        figs, notes = run_figures(run, fig_dir, n_images=n_map_images)
        for metric, comp in built["analyses"][run.tag]["comparisons"].items():
            try:
                figs[f"significance_{metric}"] = significance_figure(
                    comp, fig_dir / f"significance_{run.tag}_{metric}.png", run.tag, METRIC_LABELS[metric],
                    METRICS[metric], seed, resamples)
            except Exception as err:  # one broken input must not hide the other figures
                notes.append(f"{run.tag}: significance figure ({metric}) could not be drawn: "
                             f"{type(err).__name__}: {err}")
        figures[run.tag] = figs
        missing += notes
    for t in tables.values():
        missing += [f"{t.title.split(':')[0]}: {m}" for m in t.missing]
    grids = {r.tag: sorted((r.run_dir / "figures").glob(f"randomisation_{r.tag}_*.png")) for r in runs}
    drifts = {r.tag: r.drift() for r in runs}
    disagree, unchecked = store_findings(runs)  # the curves the figures read and the drift are judged too

    title = f"Saliency benchmark report: {results}"
    n_images = {}
    for run in runs:
        t4 = tables["table4"].data
        n = t4[t4["model"] == run.tag][["n_ins", "n_del"]].to_numpy()
        n_images[run.tag] = f"{int(n.min())}-{int(n.max())}" if n.size and n.min() != n.max() else \
            (str(int(n.max())) if n.size else "0")
    blocks: list[tuple] = [
        ("h", 1, title),
        ("p", f"Built {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `python -m benchmark report`: "
              "tables from the CSV files alone, figures from the CSV files and the stored maps; no model was run. "
              "Published values of the Poly-CAM paper are in columns marked \"paper\", for comparison only."),
        ("p", "Models: " + "; ".join(f"`{r.tag}` (profile `{r.profile}`, images per method: {n_images[r.tag]})"
                                      for r in runs) + "."),
        *([("h", 2, DISAGREE_TITLE), ("ul", disagree)] if disagree else []),
        ("h", 2, "Contents"),
        ("ul", [t.title for t in tables.values()] +
         [f"{FIGURE_CAPTIONS[k]} - {tag}" for tag, figs in figures.items() for k in figs] +
         [f"{FIGURE_CAPTIONS['grid']} - {tag} ({len(g)} image(s))" for tag, g in grids.items() if g]),
        ("h", 2, "Provenance"),
    ]
    prov = [describe_provenance(r) for r in runs]
    keys = list(prov[0]) if prov else []
    blocks.append(("kv", [r.tag for r in runs], [(k, [p[k] for p in prov]) for k in keys]))
    blocks.append(("p", HOW_TO_READ))
    for t in tables.values():
        blocks.append(("table", _report_table(t)))
    for run in runs:
        drift = drifts[run.tag]
        if drift is None:
            continue
        try:  # an unchecked file (no fp32 arrays next to it) may lack fields
            text, lines = drift_text(drift), drift_lines(drift)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            missing.append(f"{run.tag}: precision_drift.json lacks what the report reads ({type(err).__name__}: "
                           f"{err}); `python -m benchmark run --drift-images N` writes it again")
            continue
        blocks += [("h", 2, f"Precision drift - {run.tag}"), ("p", text), ("ul", lines)]
    blocks.append(("h", 2, "Figures"))
    for run in runs:
        for key, path in figures[run.tag].items():
            caption = f"{FIGURE_CAPTIONS[key]} - {run.tag}"
            blocks += [("h", 3, caption), ("img", caption, path.relative_to(results).as_posix())]
        for path in grids[run.tag][:MAX_GRIDS]:
            caption = f"{FIGURE_CAPTIONS['grid']} - {run.tag}, {path.stem[len(f'randomisation_{run.tag}_'):]}"
            blocks += [("h", 3, caption), ("img", caption, path.relative_to(results).as_posix())]
        if len(grids[run.tag]) > MAX_GRIDS:
            blocks.append(("p", f"{len(grids[run.tag]) - MAX_GRIDS} more randomisation grids in "
                                f"{run.run_dir / 'figures'}."))
    blocks += [("h", 2, "What is missing"), ("ul", missing or ["nothing: every table and figure was built"])]
    if unchecked:
        blocks += [("h", 2, UNCHECKED_TITLE), ("ul", unchecked)]
    blocks += [("h", 2, "Files"),
               ("p", f"Tables as CSV, Markdown and LaTeX: {results / 'tables'}; figures: {fig_dir}; per-image "
                     "values: <model>/csv/.")]
    md_path = results / "report.md"
    write_text(md_path, _md(blocks))
    write_text(results / "report.html", _html(blocks, title))
    return BuiltReport(md_path, disagree)
