"""Faults on the sharded path, with real processes: the driver SIGKILLed at random points then resumed, a second
driver refused, corrupt and truncated shard and store files detected by name and recomputed, and methods that
raise or return NaN, infinite or constant maps recorded per image (the tables say how many images each cell used).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli
from runners.maps import run_maps
from runners.scoring import run_metrics
from runners.shards import ShardPaths, diff_runs
from runners.store import DONE, FAILED

SLOW = str(REPO / "tests/plugins/slow_saliency.py")
BROKEN = str(REPO / "tests/plugins/broken_methods.py")
FAULTY = str(REPO / "tests/plugins/faulty_methods.py")
ARGS = ["run", "--model", "efficientnet_lite0", "--profile", "quick", "--limit", "4", "--methods", "slow_saliency",
        "--metrics", "insertion", "--plugin", SLOW, "--batch-size", "1", "--no-progress", "--shards", "2"]


def _ctx(out, **kw):
    from runners.context import RunConfig, RunContext

    base = dict(model="efficientnet_lite0", profile="quick", progress=False, out=str(out))
    return RunContext(RunConfig(**{**base, **kw}))


def _start(out):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "benchmark", *ARGS, "--out", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done_rows(run_dir):
    n = 0
    for p in (run_dir / "shards" / "maps").glob("*.h5*"):
        try:
            with h5py.File(p, "r", locking=False) as f:
                n += int((f["maps/slow_saliency/status"][()] == DONE).sum())
        except (OSError, KeyError):
            pass
    return n


def _all_readable(run_dir):
    """Every store, shard and in-progress shard opens and its done rows are finite (``*.tmp``: being created)."""
    for p in list(run_dir.rglob("*.h5")) + list(run_dir.rglob("*.h5.part")):
        with h5py.File(p, "r", locking=False) as f:
            for name in ("maps/slow_saliency", "insertion/slow_saliency"):
                if name in f and "status" in f[name]:
                    done = np.flatnonzero(f[name]["status"][()] == DONE)
                    key = "map" if name.startswith("maps") else "value"
                    assert np.isfinite(f[name][key][()][done]).all(), p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process run of the same configuration."""
    ctx = _ctx(tmp_path_factory.mktemp("ref"), limit=4, methods=["slow_saliency"], metrics=["insertion"],
                   plugins=[SLOW], batch_size=1)
    run_metrics(ctx, map_ids=run_maps(ctx).produced)
    return ctx.run_dir


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The sharded run killed twice (SIGKILL) at random points, a second driver tried meanwhile, then resumed."""
    out = tmp_path_factory.mktemp("killed")
    run_dir = out / "efficientnet_lite0"
    rng = np.random.default_rng(8)  # seeded: the kill points are reproducible
    notes = {"refused": None, "kills": []}
    # kill 1: after the first map is stored, plus a random delay; the second driver is tried before it, while the
    # first is paused (SIGSTOP) so that it still holds the lock whatever the machine's speed
    proc = _start(out)
    deadline = time.time() + 3600  # a safety net: the first map comes when it comes on a busy machine
    while _done_rows(run_dir) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # the first driver holds the folder's lock, paused: the second cannot win a race
    try:
        notes["refused"] = run_cli(*ARGS, "--out", out)
    finally:
        proc.send_signal(signal.SIGCONT)
    time.sleep(rng.uniform(0, 1.5))
    notes["kills"].append(_done_rows(run_dir))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _all_readable(run_dir)
    # kill 2: at a random time after start (anywhere: start-up, maps, metrics or merge)
    proc = _start(out)
    time.sleep(rng.uniform(4, 14))
    notes["kills"].append(_done_rows(run_dir))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _all_readable(run_dir)
    notes["final"] = run_cli(*ARGS, "--out", out)
    return run_dir, notes


def test_driver_killed_at_random_points_then_resumed_equals_uninterrupted(resumed, reference):
    run_dir, notes = resumed
    assert notes["kills"][0] >= 1, "the first kill should land after a map was stored"
    final = notes["final"]
    assert final.returncode == 0, final.stderr
    line = re.search(r"slow_saliency: (\d+) computed, (\d+) already stored", final.stdout)
    computed, already = map(int, line.groups())
    assert computed + already == 4 and already >= notes["kills"][0] >= 1  # the killed runs' maps were kept
    assert "finished before" in final.stdout
    assert diff_runs(reference, run_dir) == []
    with h5py.File(run_dir / "maps.h5", "r") as f:
        assert (f["maps/slow_saliency/status"][:4] == DONE).all()
    assert len(pd.read_csv(run_dir / "csv/ins_auc_efficientnet_lite0_slow_saliency.csv", index_col=0)) == 4
    _all_readable(run_dir)


def test_second_driver_is_refused_with_a_clear_message(resumed):
    refused = resumed[1]["refused"]
    assert refused.returncode == 2
    assert "another benchmark process (pid" in refused.stderr and "is writing" in refused.stderr


def test_corrupt_and_truncated_files_are_detected_by_name_and_recomputed(resumed, reference, tmp_path):
    from runners.sharded import run_sharded

    run_dir = tmp_path / "efficientnet_lite0"
    shutil.copytree(resumed[0], run_dir)
    flipped = ShardPaths(run_dir, "maps", "slow_saliency", 0, 2).h5
    cut = ShardPaths(run_dir, "maps", "slow_saliency", 1, 2).h5
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the map data: HDF5 still opens it, the checksum does not match
    flipped.write_bytes(bytes(data))
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 2)
    (run_dir / "metrics.h5").write_bytes((run_dir / "metrics.h5").read_bytes()[:1000])  # a truncated store
    lines = []
    ctx = _ctx(tmp_path, limit=4, methods=["slow_saliency"], metrics=["insertion"], plugins=[SLOW],
                   batch_size=1, shards=2)
    res = run_sharded(ctx, ("maps", "metrics"), log=lines.append)
    text = "\n".join(lines)
    assert "corrupt shard: slow_saliency-0of2.h5: sha256 differs from its manifest" in text
    assert "corrupt shard: slow_saliency-1of2.h5:" in text and "truncated" in text
    assert f"corrupt store: {run_dir / 'metrics.h5'} is not a readable HDF5 file" in text
    assert res["reports"]["maps"].computed == {"slow_saliency": 4}  # both maps shards recomputed
    assert res["reports"]["metrics"].computed == {"insertion/slow_saliency": 0}  # its shards were fine
    aside = sorted(p.name.split(".corrupt-")[0] for p in run_dir.rglob("*.corrupt-*"))
    assert aside == ["metrics.h5", "slow_saliency-0of2.h5", "slow_saliency-0of2.json", "slow_saliency-1of2.h5",
                     "slow_saliency-1of2.json"]
    assert diff_runs(reference, run_dir) == []


def test_faulty_methods_are_recorded_per_image_and_the_tables_count_images(tmp_path):
    from benchmark.outputs.tables import faithfulness_table
    from runners.sharded import run_sharded
    from runners.status import status_text

    methods = ["nan_on_coffee", "raises_on_coffee", "const_on_coffee", "inf_on_coffee"]
    ctx = _ctx(tmp_path, limit=2, methods=methods, metrics=["insertion"], plugins=[BROKEN, FAULTY], shards=2)
    res = run_sharded(ctx, ("maps", "metrics"), log=lambda *_: None)
    assert res["errors"] == {}
    expect = {"nan_on_coffee": "map contains NaN or infinite values",
              "inf_on_coffee": "map contains NaN or infinite values",
              "const_on_coffee": "constant map (no ranking)",
              "raises_on_coffee": "RuntimeError: cannot explain espresso"}
    assert {m: res["reports"]["maps"].failed[m] for m in methods} == {m: {"coffee.png": r} for m, r in expect.items()}
    from runners.store import H5Store

    with H5Store(ctx.run_dir / "maps.h5", ctx.source.names, mode="r") as s:
        for m, reason in expect.items():
            assert s.status(f"maps/{m}")[:2].tolist() == [DONE, FAILED]
            assert s.errors(f"maps/{m}") == {"coffee.png": reason}
    table = faithfulness_table(ctx.run_dir / "csv", ctx.tag)
    assert sorted(table["method"]) == sorted(methods) and (table["n_ins"] == 1).all()
    text, _ = status_text(ctx.run_dir)
    assert "maps/const_on_coffee: 1 done, 0 missing, 1 failed" in text
    assert "failed x1: constant map (no ranking)" in text and "e.g. on coffee.png" in text
    assert "maps: 8 finished" in text
