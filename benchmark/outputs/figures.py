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

from benchmark.core.atomic import atomic_write  # noqa: E402
from benchmark.core.csvfiles import SIMILARITIES  # noqa: E402
from benchmark.data.preprocessing import preprocess  # noqa: E402
from benchmark.data.sources import make_source  # noqa: E402
from runners.agreement import summary as agreement_summary  # noqa: E402
from runners.store import DONE, H5Store, StoreError  # noqa: E402

from .published import PAPER_LABELS  # noqa: E402
from .runs import FLOOR_METHODS, VARIANTS, Run, ablation_layer_count, is_ablation  # noqa: E402
from .tables import faithfulness_stats  # noqa: E402

POLYCAM = ["pcamp", "pcamm", "pcampm"]
CAM_GRADIENT = ["gradcam", "gradcampp", "smoothgradcampp", "layercam", "zoomcam"]
CAM_SCORE = ["scorecam", "sscam", "iscam", "cam"]
CAM_FAMILY = CAM_GRADIENT + CAM_SCORE
GRADIENT = ["inputxgrad", "integratedgradient", "smoothgrad"]
PERTURBATION = ["occlusion", "rise"]
FLOOR = list(FLOOR_METHODS)
MAX_LINES = 6  # curves per panel
# Panel title, methods. Poly-CAM: Figures 18/22; CAM-based: 19-20/23-24; gradient and perturbation: 21/25 (all
# compared with PCAM±, as in the paper); the floor (model-independent baselines) against PCAM± too. Methods of no
# group (CALM, plugins) go to the last panels, MAX_LINES - 1 at a time. At most MAX_LINES curves in a panel.
GROUPS = [("Poly-CAM (Fig. 18/22)", POLYCAM),
          ("CAM-based, gradient-weighted (Fig. 19-20/23-24)", ["pcampm"] + CAM_GRADIENT),
          ("CAM-based, score-weighted and CAM (Fig. 19-20/23-24)", ["pcampm"] + CAM_SCORE),
          ("gradient (Fig. 21/25)", ["pcampm"] + GRADIENT),
          ("perturbation (Fig. 21/25)", ["pcampm"] + PERTURBATION),
          ("floor: model-independent baselines", ["pcampm"] + FLOOR)]
# Panel order of the map comparison: the paper's Figure 5, then the others, the floor last.
MAP_ORDER = POLYCAM + ["zoomcam", "layercam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam",
                       "iscam", "cam", "inputxgrad", "integratedgradient", "smoothgrad", "occlusion", "rise"]
MAP_COLUMNS = 8  # panels per row of the maps figure (the image and its maps, wrapped)
SIGNED_CLIP = 99.5  # a signed map is drawn in [-a, a], a = this percentile of |map|
LABELS = {m: lab.replace(" (ours)", "") for m, lab in PAPER_LABELS.items()}  # the paper's names
LABELS.update({m: f"{m} (floor)" for m in FLOOR})


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _colours(methods: list[str]) -> dict:
    """Distinct colours: tab10 first, then the lighter half of tab20."""
    tab10, tab20 = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    return {m: tab10(i) if i < 10 else tab20((2 * (i - 10) + 1) % 20) for i, m in enumerate(methods)}


def curve_groups(found: set[str]) -> list[tuple[str, list[str]]]:
    """The panels of the curves figure: (title, methods) with at most :data:`MAX_LINES` methods each; the methods
    of no group (CALM, plugins) in panels of their own, with PCAM± as the reference."""
    grouped = set().union(*[set(g) for _, g in GROUPS])
    groups = [(t, [m for m in g if m in found]) for t, g in GROUPS]
    others = sorted(found - grouped)
    ref = [m for m in ["pcampm"] if m in found]
    per = MAX_LINES - len(ref)
    chunks = [others[i:i + per] for i in range(0, len(others), per)]
    for i, chunk in enumerate(chunks):
        part = f" ({i + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        groups.append((f"other methods{part}", ref + chunk))
    # a panel holding only the reference says nothing
    return [(t, ms) for t, ms in groups if ms and (ms != ref or t.startswith("Poly-CAM"))]


