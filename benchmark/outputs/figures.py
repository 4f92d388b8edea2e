"""The paper's figures, with matplotlib (Agg), from stored results.

* :func:`curves_figure` (paper Figures 18-25): mean insertion and deletion curves per method group, from the
  ``{ins,del}_details_<tag>_<method>.csv`` files; x = fraction of pixels inserted/deleted, ``(s + 1) / S``.
* :func:`ablation_figure` (Figures 11-12): insertion, deletion and Ins-Del of Poly-CAM after each fusion step and
  of CAM on each isolated layer, last layer to first, from the ``*_auc_*`` files.
* :func:`maps_figure` (Figures 3/5): rows images, columns methods, the map (min-max normalised per image) as a jet
  overlay on the model-input image; reads ``maps.h5`` and, for the photo, the data source in ``provenance.json``
  (without it the maps are drawn alone, and the figure says so).
* :func:`randomisation_figure` (the numbers behind Figures 26-28): mean similarity per randomisation step.
* :func:`significance_figure` (no peer has it): for one model and metric, the methods' mean ranks with their
  bootstrap intervals, and each method's paired difference to the best one with its interval, coloured by
  whether the Holm-adjusted Wilcoxon test separates them (:mod:`benchmark.outputs.stats`).

Every function returns the PNG path, or None when its inputs are absent, and never runs a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.core.atomic import atomic_write  # noqa: E402
from benchmark.data.preprocessing import preprocess  # noqa: E402
from benchmark.data.sources import make_source  # noqa: E402
from runners.agreement import summary as agreement_summary  # noqa: E402

from .published import PAPER_LABELS  # noqa: E402
from .tables import (  # noqa: E402
    SIMILARITIES,
    VARIANTS,
    Run,
    ablation_layer_count,
    faithfulness_stats,
    is_ablation,
    read_randomisation,
)

POLYCAM = ["pcamp", "pcamm", "pcampm"]
CAM_FAMILY = ["gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "iscam", "zoomcam", "layercam", "cam"]
GRADIENT = ["inputxgrad", "integratedgradient", "smoothgrad"]
PERTURBATION = ["occlusion", "rise"]
# Panel title, methods. Poly-CAM: Figures 18/22; CAM-based: 19-20/23-24; gradient and perturbation: 21/25 (all
# compared with PCAM±, as in the paper). Methods of no group (CALM, plugins) go to a last panel.
GROUPS = [("Poly-CAM (Fig. 18/22)", POLYCAM),
          ("CAM-based (Fig. 19-20/23-24)", POLYCAM + CAM_FAMILY),
          ("gradient (Fig. 21/25)", ["pcampm"] + GRADIENT),
          ("perturbation (Fig. 21/25)", ["pcampm"] + PERTURBATION)]
# Column order of the map comparison: the paper's Figure 5, then the others.
MAP_ORDER = POLYCAM + ["zoomcam", "layercam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam",
                       "iscam", "cam", "inputxgrad", "integratedgradient", "smoothgrad", "occlusion", "rise"]
LABELS = {m: lab.replace(" (ours)", "") for m, lab in PAPER_LABELS.items()}  # the paper's names


def read_curves(run: Run, prefix: str) -> dict[str, pd.DataFrame]:
    """``{method: [images, S] DataFrame}`` from ``<prefix>_details_<tag>_<method>.csv``."""
    pattern = f"{prefix}_details_{run.tag}_"
    out = {}
    for path in sorted(run.csv_dir.glob(f"{pattern}*.csv")):
        method = path.name[len(pattern):-4]
        out[method] = pd.read_csv(path, index_col=0).astype(np.float64)
    return out


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _colours(methods: list[str]) -> dict:
    """Distinct colours: tab10 first, then the lighter half of tab20."""
    tab10, tab20 = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    return {m: tab10(i) if i < 10 else tab20((2 * (i - 10) + 1) % 20) for i, m in enumerate(methods)}


def curves_figure(run: Run, path: Path) -> Path | None:
    """Mean insertion (top row) and deletion (bottom row) curves, one column per method group."""
    curves = {"insertion": read_curves(run, "ins"), "deletion": read_curves(run, "del")}
    found = {m for c in curves.values() for m in c if not is_ablation(m)}
    if not found:
        return None
    grouped = set().union(*[set(g) for _, g in GROUPS])
    groups = [(t, [m for m in g if m in found]) for t, g in GROUPS]
    others = sorted(found - grouped)
    if others:
        groups.append(("other methods", [m for m in ["pcampm"] if m in found] + others))
    groups = [(t, ms) for t, ms in groups if ms]
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False, layout="constrained")
    colours = _colours(sorted(found))
    for col, (title, methods) in enumerate(groups):
        for row, kind in enumerate(("insertion", "deletion")):
            ax = axes[row, col]
            for m in methods:
                df = curves[kind].get(m)
                if df is None or len(df) == 0:
                    continue
                s = df.shape[1]
                x = (np.arange(s) + 1) / s
                mean = df.mean(axis=0).to_numpy()
                style = "-" if m in POLYCAM else "--"
                ax.plot(x, mean, style, color=colours[m], lw=1.6,
                        label=f"{LABELS.get(m, m)} (AUC {df.mean(axis=1).mean():.3f}, n={len(df)})")
            ax.set_title(f"{kind}: {title}", fontsize=9)
            ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}", fontsize=8)
            ax.set_ylabel("softmax of the explained class")
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6.5, loc="best")
    fig.suptitle(f"Mean insertion and deletion curves, {run.tag} (profile {run.profile})", fontsize=11)
    return _save(fig, path)


def ablation_figure(run: Run, path: Path) -> Path | None:
    """Figures 11-12: insertion, deletion and Ins-Del per layer, last layer to first (left to right): Poly-CAM
    fused down to that layer (solid) and CAM on that layer alone (dashed), mean ± SE."""
    ins, dele, ids = run.ablation_aucs()
    if not ids:
        return None
    n = ablation_layer_count(ids)
    names = run.polycam_layers()
    names = names if names and len(names) == n else [f"l{i}" for i in range(1, n + 1)]
    xs = np.arange(n)  # x = 0: the last (deepest) layer
    ticks = [names[n - 1 - k] for k in range(n)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    colours = {"p": "tab:red", "m": "tab:blue", "pm": "tab:green"}
    for w, sign in VARIANTS.items():
        pc = [f"pcam{w}" if k == n - 1 else f"pcam{w}_step{k + 1}" for k in range(n)]
        cam = [f"cam{w}_l{n - k}" for k in range(n)]
        for mids, style, label in ((pc, "-o", f"PCAM{sign}"), (cam, "--s", f"CAM{sign}")):
            st = [faithfulness_stats(ins.get(m), dele.get(m)) for m in mids]
            for ax, key in zip(axes, ("insertion", "deletion", "ins_del")):
                y = np.array([s[key] for s in st])
                e = np.array([s[f"{key}_se"] for s in st])
                if np.isfinite(y).any():
                    ax.errorbar(xs, y, yerr=np.where(np.isfinite(e), e, 0), fmt=style, color=colours[w],
                                label=label, ms=4, capsize=2, lw=1.3)
    for ax, title in zip(axes, ("Insertion ↑", "Deletion ↓", "Ins-Del ↑")):
        ax.set_xticks(xs, ticks, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("layer (last to first; PCAM: fused from the last layer down to it)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Poly-CAM vs CAM on isolated layers, {run.tag} (profile {run.profile}; Figures 11-12)")
    return _save(fig, path)


def _class_names() -> list[str] | None:
    """ImageNet class names, read from torchvision's ``models/_meta.py`` as text (importing torchvision takes
    seconds); None if it cannot be found (the figure then shows class indices)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("torchvision")
        text = (Path(spec.submodule_search_locations[0]) / "models" / "_meta.py").read_text()
        start = text.index("_IMAGENET_CATEGORIES = [") + len("_IMAGENET_CATEGORIES = ")
        names = ast.literal_eval(text[start:text.index("]", start) + 1])
        return list(names) if len(names) == 1000 else None
    except Exception:  # names are a nicety: the figure works without them
        return None


