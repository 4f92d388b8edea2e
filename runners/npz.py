"""The Poly-CAM authors' map format: one ``<model>_<method>.npz`` per method, keys = image file names.

Export writes (224, 224) float32 maps. Import accepts (h, w), (1, h, w) and (1, 1, h, w) at any resolution,
upsampled bilinearly (align_corners=False) to the store's size, so maps published by others can be scored here;
every map is checked first (a non-numeric, empty, non-finite or constant map is recorded as failed with the
reason), and a file with no usable map is refused before anything is written.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.atomic import atomic_write, sha256_file
from benchmark.core.registry import ID_RE

from .maps import bad_maps
from .store import DONE, H5Store, StoreError


def export_npz(store: H5Store, tag: str, out_dir: Path, methods: list[str] | None = None,
               log=print) -> list[Path]:
    """One ``<tag>_<method>.npz`` per method (every done map that verifies against its checksum; the others are
    left out and said), each written atomically."""
    written = []
    for method in methods or store.groups("maps"):
        group = f"maps/{method}"
        if not store.has_group(group):
            raise StoreError(f"no maps for {method!r} in {store.path}")
        done = np.flatnonzero(store.status(group) == DONE)
        values, bad = store.read_rows(group, done, mark=False)
        if bad:
            log(f"{method}: {len(bad)} map(s) fail their checksum and are left out (e.g. {store.names[bad[0]]}); "
                "`python -m benchmark status --repair` marks them, the next run recomputes them")
        keep = {store.names[i]: values["map"][k] for k, i in enumerate(done) if int(i) not in set(bad)}
        path = atomic_write(Path(out_dir) / f"{tag}_{method}.npz", lambda fh, d=keep: np.savez(fh, **d))
        written.append(path)
    return written


def method_from_filename(path: Path, tag: str) -> str:
    stem = path.stem
    for prefix in (f"{tag}_", f"{tag.removesuffix('-random')}_"):
        if stem.startswith(prefix):
            return stem[len(prefix):].lower()
    return stem.lower()


def to_map(value: np.ndarray, size: int) -> np.ndarray:
    """One map as float32 [size, size]: (h,w), (1,h,w) or (1,1,h,w) at any resolution, upsampled bilinearly."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"map of dtype {arr.dtype}; expected numbers")
    arr = arr.astype(np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"map of shape {np.shape(value)}; expected (h,w), (1,h,w) or (1,1,h,w)")
    if arr.size == 0:
        raise ValueError(f"empty map of shape {np.shape(value)}")
    if arr.shape != (size, size):
        t = torch.from_numpy(arr)[None, None]
        arr = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return arr


def read_npz(path: Path, names: list[str], size: int) -> tuple[dict[int, np.ndarray], dict[str, str], int]:
    """``({row: map}, {key: why unusable}, keys not in the list)`` of an npz file of maps keyed by image name.

    A map is unusable when it is not a 2-D array of numbers (after dropping leading 1-dims), empty, not finite or
    constant (a constant map ranks nothing: computed constant maps are refused the same way)."""
    if not zipfile.is_zipfile(path):
        raise StoreError(f"{path} is not an npz archive (a zip of .npy arrays, as numpy.savez writes)")
    index = {n: i for i, n in enumerate(names)}
    good, bad, not_in_list = {}, {}, 0
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                i = index.get(key)
                if i is None:
                    not_in_list += 1
                    continue
                try:
                    m = to_map(npz[key], size)
                except ValueError as err:  # also object arrays: numpy refuses them without allow_pickle
                    bad[key] = str(err)
                    continue
                reason = bad_maps(m[None]).get(0)
                if reason:
                    bad[key] = reason
                else:
                    good[i] = m
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise StoreError(f"{path} cannot be read as an npz archive ({err})") from None
    return good, bad, not_in_list


def import_npz(store: H5Store, path: Path, method: str, size: int) -> dict:
    """Write the usable maps of ``path`` into ``maps/<method>`` (the others are recorded as failed, with the
    reason); return counts (imported, not in list, bad). A file with no usable map for this list is refused before
    anything is written."""
    if not ID_RE.match(method):
        raise StoreError(f"method id {method!r} must be lower-case ASCII letters, digits and '_' (use --method)")
    good, bad, not_in_list = read_npz(path, store.names, size)
    if not good:
        shown = "; ".join(f"{k}: {why}" for k, why in list(bad.items())[:3])
        raise StoreError(f"{path}: no usable map for this image list ({not_in_list} key(s) not in the list, "
                         f"{len(bad)} unusable{': ' + shown if shown else ''}); nothing imported")
    group = f"maps/{method}"
    params = {"imported_from": path.name, "sha256": sha256_file(path)}
    store.ensure_group(group, {"map": ((size, size), "f4")},
                       {"params": params, "method": {"id": method, "family": "imported", "params": params}},
                       check=["params"])
    index = {n: i for i, n in enumerate(store.names)}
    rows = sorted(good)
    store.write(group, rows, map=np.stack([good[i] for i in rows]))
    for key, why in bad.items():
        store.fail(group, index[key], why)
    return {"imported": len(rows), "not_in_list": not_in_list, "bad": len(bad)}