def _curve_label(curves: dict, m: str, reference: bool) -> str:
    """``<name>: ins <mean AUC> ↑, del <mean AUC> ↓, n=<images>`` for the legend of the curves figure."""
    auc, n = {}, 0
    for kind, df in ((k, curves[k].get(m)) for k in ("insertion", "deletion")):
        auc[kind] = f"{df.mean(axis=1).mean():.3f}" if df is not None and len(df) else "-"
        n = max(n, 0 if df is None else len(df))
    return (f"{LABELS.get(m, m)}{' (reference)' if reference else ''}: ins {auc['insertion']} ↑, "
            f"del {auc['deletion']} ↓, n={n}")


def curves_figure(run: Run, path: Path) -> Path | None:
    """Mean insertion (left) and deletion (right) curves, one row per method group (at most :data:`MAX_LINES`
    curves per panel), one legend per row outside the axes with each method's mean AUCs."""
    curves = {"insertion": run.curves("ins"), "deletion": run.curves("del")}
    found = {m for c in curves.values() for m in c if not is_ablation(m)}
    if not found:
        return None
    groups = curve_groups(found)
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 2.9 * len(groups) + 0.6), squeeze=False,
                             layout="constrained")
    for row, (title, methods) in enumerate(groups):
        colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
        handles = {}
        for col, kind in enumerate(("insertion", "deletion")):
            ax = axes[row, col]
            for m in methods:
                df = curves[kind].get(m)
                if df is None or len(df) == 0:
                    continue
                s = df.shape[1]
                x = (np.arange(s) + 1) / s
                reference = m == "pcampm" and title != GROUPS[0][0]
                line, = ax.plot(x, df.mean(axis=0).to_numpy(), "--" if reference else "-",
                                color="black" if reference else colours[m], lw=1.2 if reference else 1.7)
                handles.setdefault(m, line)
            ax.set_title(f"{kind}: {title}", fontsize=9)
            ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}", fontsize=8)
            ax.set_ylabel("softmax of the explained class", fontsize=8)
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)

        labels = [_curve_label(curves, m, m == "pcampm" and title != GROUPS[0][0]) for m in handles]
        axes[row, 1].legend(list(handles.values()), labels, fontsize=7.5, loc="center left",
                            bbox_to_anchor=(1.02, 0.5), title="mean AUC", title_fontsize=7.5, frameon=False)
    fig.suptitle(f"Mean insertion and deletion curves, {run.tag} (profile {run.profile}); legend: each method's mean "
                 "AUC over its n images", fontsize=11)
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


def is_signed(maps: np.ndarray, tol: float = 1e-3) -> bool:
    """True when maps hold values of both signs (negative below ``-tol`` times the largest magnitude): signed
    attributions (InputXGrad, IntegratedGradient, Occlusion), drawn centred at 0 rather than min-max normalised."""
    m = np.asarray(maps, dtype=np.float64)
    top = np.nanmax(np.abs(m)) if m.size else 0.0
    return bool(top > 0 and np.nanmin(m) < -tol * top and np.nanmax(m) > tol * top)


def _draw_map(ax, sal: np.ndarray, photo: np.ndarray | None, signed: bool) -> None:
    """One panel. Unsigned: min-max normalised per image, jet at alpha 0.5 over the photo. Signed: red positive,
    blue negative (RdBu_r) in [-a, a], a = the :data:`SIGNED_CLIP` percentile of |map|, over the photo in grey with
    an opacity growing with |map| (0 shows the photo)."""
    sal = sal.astype(np.float64)
    if not signed:
        lo, hi = np.nanmin(sal), np.nanmax(sal)
        sal = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
        if photo is not None:
            ax.imshow(photo)
        ax.imshow(sal, cmap="jet", alpha=0.5 if photo is not None else 1.0, vmin=0, vmax=1)
        return
    a = float(np.nanpercentile(np.abs(sal), SIGNED_CLIP)) or float(np.nanmax(np.abs(sal))) or 1.0
    v = np.clip(sal / a, -1, 1)
    rgba = plt.get_cmap("RdBu_r")((v + 1) / 2)
    if photo is not None:
        ax.imshow(photo.mean(axis=2), cmap="gray", vmin=0, vmax=1)
        rgba[..., 3] = 0.15 + 0.85 * np.abs(v)
    ax.imshow(rgba)


