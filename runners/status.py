"""``python -m benchmark status FOLDER``: what a results folder holds, what is missing, what failed and why, and
what is damaged (exit status 1); ``--repair`` salvages damaged stores.

Read-only without ``--repair`` (safe while a run is going on). Unless ``--no-verify``, every done row is checked
against its CRC and every finished shard against its sha256. For every run folder (a folder with ``maps.h5``,
``metrics.h5`` or ``shards/``) under FOLDER: per map id and per metric/map id of the merged stores, the images
done / failed / missing (missing = not done and not failed among the images the run asked for, ``limit`` in
provenance.json) with the first failure reasons; then the shard files per stage: finished, in progress, corrupt or
of another configuration (by name), moved aside, and the tasks that raised, with their error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from benchmark.core.atomic import read_json_object

from . import shards as sh
from . import store as store_mod
from .csvcheck import check_folder
from .store import CORRUPT, DONE, FAILED, IMG_BAD

SHOW_REASONS = 3
MOVED_ASIDE = ("corrupt", "stale", "recompute")  # why a file was moved aside (runners.store.move_aside), by name


def find_run_dirs(folder: Path, depth: int = 3) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder {folder}")
    marks = ("maps.h5", "metrics.h5", "shards")
    if any((folder / m).exists() for m in marks) or _rc_records(folder):
        return [folder]
    if depth == 0:
        return []
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("csv", "tables", "npz")):
        out += find_run_dirs(sub, depth - 1)
    return out


def _rc_records(folder: Path) -> list[Path]:
    """The ``remove_classify_<protocol>.json`` records of ``remove-classify`` (a folder of its own, no stores)."""
    return sorted(folder.glob("remove_classify_*.json"))


def _limit(run_dir: Path) -> int | None:
    try:
        return read_json_object(run_dir / "provenance.json").get("config", {}).get("limit")
    except (OSError, ValueError):
        return None


def _store_lines(path: Path, limit: int | None, verify: bool, repair: bool) -> tuple[list[str], int]:
    """The report of one store and the number of problems found in it (an unreadable file, rows failing their
    checksum). With ``repair`` an unreadable or damaged file is salvaged (:func:`runners.store.repair`) and rows
    failing their checksum are marked to be recomputed; what was done is reported, and is no longer a problem."""
    if not path.exists():
        return [f"  {path.name}: not there yet"], 0
    try:
        f = h5py.File(path, "r", locking=False)
        fmt = f.attrs.get("store_format")
        f["names"].shape  # noqa: B018
    except (OSError, KeyError) as err:
        if repair:
            return [f"  {path.name}: REPAIRED: " + line for line in store_mod.repair(path)], 0
        return [f"  {path.name}: CORRUPT (not a readable store: {err}); `python -m benchmark status --repair "
                f"{path.parent}` moves it aside and keeps whatever can be read (a sharded run's `merge` rebuilds it "
                "from the shards)"], 1
    lines, problems = [], 0
    with f:
        if fmt is None or int(fmt) != store_mod.FORMAT:
            return [f"  {path.name}: written by an older version (store format {fmt}; this version reads "
                    f"{store_mod.FORMAT}): not used; give new runs another --out folder"], 1
        n = len(f["names"])
        asked = np.arange(min(n, limit) if limit else n)
        bad = f["image_status"][()][asked] == IMG_BAD if "image_status" in f else np.zeros(len(asked), bool)
        head = f"  {path.name}: {len(asked)} image(s) asked"
        head += f", {int(bad.sum())} bad (skipped)" if bad.any() else ""
        lines.append(head)
        groups, incomplete = [], []
        f.visititems(lambda name, obj: groups.append(name) if isinstance(obj, h5py.Group) and "status" in obj
                     and name not in ("clean", store_mod.IMAGE_FILES) else None)
        f.visititems(lambda name, obj: incomplete.append(name) if isinstance(obj, h5py.Group) and "status" not in obj
                     and any(isinstance(v, h5py.Dataset) for v in obj.values()) else None)
        names = [x.decode() if isinstance(x, bytes) else x for x in f["names"][()]]
    if incomplete:
        if repair:
            with h5py.File(path, "r+", locking=False) as f:
                for g in incomplete:
                    del f[g]
            lines += [f"    {g}: REPAIRED: incomplete (no status): dropped; recomputed by the next run"
                      for g in incomplete]
        else:
            problems += len(incomplete)
            lines += [f"    {g}: incomplete (no status: an interrupted creation); `status --repair` drops it"
                      for g in incomplete]
    checked: dict[str, list[int]] = {}
    if verify and groups:
        with store_mod.H5Store(path, names, mode="a" if repair else "r") as st:
            for g in sorted(groups):
                checked[g] = st.verify(g, mark=repair)
    with h5py.File(path, "r", locking=False) as f:
        for g in sorted(groups):
            st = f[g]["status"][()][asked]
            done, failed = int((st == DONE).sum()), int((st == FAILED).sum())
            corrupt = int((st == CORRUPT).sum())
            missing = int(((st != DONE) & (st != FAILED) & (st != CORRUPT) & ~bad).sum())
            line = f"    {g}: {done} done, {missing} missing, {failed} failed"
            lines.append(line + (f", {corrupt} corrupt (checksum mismatch: recomputed by the next run)"
                                 if corrupt else ""))
            if checked.get(g):
                if repair:
                    lines.append(f"      REPAIRED: {len(checked[g])} row(s) failed their checksum: marked corrupt, "
                                 "recomputed by the next run")
                else:
                    problems += 1
                    lines.append(f"      {len(checked[g])} done row(s) fail their checksum (the stored bytes changed):"
                                 " never used; the next run recomputes them (`status --repair` marks them now)")
            if failed:
                err = f[g]["error"][()][asked]
                reasons = Counter(err[k].decode(errors="replace") for k in np.flatnonzero(st == FAILED))
                failed_names = [names[k] for k in np.flatnonzero(st == FAILED)[:SHOW_REASONS]]
                for reason, count in reasons.most_common(SHOW_REASONS):
                    lines.append(f"      failed x{count}: {reason}")
                lines.append(f"      e.g. on {', '.join(failed_names)}")
    return lines, problems


def _shard_lines(run_dir: Path, verify: bool) -> tuple[list[str], int]:
    root = run_dir / "shards"
    if not root.is_dir():
        return [], 0
    lines, problems = ["  shards:"], 0
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
        aside = _moved_aside(folder)
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
        problems += states["corrupt"]
    return lines, problems


def _moved_aside(folder: Path, suffix: str = "") -> list[Path]:
    """The files of ``folder`` moved aside (:func:`runners.store.move_aside`: ``<name>.<why>-<time>``), whose
    names end in ``suffix`` before the mark."""
    return sorted(p for p in folder.iterdir() if any(f"{suffix}.{why}-" in p.name for why in MOVED_ASIDE))


def _unit_lines(run_dir: Path) -> list[str]:
    """The sanity check's units: how many, and those moved aside (damaged, or dropped by ``--recompute``)."""
    folder = run_dir / "randomisation"
    if not folder.is_dir():
        return []
    units = list(folder.glob("*.npz"))
    aside = _moved_aside(folder, ".npz")
    return ([f"  randomisation/: {len(units)} sanity-check unit(s), {len(aside)} moved aside"] +
            [f"    moved aside: {p.name}" for p in aside[:10]])


