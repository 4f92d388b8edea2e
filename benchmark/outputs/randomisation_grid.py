"""The grids of the paper's Figures 26-28, from the sanity check's stored units (``randomisation/*.npz``): one PNG
per image, rows = (method, convention) units stored for it, columns = the image, the trained model's map, then
each randomisation step (maps min-max normalised per tile; the explained class in the corner)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmark.core.atomic import atomic_write  # noqa: E402
from benchmark.data.preprocessing import preprocess  # noqa: E402
from runners.sanity import THUMB, load_units  # noqa: E402


def grid_path(fig_dir: Path, tag: str, image: str) -> Path:
    """``figures/randomisation_<tag>_<image>.png`` (the image name without extension, unsafe characters -> _)."""
    return Path(fig_dir) / f"randomisation_{tag}_{re.sub(r'[^A-Za-z0-9._-]', '_', Path(image).stem)}.png"


def draw_grid(units: list[dict], photo: np.ndarray | None, tag: str, name: str, path: Path) -> Path | None:
    """The grid of one image (its ``units``; ``photo`` [H,W,3] in [0,1] or None)."""
    if not units:
        return None
    layers = [str(s) for s in units[0]["layers"]]
    ncol, nrow = len(layers) + 2, len(units)
    tile = 0.9
    fig, axes = plt.subplots(nrow, ncol, figsize=(tile * ncol, tile * nrow + 0.9), squeeze=False)
    for r, u in enumerate(units):
        if photo is not None:
            axes[r, 0].imshow(photo)
        conv = "original top-1" if str(u["convention"]) == "original_top1" else "randomised top-1"
        axes[r, 0].set_ylabel(f"{u['method']}\n{conv}", fontsize=6, rotation=0, ha="right", va="center")
        for s, th in enumerate(u["thumbs"]):
            ax = axes[r, s + 1]
            ax.imshow(th.astype(np.float32), cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
            ax.text(2, THUMB - 4, str(int(u["targets"][s])), fontsize=4, color="white")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    titles = ["image", "trained"] + [f"{s}: {layer}" for s, layer in enumerate(layers, start=1)]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=5, rotation=60 if c > 1 else 0, ha="left" if c > 1 else "center")
    fig.suptitle(f"Cascading randomisation, {tag}, {name}: layers re-initialised from the output down to the "
                 "named one (class explained in the corner)", fontsize=8, y=0.995)
    fig.subplots_adjust(left=min(0.5, 1.1 / (tile * ncol)), right=0.995, bottom=0.01,
                        top=1 - 0.9 / (tile * nrow + 0.9), wspace=0.04, hspace=0.06)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def sanity_grids(run_dir: Path, tag: str, source, image_size: int, antialias: bool, images: list[str],
                 redraw: set[str] = frozenset()) -> list[Path]:
    """The grid of every image of ``images`` that has units: drawn when in ``redraw`` or when missing."""
    run_dir = Path(run_dir)
    units = load_units(run_dir / "randomisation", source.names)
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
