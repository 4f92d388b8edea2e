"""The grids of the paper's Figures 26-28, from the sanity check's stored units (``randomisation/*.npz``): one PNG
per image, one block of rows per (method, convention) unit stored for it: the image, the trained model's map, then
each randomisation step, wrapped to :data:`GRID_COLUMNS` tiles a row (maps min-max normalised per tile; the
explained class in the corner)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmark.core.atomic import atomic_write  # noqa: E402
from benchmark.data.preprocessing import preprocess  # noqa: E402
from runners.sanity_units import THUMB, load_units  # noqa: E402


def grid_path(fig_dir: Path, tag: str, image: str) -> Path:
    """``figures/randomisation_<tag>_<image>.png`` (the image name without extension, unsafe characters -> _)."""
    return Path(fig_dir) / f"randomisation_{tag}_{re.sub(r'[^A-Za-z0-9._-]', '_', Path(image).stem)}.png"


GRID_COLUMNS = 13  # tiles per row: the image, the trained map and the steps wrap after this many


def draw_grid(units: list[dict], photo: np.ndarray | None, tag: str, name: str, path: Path,
              columns: int = GRID_COLUMNS) -> Path | None:
    """The grid of one image (its ``units``; ``photo`` [H,W,3] in [0,1] or None): per unit, the image, the trained
    model's map, then each step ``s: layer``, wrapped to ``columns`` tiles a row."""
    if not units:
        return None
    layers = [str(s) for s in units[0]["layers"]]
    tiles = len(layers) + 2
    ncol = min(columns, tiles)
    per_unit = -(-tiles // ncol)
    nrow = per_unit * len(units)
    tile = 1.05
    titles = ["image", "trained"] + [f"{s}: {layer}" for s, layer in enumerate(layers, start=1)]
    fig, axes = plt.subplots(nrow, ncol, figsize=(tile * ncol + 1.0, (tile + 0.18) * nrow + 0.5), squeeze=False)
    for r, u in enumerate(units):
        panels = [axes[r * per_unit + k // ncol, k % ncol] for k in range(per_unit * ncol)]
        if photo is not None:
            panels[0].imshow(photo)
        conv = "original top-1" if str(u["convention"]) == "original_top1" else "randomised top-1"
        for b in range(per_unit):
            axes[r * per_unit + b, 0].set_ylabel(f"{u['method']}\n{conv}" + ("" if b == 0 else "\n(cont.)"),
                                                 fontsize=6.5, rotation=0, ha="right", va="center")
        for s, th in enumerate(u["thumbs"]):
            ax = panels[s + 1]
            ax.imshow(th.astype(np.float32), cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
            ax.text(3, THUMB - 5, str(int(u["targets"][s])), fontsize=5, color="white")
        for k, ax in enumerate(panels):
            if k < tiles:
                ax.set_title(titles[k], fontsize=5)
            else:
                ax.axis("off")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Cascading randomisation, {tag}, {name}: step s = layers re-initialised from the output down to "
                 "the named one (explained class in the corner)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / ((tile + 0.18) * nrow + 0.5)), h_pad=0.25, w_pad=0.1)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def sanity_grids(run_dir: Path, tag: str, source, image_size: int, antialias: bool, images: list[str],
                 redraw: set[str] = frozenset()) -> list[Path]:
    """The grid of every image of ``images`` that has units: drawn when in ``redraw`` or when missing."""
    run_dir = Path(run_dir)
    units = load_units(run_dir / "randomisation", source.names).units  # damaged ones: moved aside by the stage
    out = []
    for name in images:
        path = grid_path(run_dir / "figures", tag, name)
        if name not in redraw and path.exists():
            out.append(path)
            continue
        mine = [u for u in units if str(u["image"]) == name]
        if not mine:
            continue
        photo = preprocess(source.open(name), image_size, antialias).permute(1, 2, 0).numpy()
        drawn = draw_grid(mine, photo, tag, name, path)
        if drawn is not None:
            out.append(drawn)
    return out
