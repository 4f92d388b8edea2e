"""HDF5 result stores that no kill, full disk or flipped byte can make lose a result or pass a wrong one, and the
run-folder lock.

One file per model run. Layout of ``maps.h5`` (``metrics.h5`` is the same with ``<metric>/<method>`` groups)::

    /names              [N] str      the image list (all of it; --limit only restricts what is computed)
    /image_status       [N] uint8    0 unchecked, 1 ok, 2 bad image (skipped), with /image_error [N] S256
    /clean/target       [N] int64    top-1 class of the clean image (the explained class)
    /clean/prob         [N] float32  its softmax probability
    /<group>/<array>    [N, ...]     per-image results, e.g. /maps/gradcam/map [N,224,224] float32
    /<group>/crc        [N] uint32   CRC-32 of the row's bytes of every array of the group (names in sorted order)
    /<group>/status     [N] uint8    0 to do, 1 done, 2 failed (reason in /<group>/error [N] S256), 3 corrupt
    attrs               JSON         store_format, provenance (root) and parameters (per group)

**Compact groups** (``--compact-maps``, :data:`COMPACT`): a group whose attributes hold ``storage`` = :data:`COMPACT`
stores its per-image maps as float16, one image per chunk, gzip level 4 after the shuffle filter (lossless on the
float16 bytes; HDF5's own filters, no extra package). Each map is stored as ``float16(map * 2**e)`` with the
power of two ``e`` (per image, in ``<array>.exp2`` [N] int16) that puts its largest |value| in [1024, 2048): scaling by
a power of two is exact, so the map keeps float16's 11 significant bits whatever its magnitude (a map of 1e-9 or
1e9 would otherwise underflow to zeros or overflow to inf); for maps within float16's normal range this equals
``float16(map)``. The CRC is taken over the stored bytes (float16 and exponents), so verification is unchanged,
and :meth:`H5Store.read_rows` gives float32 ``stored * 2**-e`` (the metrics see float16-rounded maps).
Chunks are allocated as they are written: the uncompressed float16 size of the rows still to do is reserved on disk
first (at creation, and again when a later command continues the group), so a full disk still stops the command
before HDF5 changes anything. Writing a chunk also updates the chunk index: a kill in that instant can need
``status --repair`` (the default, contiguous layout has no such instant).

**Kills.** Datasets are contiguous and allocated when created, so computing results only ever overwrites raw bytes
in place. Results and their CRC are written and flushed *before* their status bytes: a process killed at any point
leaves a readable file whose done flags name only complete results. New files are built under a temporary name and
renamed into place.

**Full disks.** The only changes of HDF5's own structure after a file exists are new groups. Before HDF5 creates one,
the bytes it needs (its datasets and a margin for the metadata) are physically allocated at the end of the file
(``posix_fallocate``); if the disk cannot hold them, nothing is written and the command stops with a message. The
datasets then lie on allocated blocks, so filling them never needs space either.

**Flipped bytes.** Every read of results goes through :meth:`H5Store.read_rows`, which checks each done row against
its CRC: a row that fails is marked ``CORRUPT`` (recomputed by the next run of its stage, listed by ``status``) and
never used. Metric values outside their metric's range are refused when written (runners/scoring.py).

**Damage from elsewhere.** :func:`repair` copies every group and every row that still reads and verifies into a new
file and moves the damaged one aside (``python -m benchmark status --repair``).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

TODO, DONE, FAILED, CORRUPT = 0, 1, 2, 3
IMAGE_FILES = "image_files"  # maps.h5 group: the content CRC of each image when first used (runners/clean.py)
MAP_CRC = "map_crc"  # per value: the CRC of the stored map it scored (a value is used only with that very map)
IMG_UNCHECKED, IMG_OK, IMG_BAD = 0, 1, 2
ERR_LEN = 256
FORMAT = 2  # root attribute ``store_format``; files of another format are refused with a message
MARGIN = 1 << 20  # bytes reserved beyond a new group's datasets for HDF5's metadata
PER_DATASET = 64 << 10
# the compact layout of map groups (``--compact-maps``): recorded as the group attribute ``storage``
COMPACT = {"dtype": "float16", "chunks": "one image", "compression": "gzip", "level": 4, "shuffle": True}
# group attributes whose absence (a group of an older harness) means a known value: the default layout, version 1
ABSENT = {"storage": None, "version": 1}
EXP2 = ".exp2"  # suffix of a compact array's per-image power-of-two exponents (hidden from array_names)
CHUNK_SLACK = 1024  # bytes per chunk beyond its uncompressed size: deflate's worst-case growth, the chunk index


class StoreError(Exception):
    """A store that cannot be used as asked (other image list, other protocol, unreadable file, no space)."""


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _create_array(parent: h5py.Group, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return parent.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)


def _create_compact(parent: h5py.Group, name: str, shape: tuple[int, ...]) -> h5py.Dataset:
    """A float16 array of :data:`COMPACT` layout: one row (image) per chunk, shuffle + gzip, chunks allocated when
    written (HDF5 does not allocate filtered chunks early)."""
    return parent.create_dataset(name, shape=shape, dtype=np.float16, chunks=(1, *shape[1:]),
                                 compression=COMPACT["compression"], compression_opts=COMPACT["level"],
                                 shuffle=COMPACT["shuffle"])


def is_compact(attrs) -> bool:
    """True for the attributes (JSON strings, as stored, or values) of a group of :data:`COMPACT` layout."""
    value = attrs.get("storage")
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return value == COMPACT


def _compact_array(shape: tuple[int, ...], dtype) -> bool:
    """The arrays a compact group stores as float16: per-image float arrays of 2 or more dimensions (the maps)."""
    return len(shape) >= 2 and np.dtype(dtype).kind == "f"


def to_float16(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(float16(values * 2**e), e)`` per row of ``values`` [B, ...], ``e`` (int16) putting each row's largest
    finite |value| in [1024, 2048) (0 for a row of zeros or non-finite values)."""
    v = np.asarray(values, dtype=np.float32)
    flat = np.abs(v.reshape(len(v), -1))
    big = np.array([r[np.isfinite(r)].max(initial=0.0) for r in flat], dtype=np.float64)
    e = np.where(big > 0, 10 - np.floor(np.log2(np.where(big > 0, big, 1.0))), 0).astype(np.int16)
    scaled = np.ldexp(v, e.reshape(-1, *([1] * (v.ndim - 1))).astype(np.int32)).astype(np.float32)
    return scaled.astype(np.float16), e


