"""The Poly-CAM authors' map format: one ``<model>_<method>.npz`` per method, keys = image file names.

Export writes (224, 224) float32 maps. Import accepts (h, w), (1, h, w) and (1, 1, h, w) at any resolution,
upsampled bilinearly (align_corners=False) to the store's size, so maps published by others can be scored here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.atomic import sha256_file

from .store import DONE, H5Store, StoreError

_ID = re.compile(r"^[a-z][a-z0-9_]*$")


def export_npz(store: H5Store, tag: str, out_dir: Path, methods: list[str] | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for method in methods or store.groups("maps"):
        group = f"maps/{method}"
        if not store.has_group(group):
            raise StoreError(f"no maps for {method!r} in {store.path}")
        done = np.flatnonzero(store.status(group) == DONE)
        maps = store.read(group, "map", done)
        path = out_dir / f"{tag}_{method}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{store.names[i]: maps[k] for k, i in enumerate(done)})
        tmp.replace(path)
        written.append(path)
    return written


def method_from_filename(path: Path, tag: str) -> str:
    stem = path.stem
    for prefix in (f"{tag}_", f"{tag.removesuffix('-random')}_"):
        if stem.startswith(prefix):
            return stem[len(prefix):].lower()
    return stem.lower()


def to_map(value: np.ndarray, size: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"map of shape {np.shape(value)}; expected (h,w), (1,h,w) or (1,1,h,w)")
    if arr.shape != (size, size):
        t = torch.from_numpy(arr)[None, None]
        arr = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return arr


def import_npz(store: H5Store, path: Path, method: str, size: int) -> dict:
    """Write the maps of ``path`` into ``maps/<method>``; return counts (imported, not in list, bad)."""
    if not _ID.match(method):
        raise StoreError(f"method id {method!r} must be lower-case ASCII letters, digits and '_' (use --method)")
    group = f"maps/{method}"
    params = {"imported_from": path.name, "sha256": sha256_file(path)}
    store.ensure_group(group, {"map": ((size, size), "f4")},
                       {"params": params, "method": {"id": method, "family": "imported", "params": params}},
                       check=["params"])
    index = {n: i for i, n in enumerate(store.names)}
    counts = {"imported": 0, "not_in_list": 0, "bad": 0}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            i = index.get(key)
            if i is None:
                counts["not_in_list"] += 1
                continue
            try:
                m = to_map(npz[key], size)
            except ValueError as err:
                store.fail(group, i, str(err))
                counts["bad"] += 1
                continue
            if not np.isfinite(m).all():
                store.fail(group, i, "map contains NaN or infinite values")
                counts["bad"] += 1
                continue
            store.write(group, [i], map=m[None])
            counts["imported"] += 1
    return counts


__all__ = ["export_npz", "import_npz", "method_from_filename", "DONE"]
