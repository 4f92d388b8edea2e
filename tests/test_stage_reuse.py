"""No stage re-does work: each image decoded once per stage and blurred once for insertion AND deletion, with the
same AUCs as the uncached path; the precision is part of the protocol."""

import numpy as np
import pytest
import torch

from benchmark.data.imagecache import ImageCache
from runners.context import RunConfig, RunContext
from runners.maps import run_maps
from runners.scoring import run_metrics
from runners.store import StoreError

METHODS = ["gradcam", "inputxgrad"]


def _ctx(out, **kw):
    cfg = dict(model="efficientnet_lite0", data="demo", limit=2, methods=METHODS, metrics=["insertion", "deletion"],
               out=str(out), profile="quick", progress=False, device="cpu")
    cfg.update(kw)
    return RunContext(RunConfig(**cfg))


def _aucs(ctx):
    with ctx.open_metrics() as st:
        return {f"{m}/{mid}": st.read(f"{m}/{mid}", "value")[:2] for m in ("insertion", "deletion") for mid in METHODS}


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cached")
    ctx = _ctx(out)
    run_maps(ctx)
    maps_counters = ctx.image_counters
    run_metrics(ctx)
    return ctx, maps_counters, ctx.image_counters


def test_each_image_is_decoded_and_blurred_once_per_stage(cached_run):
    _ctx_, maps_counters, metric_counters = cached_run
    # maps stage: the clean forward and both methods read 2 images: decoded twice in all
    assert maps_counters["decoded"] == 2
    # metrics stage: 2 metrics x 2 methods read the 2 images; one decode and one blur per image
    assert metric_counters["decoded"] == 2
    assert metric_counters["derived:gaussian_blur(11,5.0)"] == 2


def test_cache_off_gives_the_same_aucs_whatever_the_batch_size(cached_run, tmp_path):
    ctx, _, _ = cached_run
    ref = _aucs(ctx)
    other = _ctx(tmp_path, cache_gb=0.0, batch_size=5)  # nothing admitted: every read decodes and blurs again
    run_maps(other)
    run_metrics(other)
    assert other.image_counters["decoded"] == 2 * 2 * 2  # (metric, method) pairs x images
    assert other.image_counters["derived:gaussian_blur(11,5.0)"] == 2 * 2 * 2
    got = _aucs(other)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], atol=1e-6, err_msg=key)


def test_precision_is_part_of_the_protocol(cached_run):
    ctx, _, _ = cached_run
    assert ctx.protocol()["precision"] == "fp32"
    bf16 = _ctx(ctx.run_dir.parent, precision="bf16")
    with pytest.raises(StoreError):
        run_maps(bf16)  # maps made in fp32 are never mixed with bf16 ones
    with pytest.raises(ValueError, match="precision"):
        _ctx(ctx.run_dir.parent, precision="fp8")


def test_image_cache_is_scan_resistant_and_bounded():
    loads = []

    def load(idx):
        loads.append(list(idx))
        return torch.stack([torch.full((3, 4, 4), float(i)) for i in idx])

    one = 3 * 4 * 4 * 4  # bytes of one image
    cache = ImageCache(load, torch.device("cpu"), budget_bytes=2 * one)
    x = cache.images([0, 1, 2])
    assert [float(v[0, 0, 0]) for v in x] == [0, 1, 2] and cache.used == 2 * one
    cache.images([0, 1])  # kept: no new decode
    cache.images([2])  # over the budget: decoded again, the first two are not evicted
    assert loads == [[0, 1, 2], [2]]
    blur = cache.derived("b", [0, 2], x[[0, 2]], lambda t: t + 100)
    assert [float(v[0, 0, 0]) for v in blur] == [100, 102]
    cache.prefetch([5, 6])
    assert [float(v[0, 0, 0]) for v in cache.images([5, 6])] == [5, 6]
    assert loads[-1] == [5, 6] and cache.counters["decoded"] == 3 + 1 + 2
    cache.close()


def test_a_constant_variant_fails_alone(tmp_path):
    """A method deriving several maps: a constant (or NaN) variant is recorded failed for that id only."""
    from methods.base import Method, register_method
    from runners.store import DONE, FAILED

    @register_method
    class TwoMaps(Method):
        id = "test_two_maps"
        variants = ("test_two_maps_flat", "test_two_maps_nan")

        def explain(self, model, x, targets):
            b = x.shape[0]
            return {"test_two_maps": x.mean(1), "test_two_maps_flat": torch.zeros(b, 7, 7),
                    "test_two_maps_nan": torch.full((b, 7, 7), float("nan"))}

    ctx = _ctx(tmp_path, methods=["test_two_maps"])
    report = run_maps(ctx)
    assert report.computed["test_two_maps"] == 2 and "test_two_maps" not in {k for k, v in report.failed.items() if v}
    assert set(report.failed["test_two_maps_flat"].values()) == {"constant map (no ranking)"}
    assert set(report.failed["test_two_maps_nan"].values()) == {"map contains NaN or infinite values"}
    with ctx.open_maps("r") as st:
        assert list(st.status("maps/test_two_maps")[:2]) == [DONE, DONE]
        assert list(st.status("maps/test_two_maps_flat")[:2]) == [FAILED, FAILED]


def test_a_value_whose_map_was_computed_again_is_scored_again(tmp_path):
    """Each value keeps the CRC of the map it scored: when a map is stored anew with other bytes (a recomputation
    after a checksum failure, on kernels that are not bit-exact), only its value is scored again, and said so."""
    from runners.store import DONE

    ctx = _ctx(tmp_path, methods=["gradcam"], metrics=["insertion"])
    run_maps(ctx)
    first = run_metrics(ctx)
    assert first.computed["insertion/gradcam"] == 2 and first.notices == []
    with ctx.open_metrics("r") as st:
        before = st.read("insertion/gradcam", "value")[:2]
    with ctx.open_maps() as maps:
        old = maps.read("maps/gradcam", "map", [1])
        maps.write("maps/gradcam", [1], map=old.transpose(0, 2, 1).copy())  # another map for image 1
        map_crc = maps.read("maps/gradcam", "crc")[:2]
    again = run_metrics(ctx)
    assert again.computed["insertion/gradcam"] == 1 and again.already["insertion/gradcam"] == 1
    assert len(again.notices) == 1 and "1 value(s) scored a map that has been computed again" in again.notices[0]
    assert ctx.source.names[1] in again.notices[0]
    with ctx.open_metrics("r") as st:
        after = st.read("insertion/gradcam", "value")[:2]
        assert list(st.read("insertion/gradcam", "map_crc")[:2]) == list(map_crc)
        assert list(st.status("insertion/gradcam")[:2]) == [DONE, DONE]
    assert after[0] == before[0] and after[1] != before[1]
    third = run_metrics(ctx)  # nothing stale any more
    assert third.computed["insertion/gradcam"] == 0 and third.notices == []