def from_float16(stored: np.ndarray, e: np.ndarray) -> np.ndarray:
    """float32 maps from :func:`to_float16`'s output (exact: a power-of-two scaling)."""
    return np.ldexp(stored.astype(np.float32), -e.astype(np.int32).reshape(-1, *([1] * (stored.ndim - 1))))


def reserve(path: Path, nbytes: int, start: int | None = None) -> None:
    """Physically allocate ``nbytes`` past the end of the file ``path`` (``posix_fallocate``), so that HDF5's next
    allocations land on blocks that exist. On failure (no space, a file size limit) the file is left as it was and
    :class:`StoreError` says what happened; HDF5 has not been touched. HDF5 gives the unused part back when the file
    is closed (it truncates the file to its end of allocation).

    ``start`` (HDF5's end of allocation, where its next allocations land) reserves from there instead of from the
    end of the file, so reservations made in one session overlap instead of adding up."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, size if start is None else min(int(start), size), max(1, int(nbytes)))
        except OSError as err:
            os.ftruncate(fd, size)
            raise StoreError(f"cannot reserve {nbytes / 2**20:.1f} MiB for new results in {path} "
                             f"({os.strerror(err.errno)}); nothing was written and every stored result is intact. "
                             "Free some space (or use another --out) and run the same command again.") from None
    finally:
        os.close(fd)


def row_crc(arrays: dict[str, np.ndarray], k: int) -> int:
    """CRC-32 of row ``k`` of every array (names in sorted order, C-order bytes)."""
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name][k]).tobytes(), crc)
    return crc


def _owner(group: str) -> str:
    """The method (``maps/<id>``) or metric (``<metric>/<map id>``) whose results a group holds."""
    parts = group.split("/")
    return parts[1] if parts[0] == "maps" and len(parts) > 1 else parts[0]


def _decode(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def stored_names(path: str | os.PathLike) -> list[str]:
    """The image list a store was made for (its ``/names``), read without opening it as a :class:`H5Store`."""
    with h5py.File(path, "r", locking=False) as f:
        return [_decode(n) for n in f["names"][()]]


class H5Store:
    """A per-image result store over a fixed image list."""

    def __init__(self, path: str | os.PathLike, names: Sequence[str] | None, attrs: dict | None = None,
                 check_attrs: Sequence[str] = (), mode: str = "a"):
        """Open ``path`` (creating it with ``names`` and root ``attrs`` if missing, unless ``mode='r'``).

        For an existing file, the image list must equal ``names`` (``None``, with ``mode='r'``: whatever list it
        holds) and every root attribute named in ``check_attrs`` must equal ``attrs``'s: results of another
        protocol are never mixed in.
        """
        if names is None and mode != "r":
            raise ValueError("a store is opened for writing over a given image list")
        self.path = Path(path)
        self.names = list(names) if names is not None else None
        self.f = None
        if not self.path.exists():
            if mode == "r":
                raise StoreError(f"{self.path} does not exist")
            self._create(attrs or {})
        try:
            self.f = h5py.File(self.path, "r" if mode == "r" else "r+", locking=False)
            stored = [_decode(n) for n in self.f["names"][()]]
            fmt = self.f.attrs.get("store_format")
        except (OSError, KeyError) as err:
            self.close()
            raise StoreError(f"{self.path} is not a readable result store ({err}). `python -m benchmark status "
                             f"--repair {self.path.parent}` moves it aside and keeps whatever can still be read; a "
                             "sharded run's `merge` rebuilds it from the shards") from None
        if fmt is None or int(fmt) != FORMAT:
            self.close()
            raise StoreError(f"{self.path} was written by an older version of the harness (store format {fmt}, "
                             f"this version reads format {FORMAT}); use another --out folder")
        if self.names is None:
            self.names = stored
        elif stored != self.names:
            self.close()
            raise StoreError(f"{self.path} was made for another image list ({len(stored)} images, first "
                             f"{stored[:2]}); use another --out folder for this list")
        for key in check_attrs:
            old, new = self.f.attrs.get(key), _json((attrs or {}).get(key))
            if old is not None and old != new:
                self.close()
                raise StoreError(f"{self.path} was made with a different {key}:\n  stored: {old}\n  asked:  {new}\n"
                                 "Use another --out folder (results of two protocols are never mixed).")

    @classmethod
    def read_only(cls, path: str | os.PathLike) -> H5Store:
        """An existing store opened read-only over the image list it holds (a :class:`StoreError` if it does not
        read)."""
        return cls(path, None, mode="r")

    def _create(self, attrs: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        n = len(self.names)
        try:
            with h5py.File(tmp, "w", locking=False) as f:
                f.attrs["store_format"] = FORMAT
                f.create_dataset("names", data=np.array(self.names, dtype=h5py.string_dtype()))
                _create_array(f, "image_status", (n,), np.uint8)[...] = IMG_UNCHECKED
                _create_array(f, "image_error", (n,), f"S{ERR_LEN}")[...] = b""
                for key, value in attrs.items():
                    f.attrs[key] = _json(value)
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot create {self.path} ({os.strerror(err.errno) if err.errno else err}); nothing "
                             "was written") from None

    # -------------------------------------------------------------------------------------------- groups
    def has_group(self, group: str) -> bool:
        return group in self.f and "status" in self.f[group]

    def groups(self, prefix: str) -> list[str]:
        if prefix not in self.f:
            return []
        return sorted(k for k, v in self.f[prefix].items() if isinstance(v, h5py.Group) and "status" in v)

    def check_group(self, group: str, attrs: dict, check: Sequence[str]) -> str | None:
        """The check of :meth:`ensure_group` on the existing ``group``, changing nothing: a :class:`StoreError` when an
        attribute named in ``check`` differs while the group holds a finished row; a line saying it will be started
        again when it differs and the group holds none; None when they are equal."""
        g = self.f[group]
        for key in check:
            old, new = g.attrs.get(key), _json(attrs.get(key))
            if old is None and key in ABSENT:
                old = _json(ABSENT[key])
            if old is None or old == new:
                continue
            if not (self.status(group) == DONE).any():
                return f"{group} held no finished row ({key} stored: {old}); started again with {key} {new}"
            if key == "storage":
                raise StoreError(f"{group} in {self.path} was stored with --compact-maps layout {old or 'none'} "
                                 f"(asked: {new if is_compact(attrs) else 'none'}); continue it with the same "
                                 "--compact-maps, or use another --out folder.")
            again = (f"Use another --out folder, or add --recompute {_owner(group)} to drop its stored results "
                     "and compute them again in this one.")
            if key == "version":
                raise StoreError(f"{group} in {self.path} was computed by version {old} of its code; this is "
                                 f"version {new}, whose results differ. {again}")
            raise StoreError(f"{group} in {self.path} was computed with different {key}:\n  stored: {old}\n"
                             f"  asked:  {new}\n{again}")
        return None

    def ensure_group(self, group: str, arrays: dict[str, tuple[tuple[int, ...], str]], attrs: dict,
                     check: Sequence[str] = ()) -> str | None:
        """Create ``group`` with per-image ``arrays`` {name: (shape after N, dtype)}, or check its attributes.

        An existing group whose attributes named in ``check`` differ is refused while it holds a finished row; one
        that holds none (every row to do or failed, e.g. parameters that failed on every image) is started again
        with the new attributes, and the return value says so (otherwise None): no result is lost. An existing group
        that holds no finished row takes ``attrs`` in any case (its ``code``: what computes its rows from now on).

        With ``attrs["storage"] == COMPACT`` the maps are stored compactly (module docstring). A key of
        :data:`ABSENT` named in ``check`` is compared even where the stored group has none (a group of an older
        harness): a group is never continued in another layout or by another version of its code; any other key
        absent from the stored group is not compared.

        The bytes of the new datasets are reserved on disk first (:func:`reserve`): a full disk stops the command
        before HDF5 changes anything. A group left incomplete by an older version (no ``status``) is rebuilt."""
        compact = is_compact(attrs)
        n = len(self.names)
        restarted = self.check_group(group, attrs, check) if self.has_group(group) else None
        if self.has_group(group) and restarted is None:
            g = self.f[group]
            if not (self.status(group) == DONE).any():  # none computed yet, or all dropped (--recompute): the group
                for key, value in attrs.items():  # takes the attributes (the code) of what computes it now
                    g.attrs[key] = _json(value)
            if is_compact(g.attrs):  # chunks are allocated when written: reserve the rows still to do
                todo = int((self.status(group) != DONE).sum())
                if todo:
                    self.f.flush()
                    reserve(self.path, todo * self._row_bytes(g) + MARGIN, start=self.f.id.get_filesize())
            return
        arrays = {name: ((shape, "f2") if compact and _compact_array(shape, dt) else (shape, dt))
                  for name, (shape, dt) in arrays.items()}
        if compact:
            arrays.update({name + EXP2: ((), "i2") for name, (shape, dt) in list(arrays.items())
                           if _compact_array(shape, dt)})
        arrays = {**arrays, "crc": ((), "u4"), "error": ((), f"S{ERR_LEN}"), "status": ((), "u1")}
        need = sum(n * int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in arrays.values())
        if compact:  # an upper bound of the compressed chunks: uncompressed float16, plus slack per chunk
            need += n * CHUNK_SLACK * sum(_compact_array(shape, dt) for shape, dt in arrays.values())
        self.f.flush()
        reserve(self.path, need + MARGIN + PER_DATASET * len(arrays) + 4096 * len(attrs),
                start=self.f.id.get_filesize() if compact else None)
        if group in self.f:  # an incomplete group (a creation interrupted by an older version): start it again
            del self.f[group]
        g = self.f.require_group(group)
        for name, (shape, dtype) in arrays.items():
            if name == "status":
                continue
            if compact and _compact_array(shape, dtype):
                _create_compact(g, name, (n, *shape))
            else:
                _create_array(g, name, (n, *shape), dtype)
        for key, value in attrs.items():
            g.attrs[key] = _json(value)
        status = _create_array(g, "status", (n,), np.uint8)
        status[...] = TODO  # last: a group exists (has_group) only once complete
        self.f.flush()
        return restarted

    def _row_bytes(self, g: h5py.Group) -> int:
        """Upper bound of the bytes one row of a compact group's chunked arrays takes on disk."""
        return sum(int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize + CHUNK_SLACK
                   for ds in g.values() if isinstance(ds, h5py.Dataset) and ds.chunks is not None)

    def array_names(self, group: str) -> list[str]:
        """The per-image result arrays of a group (``status``, ``error`` and ``crc`` excluded)."""
        return sorted(k for k, v in self.f[group].items() if isinstance(v, h5py.Dataset)
                      and k not in ("status", "error", "crc") and not k.endswith(EXP2))

    def group_attrs(self, group: str) -> dict:
        return {k: json.loads(v) for k, v in self.f[group].attrs.items()}

    def status(self, group: str) -> np.ndarray:
        return self.f[group]["status"][()] if self.has_group(group) else np.zeros(len(self.names), np.uint8)

    def errors(self, group: str) -> dict[str, str]:
        st, err = self.status(group), self.f[group]["error"][()]
        return {self.names[i]: err[i].decode(errors="replace") for i in np.flatnonzero(st == FAILED)}

    # ------------------------------------------------------------------------------------------- writes
    def write(self, group: str, indices: Sequence[int], **arrays: np.ndarray) -> None:
        """Write per-image results and their CRC, flush, then mark them done and flush again."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx)
        idx = idx[order]
        g = self.f[group]
        missing = set(self.array_names(group)) - set(arrays)
        if missing:
            raise StoreError(f"{group}: a write must give every array of the group (missing {sorted(missing)})")
        stored = {}
        for name, values in arrays.items():
            if name + EXP2 in g:  # a compact array: float16 of the map scaled by a power of two, and the exponents
                stored[name], stored[name + EXP2] = to_float16(np.asarray(values)[order])
            else:
                stored[name] = np.asarray(values, dtype=g[name].dtype)[order]
        arrays = stored
        crc = np.array([row_crc(arrays, k) for k in range(len(idx))], dtype=np.uint32)
        for run in _runs(idx):
            a, b = idx[run][0], idx[run][-1] + 1
            for name, values in arrays.items():
                g[name][a:b] = values[run]
            g["crc"][a:b] = crc[run]
            g["error"][a:b] = b""  # a row done again forgets why it failed before
        self.f.flush()
        for run in _runs(idx):
            g["status"][idx[run][0]:idx[run][-1] + 1] = DONE
        self.f.flush()

    def fail(self, group: str, index: int, reason: str, code: int = FAILED) -> None:
        g = self.f[group]
        g["error"][index] = reason.encode("utf-8", "replace")[:ERR_LEN]
        self.f.flush()
        g["status"][index] = code
        self.f.flush()

    def drop(self, group: str) -> int:
        """Mark every row of ``group`` to do (``--recompute``: its results are computed again, in place); return
        how many were done. The group keeps its arrays and attributes until :meth:`ensure_group` sees it with no
        finished row."""
        if not self.has_group(group):
            return 0
        st = self.f[group]["status"]
        n = int((st[()] == DONE).sum())
        st[...] = TODO
        self.f[group]["error"][...] = b""
        self.f.flush()
        return n

    def mark_images(self, status: dict[int, tuple[int, str]]) -> None:
        for i, (code, reason) in status.items():
            self.f["image_error"][i] = reason.encode("utf-8", "replace")[:ERR_LEN]
            self.f["image_status"][i] = code
        self.f.flush()

    # -------------------------------------------------------------------------------------------- reads
    def read(self, group: str, name: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """Raw rows of one array, unchecked (status, errors, targets; results go through :meth:`read_rows`)."""
        ds = self.f[group][name]
        if indices is None:
            return ds[()]
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and np.all(np.diff(idx) == 1):
            return ds[idx[0]:idx[-1] + 1]
        return np.stack([ds[i] for i in idx]) if len(idx) else np.empty((0, *ds.shape[1:]), ds.dtype)

    def read_rows(self, group: str, indices: Sequence[int] | None = None,
                  mark: bool = True) -> tuple[dict[str, np.ndarray], list[int]]:
        """``({array: rows}, bad)``: the rows ``indices`` (default: every done row) of every array of the group,
        and the done rows among them whose CRC does not match their bytes. With ``mark`` (a writable store), those
        rows are marked ``CORRUPT`` so the next run of their stage recomputes them. Float16 arrays (compact groups)
        are verified as stored and returned as float32 (their exponents applied, :func:`from_float16`)."""
        st = self.status(group)
        idx = np.flatnonzero(st == DONE) if indices is None else np.asarray(indices, dtype=np.int64)
        names = self.array_names(group)
        names += [name + EXP2 for name in names if name + EXP2 in self.f[group]]
        arrays = {name: self.read(group, name, idx) for name in names}
        crcs = self.read(group, "crc", idx)
        bad = [int(i) for k, i in enumerate(idx) if st[i] == DONE and row_crc(arrays, k) != int(crcs[k])]
        # compact groups: checked on the stored bytes (float16 and exponents), given as float32
        for name in [n for n in names if n.endswith(EXP2)]:
            base = name[:-len(EXP2)]
            arrays[base] = from_float16(arrays[base], arrays.pop(name))
        if bad and mark and self.f.mode == "r+":
            for i in bad:
                self.fail(group, i, "checksum mismatch: the stored bytes changed after they were written",
                          code=CORRUPT)
        return arrays, bad

    def verify(self, group: str, indices: Sequence[int] | None = None, mark: bool = True,
               block: int = 64) -> list[int]:
        """The done rows of ``group`` (or of ``indices``) whose CRC does not match, read ``block`` rows at a time
        (marked ``CORRUPT`` with ``mark`` on a writable store)."""
        st = self.status(group)
        rows = np.flatnonzero(st == DONE) if indices is None else [i for i in indices if st[i] == DONE]
        rows = np.asarray(rows, dtype=np.int64)
        bad = []
        for start in range(0, len(rows), block):
            bad += self.read_rows(group, rows[start:start + block], mark=mark)[1]
        return bad

    def attrs(self) -> dict:
        return {k: json.loads(v) for k, v in self.f.attrs.items() if k != "store_format"}

    def close(self) -> None:
        if getattr(self, "f", None) is not None:
            eoa = None
            if self.f.mode == "r+" and any(is_compact(self.f[g].attrs) for g in _compact_candidates(self.f)):
                self.f.flush()
                eoa = int(self.f.id.get_filesize())  # HDF5's end of allocation (the file is longer: reserved)
            self.f.close()
            self.f = None
            if eoa:
                _trim(self.path, eoa)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _compact_candidates(f: h5py.File) -> list[str]:
    """The map groups of a store (``maps/<id>``): where compact groups can be."""
    return [f"maps/{k}" for k, v in f["maps"].items() if isinstance(v, h5py.Group)] if "maps" in f else []


def _trim(path: Path, eoa: int) -> None:
    """Give back the reserved bytes past HDF5's end of allocation ``eoa`` of a closed store with compact groups
    (they reserve the uncompressed size of their chunks; the compressed chunks use a part of it). Only a tail that
    HDF5 never wrote (all zeros, as reserved) is cut."""
    try:
        with open(path, "r+b") as fh:
            size = os.fstat(fh.fileno()).st_size
            if not 0 < eoa < size:
                return
            fh.seek(eoa)
            while block := fh.read(8 << 20):
                if block.count(0) != len(block):
                    return
            fh.truncate(eoa)
    except OSError:
        pass  # the reservation stays: a larger file, nothing lost


def _runs(sorted_idx: np.ndarray) -> list[slice]:
    """Split sorted indices into runs of consecutive values (one contiguous write each)."""
    if len(sorted_idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
    bounds = [0, *breaks.tolist(), len(sorted_idx)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def move_aside(path: Path, why: str) -> Path | None:
    """Rename a bad file to ``<name>.<why>-<time>`` (kept for inspection, never read again)."""
    if not path.exists():
        return None
    dest = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, dest)
    return dest


def repair(path: Path) -> list[str]:
    """Salvage a damaged store: every group whose arrays, CRC, errors and status still read, with its done rows that
    verify (done), its failed rows (failed) and its rows that fail their CRC (corrupt), into a new file that
    replaces ``path``; the damaged file is moved aside. A file HDF5 cannot open at all is moved aside (nothing can
    be salvaged: the next run recomputes, a sharded run's merge rebuilds it). Returns what was done, line by line."""
    path = Path(path)
    lines = []
    try:
        src = h5py.File(path, "r", locking=False)
        names = [_decode(n) for n in src["names"][()]]
    except (OSError, KeyError) as err:
        moved = move_aside(path, "damaged")
        return [f"{path}: not readable at all ({err}); moved aside to {moved.name}; nothing salvaged (the next run "
                "recomputes it; a sharded run's `merge` rebuilds it from the shards)"]
    tmp = path.with_name(path.name + ".repair")
    try:
        reserve_like = path.stat().st_size
        with src, h5py.File(tmp, "w", locking=False) as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            dst.attrs["store_format"] = FORMAT
            dst.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
            for name in ("image_status", "image_error"):
                try:
                    data = src[name][()]
                except (OSError, KeyError):
                    data = np.zeros(len(names), np.uint8) if name == "image_status" else np.full(len(names), b"",
                                                                                              f"S{ERR_LEN}")
                    lines.append(f"{path.name}: {name} unreadable: images will be checked again")
                _create_array(dst, name, data.shape, data.dtype)[...] = data
            groups = []
            src.visititems(lambda n, o: groups.append(n) if isinstance(o, h5py.Group) and n != "" else None)
            for group in groups:
                lines.append(_salvage_group(src, dst, group, len(names), path.name))
            lines = [x for x in lines if x]
        os.replace(path, moved := path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"))
        os.replace(tmp, path)
        lines.append(f"{path}: rebuilt from what could be read ({reserve_like / 2**20:.1f} MiB before); the damaged "
                     f"file is kept as {moved.name}")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        lines.append(f"{path}: could not write the repaired copy ({err}); the file is unchanged")
    return lines


def _salvage_group(src: h5py.File, dst: h5py.File, group: str, n: int, fname: str) -> str:
    g = src[group]
    datasets = {k: v for k, v in g.items() if isinstance(v, h5py.Dataset)}
    if not datasets:
        return ""  # a parent group (maps/, insertion/): its children are salvaged on their own
    if "status" not in datasets:
        return f"{fname}:{group}: incomplete (no status): dropped; recomputed by the next run"
    try:
        data = {k: v[()] for k, v in datasets.items()}
        attrs = dict(g.attrs)
    except (OSError, KeyError) as err:
        return f"{fname}:{group}: unreadable ({err}): dropped; recomputed by the next run"
    st = data.pop("status")
    err = data.pop("error", np.full(n, b"", f"S{ERR_LEN}"))
    crc = data.pop("crc", None)
    out = dst.require_group(group)
    for k, v in attrs.items():
        out.attrs[k] = v
    for k, v in data.items():
        if is_compact(attrs) and v.dtype == np.float16 and v.ndim >= 3:
            _create_compact(out, k, v.shape)[...] = v
        else:
            _create_array(out, k, v.shape, v.dtype)[...] = v
    new_st = st.copy()
    corrupt = []
    for i in np.flatnonzero(st == DONE):
        if crc is None or row_crc(data, i) != int(crc[i]):
            new_st[i] = CORRUPT
            err[i] = b"checksum mismatch: the stored bytes changed after they were written"
            corrupt.append(i)
    _create_array(out, "crc", (n,), np.uint32)[...] = crc if crc is not None else np.zeros(n, np.uint32)
    _create_array(out, "error", (n,), f"S{ERR_LEN}")[...] = err
    _create_array(out, "status", (n,), np.uint8)[...] = new_st
    done = int((new_st == DONE).sum())
    return (f"{fname}:{group}: {done} done row(s) kept" + (f", {len(corrupt)} failed their checksum (to recompute)"
                                                          if corrupt else ""))


def lock_holder(folder: str | os.PathLike) -> str | None:
    """The pid of another process that holds the lock of ``folder`` now (a run writing it), or None. Reads only:
    the lock is never taken."""
    path = Path(folder) / ".lock"
    if not path.exists() or str(path.resolve()) in RunLock._held:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


class RunLock:
    """Exclusive lock on a run folder (``flock``: released by the kernel even when the process is killed).

    Re-entrant within a process: a command takes the lock of its folder for its whole life, and the stages it runs
    take it again without blocking themselves; another process is refused for as long as the command runs."""

    _held: dict[str, list] = {}  # path -> [fd, depth]

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self.key = str(self.path.resolve())

    def __enter__(self):
        held = RunLock._held.get(self.key)
        if held is not None:
            held[1] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"another benchmark process (pid {holder}) is writing {self.path.parent}; wait for it "
                             "to finish or use another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        RunLock._held[self.key] = [fd, 1]
        return self

    def __exit__(self, *exc):
        held = RunLock._held.get(self.key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del RunLock._held[self.key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])