def _input_images(run: Run, names: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """The model-input images (224x224, [0,1]) of ``names`` from the data source recorded in provenance.json."""
    cfg = run.provenance.get("config", {})
    prof = run.provenance.get("protocol", {}).get("profile", {})
    data = run.provenance.get("data_source", {}).get("data") or cfg.get("data") or "demo"
    try:
        source = make_source(data, run.provenance.get("image_list") or cfg.get("image_list"))
        size, antialias = int(prof.get("image_size", 224)), bool(prof.get("antialias", False))
        out = {n: preprocess(source.open(n), size, antialias).permute(1, 2, 0).numpy() for n in names}
        return out, ""
    except Exception as err:  # the data may live on another machine: draw the maps without the photo
        return {}, f"images not drawn under the maps: data source {data!r} not readable here ({err})"


def maps_figure(run: Run, path: Path, n_images: int = 4, methods: list[str] | None = None,
                images: list[str] | None = None) -> tuple[Path | None, str]:
    """Figures 3/5: ``n_images`` images (or those named) as rows, methods as columns, jet overlay on the image.
    Returns (path or None, a note: what was left out)."""
    import h5py

    store = run.run_dir / "maps.h5"
    if not store.exists():
        return None, f"{run.tag}: no maps.h5"
    with h5py.File(store, "r", locking=False) as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]
        done = {m: f[f"maps/{m}/status"][()] == 1 for m in (f["maps"] if "maps" in f else {})}
        avail = [m for m in done if not is_ablation(m) and done[m].any()]
        order = [m for m in MAP_ORDER if m in avail] + sorted(m for m in avail if m not in MAP_ORDER)
        cols = [m for m in (methods or order) if m in avail]
        if not cols:
            return None, f"{run.tag}: no finished maps in maps.h5"
        all_done = np.logical_and.reduce([done[m] for m in cols])
        if images:
            rows = [names.index(n) for n in images if n in names and all_done[names.index(n)]]
        else:
            rows = list(np.flatnonzero(all_done)[:n_images])
        if not rows:
            return None, f"{run.tag}: no image has a finished map for every method of the figure"
        maps = {m: f[f"maps/{m}/map"][sorted(rows)] for m in cols}
        targets = f["clean/target"][()] if "clean/target" in f else None
        probs = f["clean/prob"][()] if "clean/prob" in f else None
    rows = sorted(rows)
    photos, note = _input_images(run, [names[i] for i in rows])
    classes = _class_names() if targets is not None else None
    fig, axes = plt.subplots(len(rows), len(cols) + 1, figsize=(1.6 * (len(cols) + 1), 1.75 * len(rows)),
                             squeeze=False)
    for r, i in enumerate(rows):
        photo = photos.get(names[i])
        ax = axes[r, 0]
        if photo is not None:
            ax.imshow(photo)
        else:
            ax.text(0.5, 0.5, "image not\navailable", ha="center", va="center", fontsize=7)
        label = names[i]
        if targets is not None:
            t = int(targets[i])
            cname = classes[t] if classes and t < len(classes) else f"class {t}"
            label += f"\n{cname}" + (f" ({probs[i]:.2f})" if probs is not None else "")
        ax.set_ylabel(label, fontsize=6.5)
        for c, m in enumerate(cols):
            ax = axes[r, c + 1]
            sal = maps[m][r].astype(np.float64)
            lo, hi = np.nanmin(sal), np.nanmax(sal)
            sal = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
            if photo is not None:
                ax.imshow(photo)
                ax.imshow(sal, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(sal, cmap="jet", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(LABELS.get(m, m), fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Saliency maps, {run.tag} (profile {run.profile}; cf. Figures 3/5)", fontsize=9)
    return _save(fig, path), note


def randomisation_figure(run: Run, path: Path) -> Path | None:
    """Mean similarity (trained vs randomised model) per randomisation step, one panel per similarity; solid =
    explaining the original top-1 class, dashed = the randomised model's top-1."""
    csv = run.csv_dir / f"randomisation_{run.tag}.csv"
    if not csv.exists():
        return None
    df = read_randomisation(csv)
    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(4.2 * len(SIMILARITIES), 4.2), squeeze=False,
                             layout="constrained")
    methods = sorted(df["method"].unique())
    colours = _colours(methods)
    steps = sorted(df["step"].unique())
    layer_of = df.groupby("step")["layer"].first()
    for ax, sim in zip(axes[0], SIMILARITIES):
        for m in methods:
            for conv, style in (("original_top1", "-"), ("randomised_top1", "--")):
                g = df[(df["method"] == m) & (df["convention"] == conv)].groupby("step")[sim].mean()
                if len(g):
                    ax.plot(g.index, g.to_numpy(), style, color=colours[m], marker=".",
                            label=f"{LABELS.get(m, m)} ({conv})")
        ax.set_title(sim)
        ax.set_xticks(steps, [str(layer_of[s]) for s in steps], rotation=60, ha="right", fontsize=6)
        ax.set_xlabel("layers randomised from the top down to")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Cascading randomisation, {run.tag}: similarity to the trained model's map (mean over images)")
    return _save(fig, path)


def significance_figure(comparison: dict, path: Path, model: str, metric: str, higher_is_better: bool,
                        seed: int, resamples: int) -> Path:
    """Left: mean rank per method (1 = best) with its 95 % bootstrap interval, best mean at the top. Right: how
    far each method is behind the best one (best - method for higher-is-better metrics, method - best otherwise;
    0 = as good), with the paired bootstrap interval; red = worse than the best (Holm-adjusted Wilcoxon p < alpha),
    grey = not distinguishable from it."""
    c = comparison
    ms, order, best = c["methods"], c["order"], c["best"]
    sign = 1.0 if higher_is_better else -1.0
    y = np.arange(len(order))[::-1]  # best at the top
    fig, (ax_r, ax_d) = plt.subplots(1, 2, figsize=(11, 1.4 + 0.32 * len(order)), sharey=True, layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 1.3]})
    rank = c["rank"][order]
    lo, hi = c["rank_ci"][0][order], c["rank_ci"][1][order]
    ax_r.errorbar(rank, y, xerr=[rank - lo, hi - rank], fmt="o", color="tab:blue", capsize=3, ms=5)
    ax_r.set_yticks(y, [ms[j] for j in order], fontsize=8)
    ax_r.set_xlabel("mean rank over images (1 = best, left), 95 % bootstrap interval", fontsize=8)
    pad = 0.05 * len(order)  # left = better, as on the right panel; the ranks' range, within 1..k
    ax_r.set_xlim(max(0.7, np.nanmin(lo) - pad), min(len(order) + 0.3, np.nanmax(hi) + pad))
    ax_r.grid(alpha=0.3)
    pair_of = {b: q for q, (a, b) in enumerate(c["pairs"]) if a == best}
    ax_d.axvline(0, color="k", lw=0.8)
    for yy, j in zip(y, order):
        if j == best:
            ax_d.plot([0], [yy], "*", color="tab:green", ms=11)
            ax_d.annotate("best mean" + (": better than all" if c["best_significant"] else ""), (0, yy),
                          xytext=(8, -3), textcoords="offset points", fontsize=7, color="tab:green")
            continue
        q = pair_of[j]
        gap = sign * c["diff"][q]
        g_lo, g_hi = sorted((sign * c["diff_ci"][0][q], sign * c["diff_ci"][1][q]))
        worse = c["better"][q] == best
        colour = "tab:red" if worse else "0.55"
        ax_d.errorbar([gap], [yy], xerr=[[gap - g_lo], [g_hi - gap]], fmt="o", color=colour, capsize=3, ms=5,
                      mfc=colour if worse else "white")
        ax_d.annotate(f"Holm p={c['p_holm'][q]:.2g}", (g_hi, yy), xytext=(5, -3), textcoords="offset points",
                      fontsize=7, color=colour)
    ax_d.set_xlabel(f"behind the best ({'best - method' if higher_is_better else 'method - best'}), paired 95 % "
                    "bootstrap interval; red: worse (Holm p < {:g}), grey: not distinguishable".format(c["alpha"]),
                    fontsize=8)
    ax_d.grid(alpha=0.3)
    ax_d.margins(x=0.25)
    arrow = "higher is better" if higher_is_better else "lower is better"
    few = (f"\nwith n = {c['n']} images no difference can be significant (smallest two-sided Wilcoxon p = "
           f"2 / 2^{c['n']} = {2.0 / 2 ** c['n']:.3g})") if 0 < c["n"] <= 10 and 2.0 / 2 ** c["n"] >= c["alpha"] else ""
    fig.suptitle(f"{metric} ({arrow}), {model}: n = {c['n']} images (every method has them), bootstrap {resamples} "
                 f"resamples, seed {seed}{few}", fontsize=10)
    return _save(fig, path)