def _csv_lines(run_dir: Path) -> tuple[list[str], int]:
    """The CSV files against the stores they were written from (:func:`runners.csvcheck.check_folder`): one line
    when they agree, one per file that disagrees (a problem) or that no store vouches for."""
    check, n = check_folder(run_dir)
    if not n:
        return [], 0
    lines = [f"  csv/: {n} file(s) read; {len(check.disagree)} disagreement(s) with what they were written from "
             "(metrics.h5, maps.h5, the sanity units, precision_drift.npz, remove-classify's records)"]
    lines += [f"    DISAGREES: {line}" for line in check.disagree]
    lines += [f"    {line}" for line in check.unchecked]
    return lines, len(check.disagree)


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


def status_text(folder: str | Path, verify: bool = True, repair: bool = False) -> tuple[str, int]:
    """The status report of a results folder (one run folder, or a folder of them) and its exit status: 0 when
    nothing is damaged, 1 when a store or shard is unreadable or rows fail their checksum (``repair`` fixes what it
    can first: see :func:`_store_lines`)."""
    out, problems = [], 0
    for run_dir in find_run_dirs(Path(folder)):
        out.append(f"{run_dir}:")
        limit = _limit(run_dir)
        records = _rc_records(run_dir)
        rc_only = bool(records) and not any((run_dir / m).exists() for m in ("maps.h5", "metrics.h5"))
        if rc_only:
            out.append("  remove-classify results: " + ", ".join(p.name for p in records))
        for store in () if rc_only else ("maps.h5", "metrics.h5"):
            lines, p = _store_lines(run_dir / store, limit, verify, repair)
            out += lines
            problems += p
        lines, p = _shard_lines(run_dir, verify)
        out += lines
        problems += p
        out += _unit_lines(run_dir)
        if verify:
            lines, p = _csv_lines(run_dir)
            out += lines
            problems += p
        holder = store_mod.lock_holder(run_dir)
        if holder is not None:
            out.append(f"  running now: pid {holder} holds the lock")
    if not out:
        return f"{folder}: no run folder (maps.h5, metrics.h5, shards/ or remove_classify_*.json) found", 1
    if problems:
        out.append(f"{problems} problem(s) found" + ("" if repair else ": see above (`status --repair` fixes what "
                                                                       "it can)"))
    return "\n".join(out), (1 if problems else 0)
