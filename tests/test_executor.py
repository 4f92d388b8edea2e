"""Scale-out on Ray: a local Ray cluster of two CPU workers runs a tiny benchmark in shards; the merged stores and
CSV files equal a one-process run; a worker SIGKILLed mid-task is retried and resumes from its shard."""

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import ray  # the [test] extra installs it
import torch

from conftest import REPO
from runners.maps import run_maps
from runners.scoring import run_metrics
from runners.shards import ShardPaths, diff_runs, shard_rows
from runners.store import DONE

TINY = dict(model="efficientnet_lite0", profile="quick", limit=3, metrics=["insertion"], progress=False)
FAULTY = str(REPO / "tests/plugins/faulty_methods.py")


def _ctx(out, **kw):
    from runners.context import RunConfig, RunContext

    return RunContext(RunConfig(**{**TINY, "out": str(out), **kw}))


def _local_run(out, methods, **kw):
    """The reference: the plain one-process stages, writing straight into maps.h5 / metrics.h5."""
    ctx = _ctx(out, methods=methods, **kw)
    maps = run_maps(ctx)
    run_metrics(ctx, map_ids=maps.produced)
    return ctx.run_dir


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local Ray for the whole module (its start-up is paid once): 2 logical CPUs per task (the tasks take
    torch's thread count of this process), room for two tasks at once."""
    marker = tmp_path_factory.mktemp("kill") / "killed"
    os.environ["RAY_DEDUP_LOGS"] = "0"
    ray.init(num_cpus=2 * max(2, torch.get_num_threads()), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                                       "KILL_ONCE_MARKER": str(marker)}})
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _local_run(tmp_path_factory.mktemp("local"), ["gradcam", "inputxgrad", "kill_once"], plugins=[FAULTY])


def test_shards_are_contiguous_and_batch_aligned():
    assert shard_rows(range(10), 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    # 10 images, batches of 4 -> 3 batches [0-3] [4-7] [8-9]; two shards hold whole batches
    assert shard_rows(range(10), 2, align=4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
    # fewer batches than shards: split by image
    assert shard_rows(range(3), 2, align=32) == [[0], [1, 2]]
    assert sum(shard_rows(range(7), 7, align=2), []) == list(range(7))


def test_ray_two_workers_equal_the_local_run(ray_cluster, reference, tmp_path):
    from runners.sharded import run_sharded

    # the workers run torch with as many threads as this process: oneDNN picks its convolution kernels by thread
    # count, and an input gradient through ReLU6 boundaries then moves by up to ~1e-3 (InputXGrad, one image: 1 vs
    # 2 threads), far above float32 rounding
    threads = torch.get_num_threads()
    ctx = _ctx(tmp_path, methods=["gradcam", "inputxgrad"], executor="ray", shards=2, threads=threads)
    res = run_sharded(ctx, ("maps", "metrics"), log=lambda *_: None)
    assert res["errors"] == {}
    assert res["reports"]["maps"].computed == {"gradcam": 3, "inputxgrad": 3}
    assert res["reports"]["metrics"].computed == {"insertion/gradcam": 3, "insertion/inputxgrad": 3}
    tasks = res["tasks"]
    assert len(tasks) == 2 + 2 * 2 + 2 * 2  # clean, maps and metrics tasks of 2 shards each
    pids = set()
    for t in tasks:  # every task left a finished shard holding only its own images
        with h5py.File(t.paths().h5, "r") as f:
            assert len(f["names"]) == len(t.rows)
        pids.add(json.loads(t.paths().manifest.read_text())["pid"])
    assert len(pids) == 2, "two Ray workers should have shared the tasks"
    # maps.h5 / metrics.h5 / CSV equal those of the local run (its kill_once results aside)
    assert diff_runs(reference, ctx.run_dir, atol=1e-5, ignore=["kill_once"]) == []  # float32 tolerance
    with h5py.File(ctx.run_dir / "maps.h5", "r") as f:
        assert (f["maps/gradcam/status"][()] == DONE).sum() == 3 and (f["clean/status"][()] == DONE).sum() == 3
    assert len(pd.read_csv(ctx.run_dir / "csv/ins_auc_efficientnet_lite0_gradcam.csv", index_col=0)) == 3
    # run again: every task is finished, nothing is recomputed
    again = run_sharded(_ctx(tmp_path, methods=["gradcam", "inputxgrad"], executor="ray", shards=2, threads=threads),
                        ("maps", "metrics"), log=lambda *_: None)
    assert again["reports"]["maps"].computed == {"gradcam": 0, "inputxgrad": 0}
    assert again["reports"]["maps"].already == {"gradcam": 3, "inputxgrad": 3}


def test_worker_killed_mid_task_is_retried_and_resumes(ray_cluster, reference, tmp_path):
    from runners.sharded import run_sharded

    marker = ray_cluster
    ctx = _ctx(tmp_path, methods=["kill_once"], plugins=[FAULTY], executor="ray", shards=1, batch_size=1,
               threads=torch.get_num_threads())
    said = []
    res = run_sharded(ctx, ("maps", "metrics"), log=lambda *a: said.append(" ".join(map(str, a))))
    assert marker.exists(), "the plugin should have killed its worker"
    killed_pid = int(marker.read_text())
    assert res["errors"] == {}
    assert not [m for m in said if "moved aside" in m]  # the killed attempt's .part store was whole
    maps = res["reports"]["maps"]
    # the plugin died once the first image was stored: the retry found that image in the killed attempt's .part
    # store and computed only the other two
    assert maps.computed == {"kill_once": 2} and maps.already == {"kill_once": 1}
    man = json.loads(ShardPaths(ctx.run_dir, "maps", "kill_once", 0, 1).manifest.read_text())
    assert man["pid"] != killed_pid
    with h5py.File(ctx.run_dir / "maps.h5", "r") as f, h5py.File(reference / "maps.h5", "r") as g:
        assert (f["maps/kill_once/status"][:3] == DONE).all()
        np.testing.assert_allclose(f["maps/kill_once/map"][:3], g["maps/kill_once/map"][:3], atol=1e-5)
    a = pd.read_csv(ctx.run_dir / "csv/ins_auc_efficientnet_lite0_kill_once.csv", index_col=0)
    b = pd.read_csv(reference / "csv/ins_auc_efficientnet_lite0_kill_once.csv", index_col=0)
    # batches of 1 here, of 32 in the reference: the conv kernels differ in the last float32 digits
    pd.testing.assert_frame_equal(a, b, atol=1e-4, check_exact=False)