def run_figures(run: Run, out_dir: Path, n_images: int = 4) -> tuple[dict[str, Path], list[str]]:
    """Draw every figure the stored results of one model allow. Returns ({name: png}, notes on what is missing)."""
    out_dir = Path(out_dir)
    figs, notes = {}, []
    jobs = [("curves", lambda p: curves_figure(run, p), "no insertion/deletion details CSV"),
            ("ablation", lambda p: ablation_figure(run, p), "no Poly-CAM ablation CSVs"),
            ("randomisation", lambda p: randomisation_figure(run, p), f"no randomisation_{run.tag}.csv")]
    for name, draw, why in jobs:
        try:
            p = draw(out_dir / f"{name}_{run.tag}.png")
        except Exception as err:  # one broken input must not hide the other figures
            p, why = None, f"could not be drawn: {type(err).__name__}: {err}"
        if p is None:
            notes.append(f"{run.tag}: {name} figure not drawn ({why})")
        else:
            figs[name] = p
    try:
        p, note = maps_figure(run, out_dir / f"maps_{run.tag}.png", n_images=n_images)
    except Exception as err:
        p, note = None, f"{run.tag}: maps figure could not be drawn: {type(err).__name__}: {err}"
    if p is not None:
        figs["maps"] = p
    if note:
        notes.append(note if note.startswith(run.tag) else f"{run.tag}: {note}")
    return figs, notes


