"""The memory bound: exact activation bytes on a hand-made net, the cap, and a capped run equal to an uncapped one."""

import statistics

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.core.memory import HEADROOM, activation_bytes, bounded_batch_size, bytes_per_input
from runners.maps import run_maps


def test_activation_bytes_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 5))
    # conv 2x4x4, relu 2x4x4, pool 2x2x2, flatten 8, linear 5 floats: 32 + 32 + 8 + 8 + 5 = 85 floats
    assert activation_bytes(net, 4, torch.device("cpu")) == 85 * 4
    assert bytes_per_input(net, 4, torch.device("cpu")) == HEADROOM * 85 * 4 + 3 * 4 * 4 * 4


def test_cap_and_record():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 5))
    per = bytes_per_input(net, 4, torch.device("cpu"))
    bs, rec = bounded_batch_size(32, net, 4, torch.device("cpu"), memory_gb=5.5 * per / 2**30, cache_gb=None)
    assert bs == 5 and rec["cap"] == 5 and rec["bytes_per_input"] == per and rec["requested"] == 32
    bs, rec = bounded_batch_size(4, net, 4, torch.device("cpu"), memory_gb=5.5 * per / 2**30, cache_gb=None)
    assert bs == 4  # the bound only lowers the batch size
    bs, rec = bounded_batch_size(32, net, 4, torch.device("cpu"), memory_gb=1e-12, cache_gb=None)
    assert bs == 1  # never below one input
    bs, rec = bounded_batch_size(32, net, 4, torch.device("cpu"), memory_gb=None, cache_gb=None)
    assert bs == 32 and rec["cap"] is None  # no automatic bound on CPU


def test_a_run_capped_by_memory_gives_the_same_maps(tmp_path, lite0):
    from runners.context import RunConfig, RunContext

    per = bytes_per_input(lite0.net, 224, torch.device("cpu"))
    cfg = dict(model="efficientnet_lite0", data="demo", limit=3, methods=["gradcam", "occlusion"], profile="quick",
               progress=False, device="cpu", batch_size=32)
    capped = RunContext(RunConfig(**cfg, out=str(tmp_path / "a"), memory_gb=2.5 * per / 2**30))
    run_maps(capped)
    assert capped.batch_size == 2 and capped.memory["cap"] == 2
    with capped.open_maps("r") as st:
        assert st.f.attrs["provenance"] and '"cap": 2' in st.f.attrs["provenance"]
        got = {m: st.read(f"maps/{m}", "map")[:3] for m in cfg["methods"]}
    free = RunContext(RunConfig(**cfg, out=str(tmp_path / "b")))
    run_maps(free)
    assert free.batch_size == 32 and free.memory is None
    with free.open_maps("r") as st:
        for m in cfg["methods"]:
            np.testing.assert_allclose(got[m], st.read(f"maps/{m}", "map")[:3], atol=1e-5, err_msg=m)


def test_memory_gb_must_be_positive():
    from runners.context import RunConfig, RunContext

    with pytest.raises(ValueError, match="memory-gb"):
        RunContext(RunConfig(model="efficientnet_lite0", data="demo", memory_gb=0.0))


def test_pass_batch_size_is_tuned_within_the_cap_and_stochastic_methods_keep_the_batch_size(lite0):
    from runners.context import RunConfig, RunContext
    from runners.factory import build_methods
    from runners.tuning import PASS_CANDIDATES, tune_pass_batch_size

    size, rec = tune_pass_batch_size(lite0.net, 224, torch.device("cpu"), cap=8, min_seconds=0.0)
    assert set(rec["candidates"]) == {"2", "4", "8"} and rec["chosen"] == size and size in (2, 4, 8)
    best = max(rec["candidates"].values())
    assert rec["candidates"][str(size)] >= 0.97 * best  # within the 3 % tie band of the fastest
    for k, rounds in rec["rounds"].items():  # each candidate: the median of 3 blocks taken in rotating order
        assert len(rounds) == 3 and rec["candidates"][k] == pytest.approx(statistics.median(rounds), abs=0.02)
    assert all(b <= 32 for b in PASS_CANDIDATES["cpu"])

    ctx = RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, profile="quick", progress=False,
                               device="cpu", methods=["occlusion", "smoothgrad", "sscam"]))
    methods = {m.id: m for m in build_methods(ctx, ["occlusion", "smoothgrad", "sscam"])[0]}
    assert methods["occlusion"].batch_size == ctx.resolve_pass_batch_size() == ctx.pass_tuning["chosen"]
    assert methods["sscam"].batch_size == ctx.pass_tuning["chosen"]  # seeded per image: independent of the size
    assert methods["smoothgrad"].batch_size == 32  # stochastic: the noise follows the batch; same on every machine
    fixed = RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, profile="quick", progress=False,
                               device="cpu", batch_size=6))
    assert fixed.resolve_pass_batch_size() == 6 and fixed.pass_tuning is None  # --batch-size: nothing tuned
