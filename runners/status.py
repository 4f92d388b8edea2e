"""``python -m benchmark status FOLDER``: what a results folder holds, what is missing, what failed and why.

Read-only (safe while a run is going on). For every run folder (a folder with ``maps.h5``, ``metrics.h5`` or
``shards/``) under FOLDER: per map id and per metric/map id of the merged stores, the images done / failed /
missing (missing = not done and not failed among the images the run asked for, ``limit`` in provenance.json)
with the first failure reasons; then the shard files per stage: finished, in progress, corrupt or of another
configuration (by name), moved aside, and the tasks that raised, with their error.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from . import shards as sh
from .store import DONE, FAILED, IMG_BAD

SHOW_REASONS = 3


def find_run_dirs(folder: Path, depth: int = 3) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder {folder}")
    marks = ("maps.h5", "metrics.h5", "shards")
    if any((folder / m).exists() for m in marks):
        return [folder]
    if depth == 0:
        return []
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("csv", "tables", "npz")):
        out += find_run_dirs(sub, depth - 1)
    return out


def _limit(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "provenance.json").read_text()).get("config", {}).get("limit")
    except (OSError, ValueError):
        return None


def _store_lines(path: Path, limit: int | None) -> list[str]:
    if not path.exists():
        return [f"  {path.name}: not there yet"]
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        return [f"  {path.name}: CORRUPT (not a readable HDF5 file: {err}); the next run or merge moves it aside "
                "and rebuilds it"]
    lines = []
    with f:
        n = len(f["names"])
        asked = np.arange(min(n, limit) if limit else n)
        bad = f["image_status"][()][asked] == IMG_BAD if "image_status" in f else np.zeros(len(asked), bool)
        head = f"  {path.name}: {len(asked)} image(s) asked"
        head += f", {int(bad.sum())} bad (skipped)" if bad.any() else ""
        lines.append(head)
        groups = []
        f.visititems(lambda name, obj: groups.append(name) if isinstance(obj, h5py.Group) and "status" in obj
                     and name != "clean" else None)
        for g in sorted(groups):
            st = f[g]["status"][()][asked]
            done, failed = int((st == DONE).sum()), int((st == FAILED).sum())
            missing = int(((st != DONE) & (st != FAILED) & ~bad).sum())
            lines.append(f"    {g}: {done} done, {missing} missing, {failed} failed")
            if failed:
                err = f[g]["error"][()][asked]
                reasons = Counter(err[k].decode(errors="replace") for k in np.flatnonzero(st == FAILED))
                names = [f["names"][k] for k in np.flatnonzero(st == FAILED)[:SHOW_REASONS]]
                names = [x.decode() if isinstance(x, bytes) else x for x in names]
                for reason, count in reasons.most_common(SHOW_REASONS):
                    lines.append(f"      failed x{count}: {reason}")
                lines.append(f"      e.g. on {', '.join(names)}")
    return lines


def _shard_lines(run_dir: Path, verify: bool) -> list[str]:
    root = run_dir / "shards"
    if not root.is_dir():
        return []
    lines = ["  shards:"]
    for stage in sh.STAGES:
        folder = root / stage
        if not folder.is_dir():
            continue
        states: Counter = Counter()
        notes = []
        for h5 in sorted(folder.glob("*.h5")):
            man = sh._read_json(h5.with_suffix(".json"))
            if man is None:
                states["corrupt"] += 1
                notes.append(f"corrupt: {h5.name}: no readable manifest")
                continue
            name, (i, n) = man["task"]["name"], map(int, man["task"]["shard"].split("/"))
            state, why = sh.check_shard(sh.ShardPaths(run_dir, stage, name, i, n), None, verify=verify)
            states[state] += 1
            if state != "done":
                notes.append(f"{state}: {why}")
        parts = sorted(folder.glob("*.h5.part"))
        aside = sorted(p for p in folder.iterdir() if ".corrupt-" in p.name or ".stale-" in p.name)
        failed = sorted(folder.glob("*.failed.json"))
        lines.append(f"    {stage}: {states['done']} finished, {len(parts)} in progress or interrupted, "
                     f"{states['corrupt']} corrupt, {len(failed)} failed, {len(aside)} file(s) moved aside")
        lines += [f"      {x}" for x in notes]
        lines += [f"      in progress or interrupted: {p.name}" for p in parts[:10]]
        for p in failed:
            rec = sh._read_json(p) or {}
            err = (rec.get("error") or "unreadable record").splitlines()[0]
            lines.append(f"      FAILED {p.name[:-len('.failed.json')]}: {err}")
        lines += [f"      moved aside: {p.name}" for p in aside[:10]]
        lines += [f"      {x}" for x in _missing_shards(folder)]
    return lines


def _missing_shards(folder: Path) -> list[str]:
    """Per (task name, split n): the shard numbers with no finished file (none started, running, or failed)."""
    import re

    seen: dict[tuple[str, int], set[int]] = {}
    finished: dict[tuple[str, int], set[int]] = {}
    for p in folder.iterdir():
        m = re.match(r"^(.+)-(\d+)of(\d+)\.(h5|h5\.part|failed\.json)$", p.name)
        if m:
            key = (m.group(1).replace("__", "/"), int(m.group(3)))
            seen.setdefault(key, set())
            if m.group(4) == "h5":
                finished.setdefault(key, set()).add(int(m.group(2)))
    out = []
    for (name, n), _ in sorted(seen.items()):
        missing = sorted(set(range(n)) - finished.get((name, n), set()))
        if missing:
            out.append(f"{name}: shard(s) {', '.join(map(str, missing[:20]))}{' ...' if len(missing) > 20 else ''}"
                       f" of {n} not finished")
    return out


def status_text(folder: str | Path, verify: bool = True) -> str:
    """The status report of a results folder (one run folder, or a folder of them)."""
    out = []
    for run_dir in find_run_dirs(Path(folder)):
        out.append(f"{run_dir}:")
        limit = _limit(run_dir)
        out += _store_lines(run_dir / "maps.h5", limit)
        out += _store_lines(run_dir / "metrics.h5", limit)
        out += _shard_lines(run_dir, verify)
        lock = run_dir / ".lock"
        if lock.exists():
            import fcntl
            import os

            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                out.append(f"  running now: pid {os.pread(fd, 64, 0).decode(errors='replace').strip()} holds the lock")
            finally:
                os.close(fd)
    if not out:
        return f"{folder}: no run folder (maps.h5, metrics.h5 or shards/) found"
    return "\n".join(out)
