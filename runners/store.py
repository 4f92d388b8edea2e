"""HDF5 result stores, safe against a killed process, and the run-folder lock.

One file per model run. Layout of ``maps.h5`` (``metrics.h5`` is the same with ``<metric>/<method>`` groups)::

    /names              [N] str      the image list (all of it; --limit only restricts what is computed)
    /image_status       [N] uint8    0 unchecked, 1 ok, 2 bad image (skipped), with /image_error [N] S256
    /clean/target       [N] int64    top-1 class of the clean image (the explained class)
    /clean/prob         [N] float32  its softmax probability;  /clean/status [N] uint8
    /<group>/<array>    [N, ...]     per-image results, e.g. /maps/gradcam/map [N,224,224] float32
    /<group>/status     [N] uint8    0 to do, 1 done, 2 failed (reason in /<group>/error [N] S256)
    attrs               JSON         provenance (root) and parameters (per group)

Crash safety: datasets are contiguous and allocated when created (``ALLOC_TIME_EARLY``, no fill), so computing
results only ever overwrites raw bytes in place: no HDF5 metadata changes. Results are written and flushed
*before* their status bytes, so a process killed at any point leaves a readable file whose done flags name only
complete results. New files are built under a temporary name and renamed into place. The only metadata change
after creation is adding a group (a new method), which takes milliseconds and happens before any computing.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

TODO, DONE, FAILED = 0, 1, 2
IMG_UNCHECKED, IMG_OK, IMG_BAD = 0, 1, 2
ERR_LEN = 256


class StoreError(Exception):
    """A store that cannot be used as asked (other image list, other protocol, unreadable file)."""


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _create_array(parent: h5py.Group, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return parent.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)


class H5Store:
    """A per-image result store over a fixed image list."""

    def __init__(self, path: str | os.PathLike, names: Sequence[str], attrs: dict | None = None,
                 check_attrs: Sequence[str] = (), mode: str = "a"):
        """Open ``path`` (creating it with ``names`` and root ``attrs`` if missing, unless ``mode='r'``).

        For an existing file, the image list must equal ``names`` and every root attribute named in
        ``check_attrs`` must equal ``attrs``'s: results of another protocol are never mixed in.
        """
        self.path = Path(path)
        self.names = list(names)
        if not self.path.exists():
            if mode == "r":
                raise StoreError(f"{self.path} does not exist")
            self._create(attrs or {})
        try:
            self.f = h5py.File(self.path, "r" if mode == "r" else "r+", locking=False)
        except OSError as err:
            raise StoreError(f"{self.path} is not a readable HDF5 file ({err}); move it away to start afresh") from None
        stored = [n.decode() if isinstance(n, bytes) else n for n in self.f["names"][()]]
        if stored != self.names:
            raise StoreError(f"{self.path} was made for another image list ({len(stored)} images, first "
                             f"{stored[:2]}); use another --out folder for this list")
        for key in check_attrs:
            old, new = self.f.attrs.get(key), _json((attrs or {}).get(key))
            if old is not None and old != new:
                raise StoreError(f"{self.path} was made with a different {key}:\n  stored: {old}\n  asked:  {new}\n"
                                 "Use another --out folder (results of two protocols are never mixed).")

    def _create(self, attrs: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        n = len(self.names)
        with h5py.File(tmp, "w", locking=False) as f:
            f.create_dataset("names", data=np.array(self.names, dtype=h5py.string_dtype()))
            _create_array(f, "image_status", (n,), np.uint8)[...] = IMG_UNCHECKED
            _create_array(f, "image_error", (n,), f"S{ERR_LEN}")[...] = b""
            for key, value in attrs.items():
                f.attrs[key] = _json(value)
        os.replace(tmp, self.path)

    # -------------------------------------------------------------------------------------------- groups
    def has_group(self, group: str) -> bool:
        return group in self.f and "status" in self.f[group]

    def groups(self, prefix: str) -> list[str]:
        if prefix not in self.f:
            return []
        return sorted(k for k, v in self.f[prefix].items() if isinstance(v, h5py.Group) and "status" in v)

    def ensure_group(self, group: str, arrays: dict[str, tuple[tuple[int, ...], str]], attrs: dict,
                     check: Sequence[str] = ()) -> None:
        """Create ``group`` with per-image ``arrays`` {name: (shape after N, dtype)}, or check its attributes."""
        if self.has_group(group):
            g = self.f[group]
            for key in check:
                old, new = g.attrs.get(key), _json(attrs.get(key))
                if old is not None and old != new:
                    raise StoreError(f"{group} in {self.path} was computed with different {key}:\n  stored: {old}\n"
                                     f"  asked:  {new}\nUse another --out folder, or delete that group.")
            return
        n = len(self.names)
        g = self.f.require_group(group)
        for name, (shape, dtype) in arrays.items():
            _create_array(g, name, (n, *shape), dtype)
        _create_array(g, "error", (n,), f"S{ERR_LEN}")
        for key, value in attrs.items():
            g.attrs[key] = _json(value)
        status = _create_array(g, "status", (n,), np.uint8)
        status[...] = TODO  # last: a group exists (has_group) only once complete
        self.f.flush()

    def group_attrs(self, group: str) -> dict:
        return {k: json.loads(v) for k, v in self.f[group].attrs.items()}

    def status(self, group: str) -> np.ndarray:
        return self.f[group]["status"][()] if self.has_group(group) else np.zeros(len(self.names), np.uint8)

    def errors(self, group: str) -> dict[str, str]:
        st, err = self.status(group), self.f[group]["error"][()]
        return {self.names[i]: err[i].decode(errors="replace") for i in np.flatnonzero(st == FAILED)}

    # ------------------------------------------------------------------------------------------- writes
    def write(self, group: str, indices: Sequence[int], **arrays: np.ndarray) -> None:
        """Write per-image results, flush, then mark them done and flush again (see module docstring)."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx)
        idx = idx[order]
        g = self.f[group]
        for name, values in arrays.items():
            values = np.asarray(values)[order]
            for run in _runs(idx):
                g[name][idx[run][0]:idx[run][-1] + 1] = values[run]
        self.f.flush()
        for run in _runs(idx):
            g["status"][idx[run][0]:idx[run][-1] + 1] = DONE
        self.f.flush()

    def fail(self, group: str, index: int, reason: str) -> None:
        g = self.f[group]
        g["error"][index] = reason.encode("utf-8", "replace")[:ERR_LEN]
        self.f.flush()
        g["status"][index] = FAILED
        self.f.flush()

    def mark_images(self, status: dict[int, tuple[int, str]]) -> None:
        for i, (code, reason) in status.items():
            self.f["image_error"][i] = reason.encode("utf-8", "replace")[:ERR_LEN]
            self.f["image_status"][i] = code
        self.f.flush()

    def read(self, group: str, name: str, indices: Sequence[int] | None = None) -> np.ndarray:
        ds = self.f[group][name]
        if indices is None:
            return ds[()]
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and np.all(np.diff(idx) == 1):
            return ds[idx[0]:idx[-1] + 1]
        return np.stack([ds[i] for i in idx]) if len(idx) else np.empty((0, *ds.shape[1:]), ds.dtype)

    def attrs(self) -> dict:
        return {k: json.loads(v) for k, v in self.f.attrs.items()}

    def close(self) -> None:
        if getattr(self, "f", None) is not None:
            self.f.close()
            self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _runs(sorted_idx: np.ndarray) -> list[slice]:
    """Split sorted indices into runs of consecutive values (one contiguous write each)."""
    if len(sorted_idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
    bounds = [0, *breaks.tolist(), len(sorted_idx)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class RunLock:
    """Exclusive lock on a run folder (``flock``: released by the kernel even when the process is killed)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise StoreError(f"another benchmark process (pid {holder}) is writing {self.path.parent}; wait for it "
                             "to finish or use another --out folder") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