def maps_figure(run: Run, path: Path, n_images: int = 4, methods: list[str] | None = None,
                images: list[str] | None = None) -> tuple[Path | None, str]:
    """Figures 3/5 as a grid: for each of ``n_images`` images (or those named), the image then every method's map,
    wrapped to :data:`MAP_COLUMNS` panels a row. Unsigned maps: min-max normalised, jet over the image; signed maps
    (:func:`is_signed`): centred at 0, red positive / blue negative, said in the panel's title. The floor maps
    (model-independent baselines) come last. Returns (path or None, a note: what was left out)."""
    store = run.run_dir / "maps.h5"
    if not store.exists():
        return None, f"{run.tag}: no maps.h5"
    try:
        with H5Store.read_only(store) as st:
            names = st.names
            done = {m: st.status(f"maps/{m}") == DONE for m in st.groups("maps")}
            avail = [m for m in done if not is_ablation(m) and done[m].any()]
            order = [m for m in MAP_ORDER if m in avail] + sorted(m for m in avail if m not in MAP_ORDER + FLOOR) + \
                [m for m in FLOOR if m in avail]
            cols = [m for m in (methods or order) if m in avail]
            if not cols:
                return None, f"{run.tag}: no finished maps in maps.h5"
            all_done = np.logical_and.reduce([done[m] for m in cols])
            if images:
                wanted = [names.index(n) for n in images if n in names and all_done[names.index(n)]]
            else:
                wanted = [int(i) for i in np.flatnonzero(all_done)]
            rows, maps, passed = _verified_maps(st, cols, wanted, len(wanted) if images else n_images)
            labels = _clean_labels(st, rows)
    except StoreError as err:
        return None, f"{run.tag}: maps figure not drawn: {err}"
    corrupt = (f"{run.tag}: the maps of {', '.join(passed)} fail their checksum in maps.h5: left out of the maps "
               "figure (`python -m benchmark status` names them)") if passed else ""
    if not rows:
        return None, corrupt or f"{run.tag}: no image has a finished map for every method of the figure"
    photos, note = _input_images(run, [names[i] for i in rows])
    classes = _class_names() if labels else None
    signed = {m: is_signed(maps[m]) for m in cols}
    ncol = min(MAP_COLUMNS, len(cols) + 1)
    per_image = -(-(len(cols) + 1) // ncol)  # panel rows per image
    nrow = per_image * len(rows)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.75 * ncol, 2.0 * nrow + 0.6), squeeze=False,
                             layout="constrained")
    for r, i in enumerate(rows):
        photo = photos.get(names[i])
        panels = [axes[r * per_image + k // ncol, k % ncol] for k in range(per_image * ncol)]
        ax = panels[0]
        if photo is not None:
            ax.imshow(photo)
        else:
            ax.text(0.5, 0.5, "image not\navailable", ha="center", va="center", fontsize=7)
        label = names[i]
        if i in labels:
            t, prob = labels[i]
            cname = classes[t] if classes and t < len(classes) else f"class {t}"
            label += f"\n{cname} ({prob:.2f})"
        ax.set_title(label, fontsize=7, fontweight="bold")
        for c, m in enumerate(cols):
            ax = panels[c + 1]
            _draw_map(ax, maps[m][r], photo, signed[m])
            ax.set_title(LABELS.get(m, m) + ("\nsigned: red +, blue -" if signed[m] else ""), fontsize=7)
        for ax in panels[len(cols) + 1:]:
            ax.axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    how = "maps min-max normalised per image, jet over the image (red = most salient)"
    if any(signed.values()):
        how += (f"; signed maps centred at 0, red positive, blue negative, clipped at the {SIGNED_CLIP:g}th "
                "percentile of |map|")
    fig.suptitle(f"Saliency maps, {run.tag} (profile {run.profile}; cf. Figures 3/5)\n{how}", fontsize=9)
    return _save(fig, path), "; ".join(n for n in (note, corrupt) if n)


def _verified_maps(st: H5Store, cols: list[str], candidates: list[int], n: int):
    """``(rows, {method: [len(rows), H, W] maps}, passed)``: the first ``n`` of the ``candidates`` rows whose map of
    every method of ``cols`` verifies against its checksum (in store order), their maps, and the names of the
    candidates passed over because one did not."""
    rows, maps, passed = [], {m: [] for m in cols}, []
    for start in range(0, len(candidates), max(n, 1)):  # one block unless some maps fail their checksum
        block = sorted(candidates[start:start + max(n, 1)])
        got = {m: st.read_rows(f"maps/{m}", block, mark=False) for m in cols}
        bad = set().union(*(set(b) for _, b in got.values()))
        for k, i in enumerate(block):
            if i in bad:
                passed.append(st.names[i])
            elif len(rows) < n:
                rows.append(i)
                for m in cols:
                    maps[m].append(got[m][0]["map"][k])
        if len(rows) >= n:
            break
    return rows, {m: np.stack(v) for m, v in maps.items()} if rows else {}, passed


def _clean_labels(st: H5Store, rows: list[int]) -> dict[int, tuple[int, float]]:
    """``{row: (explained class, its probability)}`` of the ``rows`` whose clean forward is stored and verifies."""
    if not rows or not st.has_group("clean"):
        return {}
    status = st.status("clean")
    clean, bad = st.read_rows("clean", rows, mark=False)
    return {i: (int(clean["target"][k]), float(clean["prob"][k])) for k, i in enumerate(rows)
            if status[i] == DONE and i not in bad}


CONVENTIONS = {"original_top1": ("tab:blue", "-", "explaining the trained model's top-1 class"),
               "randomised_top1": ("tab:orange", "--", "explaining the randomised model's own top-1")}
MAX_TICKS = 12  # layer names on the randomisation figure's x-axis


def step_ticks(steps: list[int], layer_of, max_ticks: int = MAX_TICKS) -> tuple[list[int], list[str]]:
    """Every k-th step (and the last), k the smallest step giving at most ``max_ticks`` labels: ``step: layer``."""
    k = max(1, -(-len(steps) // max_ticks))
    shown = steps[::k]
    if steps and shown[-1] != steps[-1]:
        shown = shown[:-1] + [steps[-1]] if len(shown) >= max_ticks else shown + [steps[-1]]
    return shown, [f"{s}: {layer_of[s]}" for s in shown]


def randomisation_figure(run: Run, path: Path) -> Path | None:
    """Mean similarity (trained vs randomised model) per randomisation step: one row per method, one panel per
    similarity, one colour per convention (blue: the original top-1 class explained; orange: the randomised
    model's top-1), the band ± one standard error over images; x ticks every k-th layer."""
    df = run.randomisation()
    if df is None:
        return None
    methods = sorted(df["method"].unique())
    fig, axes = plt.subplots(len(methods), len(SIMILARITIES), figsize=(4.3 * len(SIMILARITIES),
                             3.4 * len(methods) + 0.8), squeeze=False, layout="constrained", sharey=True)
    steps = sorted(int(s) for s in df["step"].unique())
    layer_of = df.groupby("step")["layer"].first()
    ticks, labels = step_ticks(steps, {int(k): v for k, v in layer_of.items()})
    n_images = df["image"].nunique()
    for row, m in enumerate(methods):
        for ax, sim in zip(axes[row], SIMILARITIES):
            for conv, (colour, style, what) in CONVENTIONS.items():
                g = df[(df["method"] == m) & (df["convention"] == conv)].groupby("step")[sim]
                mean, se = g.mean(), g.std(ddof=1) / np.sqrt(g.count())
                if not len(mean):
                    continue
                x = mean.index.to_numpy(dtype=float)
                ax.plot(x, mean.to_numpy(), style, color=colour, marker=".", ms=3, lw=1.4, label=what)
                if np.isfinite(se.to_numpy()).any():
                    ax.fill_between(x, (mean - se).to_numpy(), (mean + se).to_numpy(), color=colour, alpha=0.15)
            ax.set_title(f"{LABELS.get(m, m)}: {sim}", fontsize=9)
            ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=6.5)
            ax.axhline(0, color="0.6", lw=0.6)
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel("similarity to the trained model's map", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step: layers re-initialised from the output down to this one", fontsize=8)
    handles, labs = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"Cascading randomisation, {run.tag}: similarity to the trained model's map (mean over "
                 f"{n_images} image(s), band ± SE; a sound method falls)", fontsize=11)
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
    ax_r.set_xlabel("mean rank over images (1 = best, left),\n95 % bootstrap interval", fontsize=8)
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
                    "bootstrap interval;\nred: worse (Holm p < {:g}), grey: not distinguishable".format(c["alpha"]),
                    fontsize=8)
    ax_d.grid(alpha=0.3)
    ax_d.margins(x=0.25)
    arrow = "higher is better" if higher_is_better else "lower is better"
    few = (f"\nwith n = {c['n']} images no difference can be significant (smallest two-sided Wilcoxon p = "
           f"2 / 2^{c['n']} = {2.0 / 2 ** c['n']:.3g})") if 0 < c["n"] <= 10 and 2.0 / 2 ** c["n"] >= c["alpha"] else ""
    fig.suptitle(f"{metric} ({arrow}), {model}: n = {c['n']} images (every method has them), bootstrap {resamples} "
                 f"resamples, seed {seed}{few}", fontsize=10)
    return _save(fig, path)


def _drop_stale(path: Path) -> str:
    """Remove a figure an earlier report drew from inputs that have changed since; say so (or ``""``)."""
    if not path.exists():
        return ""
    path.unlink()
    return f"; the older {path.name} was removed"


def run_figures(run: Run, out_dir: Path, n_images: int = 4) -> tuple[dict[str, Path], list[str]]:
    """Draw every figure the stored results of one model allow. Returns ({name: png}, notes on what is missing)."""
    out_dir = Path(out_dir)
    figs, notes = {}, []
    jobs = [("curves", lambda p: curves_figure(run, p), "no insertion/deletion details CSV"),
            ("ablation", lambda p: ablation_figure(run, p), "no Poly-CAM ablation CSVs"),
            ("randomisation", lambda p: randomisation_figure(run, p), f"no randomisation_{run.tag}.csv")]
    for name, draw, why in jobs:
        target = out_dir / f"{name}_{run.tag}.png"
        try:
            p = draw(target)
        except Exception as err:  # one broken input must not hide the other figures
            p, why = None, f"could not be drawn: {type(err).__name__}: {err}"
        if p is None:
            notes.append(f"{run.tag}: {name} figure not drawn ({why}){_drop_stale(target)}")
        else:
            figs[name] = p
    target = out_dir / f"maps_{run.tag}.png"
    try:
        p, note = maps_figure(run, target, n_images=n_images)
    except Exception as err:
        p, note = None, f"{run.tag}: maps figure could not be drawn: {type(err).__name__}: {err}"
    if p is not None:
        figs["maps"] = p
    elif note:
        note += _drop_stale(target)
    if note:
        notes.append(note if note.startswith(run.tag) else f"{run.tag}: {note}")
    return figs, notes


def agreement_line(res: dict | None) -> str:
    """The run's top-1 agreement with the authors, for the provenance table of the report."""
    if not res:
        return "not computed (no provenance entry)"
    return agreement_summary(res).removeprefix("top-1 agreement with the authors").lstrip(":' ")


def weights_sha(provenance: dict) -> str:
    """The weights' sha256 recorded in a provenance (protocol, else model description); ``unknown`` when an old
    provenance has none (never ``None``)."""
    sha = provenance.get("protocol", {}).get("weights_sha256") or provenance.get("model", {}).get("weights_sha256")
    return str(sha) if sha else "unknown"


def describe_provenance(run: Run) -> dict:
    """The provenance fields a report shows (profile, model, weights, seeds, data, versions)."""
    p = run.provenance
    prof = p.get("protocol", {})
    env = p.get("environment", {})
    vers = env.get("versions", {})
    model = p.get("model", {})
    return {"model tag": run.tag,
            "provenance.json": run.check.provenance_state(),
            "profile": prof.get("profile", {}).get("name", "unknown"),
            "protocol": json.dumps(prof.get("profile", {})) if prof else "unknown (no provenance.json)",
            "metric parameters": json.dumps(p.get("metrics", {})) if p.get("metrics") else "-",
            "weights": f"{prof.get('weights') or model.get('weights') or 'unknown'} (sha256 {weights_sha(p)})",
            "seed": prof.get("seed", "?"), "data": p.get("data", "?"),
            "image list": (f"{p.get('image_list_name')} (sha256 {str(p.get('image_list_sha256'))[:12]}...; "
                           + ("the Poly-CAM authors' list)" if p.get("image_list_is_authors") else "not the authors' "
                              "list)")) if p.get("image_list_name") else "the demo photos",
            "top-1 agreement": agreement_line(p.get("top1_agreement")),
            "limit": p.get("limit"), "Poly-CAM layers": ", ".join(run.polycam_layers() or []) or "?",
            "versions": ", ".join(f"{k} {v}" for k, v in vers.items()) or "?",
            "git commit": env.get("git_commit", "?"), "device": env.get("device", "?"),
            "written": env.get("time", "?"), "command": env.get("command", "?")}