def agreement_line(res: dict | None) -> str:
    """The run's top-1 agreement with the authors, for the provenance table of the report."""
    if not res:
        return "not computed (no provenance entry)"
    return agreement_summary(res).removeprefix("top-1 agreement with the authors").lstrip(":' ")


def describe_provenance(run: Run) -> dict:
    """The provenance fields a report shows (profile, model, weights, seeds, data, versions)."""
    p = run.provenance
    prof = p.get("protocol", {})
    env = p.get("environment", {})
    vers = env.get("versions", {})
    model = p.get("model", {})
    return {"model tag": run.tag, "profile": prof.get("profile", {}).get("name", "unknown"),
            "protocol": json.dumps(prof.get("profile", {})) if prof else "unknown (no provenance.json)",
            "metric parameters": json.dumps(p.get("metrics", {})) if p.get("metrics") else "-",
            "weights": f"{prof.get('weights', model.get('weights', '?'))} (sha256 {model.get('weights_sha256', '?')})",
            "seed": prof.get("seed", "?"), "data": p.get("data", "?"),
            "image list": (f"{p.get('image_list_name')} (sha256 {str(p.get('image_list_sha256'))[:12]}...; "
                           + ("the Poly-CAM authors' list)" if p.get("image_list_is_authors") else "not the authors' "
                              "list)")) if p.get("image_list_name") else "the demo photos",
            "top-1 agreement": agreement_line(p.get("top1_agreement")),
            "limit": p.get("limit"), "Poly-CAM layers": ", ".join(run.polycam_layers() or []) or "?",
            "versions": ", ".join(f"{k} {v}" for k, v in vers.items()) or "?",
            "git commit": env.get("git_commit", "?"), "device": env.get("device", "?"),
            "written": env.get("time", "?"), "command": env.get("command", "?")}
