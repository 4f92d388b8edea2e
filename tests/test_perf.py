"""The cost model (runners/costs.py), --dry-run and the perf command (benchmark/perf/) on a tiny configuration:
a random-weight torchvision MobileNetV3-Small (seeded), one or two demo photos, the quick profile.

Pass counts are exact (a forward pre-hook on the network counts its inputs); no timing is asserted."""

import json

import pytest
import torch

from conftest import run_cli
from runners.maps import run_maps
from runners.scoring import run_metrics

TINY = ["--model", "mobilenet_v3_small", "--weights", "random", "--profile", "quick"]
POLY_LAYERS = ["features.0", "features.1"]  # 16 + 16 channels


@pytest.fixture(scope="module")
def mnet():
    from benchmark.models import load_model

    return load_model("mobilenet_v3_small", "random", seed=0)


@pytest.fixture(scope="module")
def photo(mnet):
    from benchmark.data import DemoSource, preprocess

    return mnet.normalize(preprocess(DemoSource().open("chelsea.png"))[None])


def test_pass_counter_counts_forward_and_backward_inputs(mnet):
    from benchmark.perf.timing import PassCounter

    x = torch.zeros(3, 3, 224, 224)
    with PassCounter(mnet.net) as c:
        with torch.no_grad():
            mnet.net(x)
        xi = x[:2].clone().requires_grad_(True)
        torch.autograd.grad(mnet.net(xi)[:, 0].sum(), xi)
    assert (c.inputs, c.backward, c.forward_only, c.calls) == (5, 2, 3, 2)


def test_plan_equals_the_passes_the_pipeline_runs(tmp_path):
    """The cost model's totals per stage equal the inputs counted through the network during maps and metrics."""
    from benchmark.perf.timing import PassCounter
    from runners.context import RunConfig, RunContext
    from runners.costs import plan
    from runners.store import DONE

    cfg = RunConfig(model="mobilenet_v3_small", weights="random", data="demo", limit=1, profile="quick",
                    methods=["occlusion", "inputxgrad"], metrics=["insertion", "deletion"], out=str(tmp_path),
                    batch_size=8, progress=False)
    ctx = RunContext(cfg)
    rows, skipped = plan(ctx)
    assert not skipped
    per = {(r.stage, r.key): (r.forward, r.backward) for r in rows}
    # quick occlusion: 64 px window, stride 32 -> 6 x 6 windows + the clean pass
    assert per[("clean", "targets")] == (1, 0)
    assert per[("maps", "occlusion")] == (37, 0)
    assert per[("maps", "inputxgrad")] == (0, 1)
    assert per[("metrics", "insertion/occlusion")] == (16, 0)

    with PassCounter(ctx.model.net) as c:
        run_maps(ctx)
        maps_counted = (c.forward_only, c.backward)
        c.reset()
        run_metrics(ctx)
        metrics_counted = (c.forward_only, c.backward)
    maps_rows = [r for r in rows if r.stage in ("clean", "maps")]
    assert maps_counted == (sum(r.forward for r in maps_rows), sum(r.backward for r in maps_rows))
    # metrics run on the maps that were stored (a constant map is recorded as failed and not scored)
    with ctx.open_maps(mode="r") as store:
        done = {mid: int((store.status(f"maps/{mid}") == DONE).sum()) for mid in ("occlusion", "inputxgrad")}
    expected = sum(r.per_image.forward * done[r.key.split("/")[1]] for r in rows if r.stage == "metrics")
    assert metrics_counted == (expected, 0)
    assert sum(done.values()) > 0
    # the plan of what is left: the stored results are not counted (a map that failed is tried again, and so is
    # counted; its values with it)
    left = {(r.stage, r.key): r.images for r in plan(ctx, left=True)[0]}
    assert left[("clean", "targets")] == 0
    assert {m: left[("maps", m)] for m in done} == {m: 1 - d for m, d in done.items()}
    assert all(left[("metrics", f"{k}/{m}")] == 1 - d for m, d in done.items() for k in ("insertion", "deletion"))
    assert {(r.stage, r.key): r.images for r in rows} == dict.fromkeys(left, 1)  # without left: every image


def test_run_bar_total_becomes_what_each_item_ran():
    """The run's bar: planned passes per item; an item that ran fewer (an upper bound, stored images) or more
    takes its difference out of (or into) the total when it is settled, once."""
    from runners.progress import PassProgress

    net = torch.nn.Linear(3, 2)
    progress = PassProgress(lambda: net)
    with progress.run({"a": 10, "b": 5, "c": 2}) as bar:
        assert bar.total == 17
        with progress.item("a", 10, 1, key="a"):
            net(torch.zeros(6, 3))  # 6 of the 10 planned passes
        progress.settle("a")
        assert (bar.n, bar.total) == (6, 13)
        progress.settle("a")  # a second call changes nothing
        progress.settle("b")  # nothing ran: stored already
        assert (bar.n, bar.total) == (6, 8)
        progress.advance_run(3, key="c")  # one more than planned (the sanity check's passes, counted by hand)
        progress.settle("c")
        assert (bar.n, bar.total) == (9, 9)
        progress.settle("unplanned")
        assert bar.total == 9


def test_limit_pools_both_sweeps_by_median_and_keeps_the_peak():
    """Hand-made sweeps: per size the median of all blocks of both sweeps, the limit at the best median (not at the
    fastest block), the peak at the fastest block; efficiencies against both."""
    from benchmark.perf.timing import _peak, _row, combine_limits, efficiency

    def sweep(rates4, rates8):
        rows = [_row(4, {"forward": rates4, "backward": None}), _row(8, {"forward": rates8, "backward": None})]
        return {"sweep": rows, "peak": _peak(rows)}

    lim = combine_limits(sweep([70.0, 74.0, 72.0], [60.0, 90.0, 61.0]), sweep([76.0, 75.0, 73.0], [62.0, 63.0, 59.0]))
    assert [r["forward_passes_per_s"] for r in lim["sweep"]] == [73.5, 61.5]  # medians of 6 blocks each
    assert lim["forward"] == {"batch_size": 4, "passes_per_s": 73.5}
    assert lim["peak"]["forward"] == {"batch_size": 8, "passes_per_s": 90.0}
    assert lim["backward"] is None and lim["peak"]["backward"] is None
    assert efficiency(147.0, 0, 2.5, lim) == pytest.approx(147.0 / 73.5 / 2.5)  # 0.8
    assert efficiency(147.0, 0, 2.5, lim["peak"]) == pytest.approx(147.0 / 90.0 / 2.5)


def test_round_robin_rates_time_every_size_in_every_round(mnet):
    from benchmark.core.timing import round_robin_rates
    from benchmark.perf.timing import PassCounter

    with PassCounter(mnet.net) as c:
        rates = round_robin_rates(mnet.net, [1, 2], 32, torch.device("cpu"), False, rounds=3, min_seconds=0.0)
    assert set(rates) == {1, 2} and all(len(v) == 3 and min(v) > 0 for v in rates.values())
    # first round: a warm-up and one timed pass per size; later rounds: a pass already lasts min_seconds (0), no
    # warm-up
    assert c.calls == 2 * 2 + 2 * 2


def test_round_robin_order_and_warmups(monkeypatch):
    """Rotating order, and a warm-up pass in every block for short passes but only in the first round for a size
    whose one pass lasts min_seconds (timings faked: 1 input 0.01 s per pass, 4 inputs 0.5 s)."""
    import benchmark.core.timing as timing

    calls = []

    def fake(net, x, backward, min_seconds, min_reps=1, warmup=True):
        calls.append((x.shape[0], warmup))
        return x.shape[0] / (0.01 if x.shape[0] == 1 else 0.5)

    monkeypatch.setattr(timing, "time_passes", fake)
    rates = timing.round_robin_rates(None, [1, 4], 8, torch.device("cpu"), False, rounds=3, min_seconds=0.1)
    assert rates == {1: [100.0] * 3, 4: [8.0] * 3}
    assert calls == [(1, True), (4, True), (4, False), (1, True), (1, True), (4, False)]


def test_reference_polycam_loop_gives_our_maps_with_its_own_passes(mnet, photo):
    """The reference-style loop (PCAM+, PCAM-, PCAM+- one after the other, chunks of 32 channels, no skipping)
    computes the same maps as pcampm, and runs 3 + 4 C passes per image where pcampm runs at most 2 C + 1."""
    from benchmark.perf.reference_polycam import reference_polycam
    from benchmark.perf.timing import PassCounter
    from methods import make_method

    with torch.no_grad():
        t = mnet.net(photo).argmax(1)
    method = make_method("pcampm", layers=POLY_LAYERS, ablations=True)
    with PassCounter(mnet.net) as c:
        ours = method.compute_all(mnet, photo, t)
        ours_passes = c.inputs
        c.reset()
        ref = reference_polycam(mnet, photo, t, POLY_LAYERS)
        ref_passes = c.inputs
    assert method.cost(mnet).forward == 2 * 32 + 1
    assert ref_passes == 3 + 4 * 32
    assert ours_passes <= 2 * 32 + 1 + 1
    assert set(ref) == set(ours) and len(ours) == 3 * (1 + 1 + 2 + 1)  # pcamW, 1 step, 2 layers, nolnorm
    for key in ours:
        torch.testing.assert_close(ref[key], ours[key], atol=2e-4, rtol=1e-3, msg=key)


def test_peer_functions_run_the_peer_libraries(mnet, photo):
    """torchcam and pytorch-grad-cam Score-CAM, run through the peer wrappers, pass C + 2 / C + 1 inputs."""
    import dataclasses

    from benchmark.perf.peers import peer_gradcam_scorecam, peer_torchcam_score
    from benchmark.perf.timing import PassCounter
    from methods import make_method

    small = dataclasses.replace(mnet, layer_sets={"tiny": POLY_LAYERS}, polycam_preset="tiny")  # last conv: 16 ch
    with torch.no_grad():
        t = small.net(photo).argmax(1)
    method = make_method("scorecam")
    channels = method.cost(small).forward - 2
    assert channels == 16
    for make, expected, bs in ((peer_torchcam_score, channels + 2, 32), (peer_gradcam_scorecam, channels + 1, 16)):
        run, defaults = make(small, method, photo, t)
        with PassCounter(small.net) as c:
            out = run()
        assert c.inputs == expected
        assert defaults["batch_size"] == bs
        assert out is not None


def test_dry_run_prints_the_plan_and_computes_nothing(tmp_path):
    proc = run_cli("run", *TINY, "--limit", "1", "--methods", "occlusion,inputxgrad", "--out", tmp_path,
                   "--batch-size", "4", "--dry-run", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "| maps | occlusion | 1 | 37 | 0 | 37 | 0 |" in proc.stdout
    assert "| maps | inputxgrad | 1 | 0 | 1 | 0 | 1 |" in proc.stdout
    assert "| metrics | deletion/occlusion | 1 | 16 | 0 | 16 | 0 |" in proc.stdout
    assert "| **total** | | | | | 102 | 1 |" in proc.stdout  # 1 clean + 37 + 2 maps x 2 metrics x 16
    assert "rates on cpu at 4 inputs per pass" in proc.stdout and "4 inputs per pass (given)" in proc.stdout
    assert not any(tmp_path.rglob("*.h5")) and not any(tmp_path.rglob("*.json"))


def test_dry_run_tunes_nothing_and_reuses_its_calibration(tmp_path):
    """Without --batch-size the dry run uses a provisional size (no tuning), measures the rates once (steady state)
    and a second dry run reuses them: it measures nothing."""
    env = {"BENCHMARK_CACHE": str(tmp_path / "cache")}
    args = ["run", *TINY, "--limit", "1", "--methods", "occlusion,inputxgrad", "--out", tmp_path, "--dry-run",
            "--no-progress"]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "8 inputs per pass (provisional" in first.stdout and "measured now" in first.stdout
    assert not (tmp_path / "cache/pass_batch_size.json").exists()  # nothing tuned
    rates = json.loads((tmp_path / "cache/rates.json").read_text())
    (rec,) = rates.values()
    assert rec["batch_size"] == 8 and rec["forward"] > 0 and rec["backward"] > 0
    second = run_cli(*args, env=env)
    assert "stored, measured" in second.stdout and "calibrating" not in second.stdout + second.stderr


def test_eta_is_the_passes_over_the_steady_rates():
    from benchmark.core.cost import Cost
    from runners.costs import Calibration, StageCost, eta_seconds, format_plan

    cal = Calibration("cpu", 8, forward=40.0, backward=10.0, source="stored")
    row = StageCost("maps", "x", 3, Cost(forward=100.0, backward=2.0))
    assert eta_seconds(row, cal) == 3 * 100 / 40 + 3 * 2 / 10
    assert "| maps | x | 3 | 100 | 2 | 300 | 6 | 8.1 s |" in format_plan([row], {}, cal)


def test_perf_command_tiny_json_has_every_field(tmp_path):
    out = tmp_path / "perf.json"
    proc = run_cli("perf", *TINY, "--limit", "1", "--methods", "gradcam,occlusion,pcampm", "--metrics",
                   "insertion,deletion", "--repeats", "1", "--warmup", "0", "--sweep", "4",
                   "--set", 'pcampm.layers=["features.0"]', "--set", "pcampm.ablations=true",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    for key in ("schema", "date", "precision", "device", "environment", "load_average", "threads", "model",
                "weights", "profile", "seed", "images", "image_names", "batch_size", "repeats", "warmup",
                "overrides", "limit", "items", "peers", "polycam", "precision_drift", "targets"):
        assert key in res, key
    assert res["precision_drift"] == []  # fp32 is the reference: nothing to compare
    assert res["schema"] == "benchmark-perf/1" and res["precision"] == "fp32"
    assert res["model"] == "mobilenet_v3_small-random" and res["images"] == 1
    assert res["environment"]["versions"]["torch"].startswith("2.")
    assert res["limit"]["forward"]["passes_per_s"] > 0 and res["limit"]["backward"]["passes_per_s"] > 0
    assert len(res["limit"]["measurements"]) == 2
    row = res["limit"]["sweep"][0]
    assert row["batch_size"] == 4 and len(row["forward_rates"]) == 2  # one block per sweep (--repeats 1)
    assert res["limit"]["peak"]["forward"]["passes_per_s"] >= res["limit"]["forward"]["passes_per_s"]

    items = {(i["kind"], i["id"]): i for i in res["items"]}
    assert set(items) == {("method", "gradcam"), ("method", "occlusion"), ("method", "pcampm"),
                          ("metric", "insertion"), ("metric", "deletion")}
    for it in items.values():
        for key in ("params", "batch_size", "images", "forward_only", "declared", "measured", "exact",
                    "passes_saved_per_image", "seconds", "seconds_all", "images_per_s", "passes_per_s", "efficiency",
                    "efficiency_vs_peak"):
            assert key in it, (it["id"], key)
        assert it["seconds"] > 0 and it["efficiency"] >= it["efficiency_vs_peak"] > 0
    assert items[("method", "gradcam")]["measured"] == {"forward": 0.0, "backward": 1.0}
    assert items[("method", "gradcam")]["exact"] and not items[("method", "gradcam")]["forward_only"]
    assert items[("method", "occlusion")]["measured"] == {"forward": 37.0, "backward": 0.0}
    assert items[("method", "occlusion")]["exact"] and items[("method", "occlusion")]["forward_only"]
    assert items[("metric", "insertion")]["measured"]["forward"] == 16 and items[("metric", "insertion")]["exact"]
    poly_item = items[("method", "pcampm")]
    assert poly_item["declared"]["forward"] == 2 * 16 + 1
    assert poly_item["passes_saved_per_image"] == 33 - poly_item["measured"]["forward"] >= 0

    peers = {p["peer"]: p for p in res["peers"]}
    occ = peers["captum.attr.Occlusion"]
    assert occ["defaults"]["perturbations_per_eval"] == 1 and occ["measured"]["forward"] == 37
    assert occ["speedup"] > 0 and occ["version"] != "not installed"
    insdel = peers["torchcam.metrics.DeletionInsertionMetric"]
    assert insdel["defaults"]["batch_size"] == 32 and insdel["ours"] == "gradcam+insertion+deletion"

    poly = res["polycam"]
    assert poly["layers"] == ["features.0"] and poly["channels"] == [16]
    assert poly["reference"]["passes_per_image"] == 3 + 4 * 16
    assert poly["declared_passes_per_image"] == poly["pcampm_alone_declared"] == 33
    assert poly["outputs"] == 9 and poly["speedup"] > 0  # per weighting: the map, the layer's CAM, no-LNorm
    assert res["targets"]["polycam_passes_within_pcampm"] is True
    assert res["targets"]["efficiency_min_forward_only"] > 0
    assert "| method occlusion | 37 | 37 |" in proc.stdout


def test_precision_drift_is_zero_at_fp32_and_measured_at_bf16(mnet, photo):
    from benchmark.perf.run import precision_drift
    from methods.base import make_method
    from metrics.base import make_metric

    t = mnet.net(photo).argmax(1)
    method = make_method("gradcam", quick=True)
    ins = make_metric("insertion", quick=True, batch_size=8)
    same = precision_drift(mnet, photo, t, 224, "fp32", {"gradcam": method}, [(ins, None, None)], mnet.device,
                           echo=lambda s: None)
    assert same[0]["map_max_abs_diff"] == 0 and same[0]["spearman_min"] == pytest.approx(1.0)
    assert same[0]["metrics"]["insertion"]["max_abs_diff"] == 0
    (row,) = precision_drift(mnet, photo, t, 224, "bf16", {"gradcam": method}, [(ins, None, None)], mnet.device,
                             echo=lambda s: None)
    assert row["method"] == "gradcam" and row["precision"] == "bf16" and row["images"] == 1
    assert row["map_max_abs_diff"] > 0  # bf16 keeps 8 bits of mantissa: the map moves
    assert -1 <= row["spearman_min"] <= 1 and row["spearman_min"] < 1
    m = row["metrics"]["insertion"]
    assert set(m) == {"fp32", "bf16", "mean_abs_diff", "max_abs_diff"}
    assert m["fp32"] == pytest.approx(same[0]["metrics"]["insertion"]["fp32"])
    assert torch.backends.cuda.matmul.allow_tf32 is False  # the switches are restored


def test_rise_runs_under_bf16_with_float32_masks(lite0, cat):
    """Under --precision bf16 only the model's passes are bf16: RISE's masks and weighted sum stay float32 (this
    raised a dtype error in addmm before)."""
    from benchmark.core import precision
    from methods.base import make_method

    t = lite0.net(cat).argmax(1)
    rise = make_method("rise", quick=True, batch_size=8, n_masks=24)
    ref = rise.compute_all(lite0, cat, t)["rise"]
    with precision.active("bf16", lite0.device):
        low = rise.compute_all(lite0, cat, t)["rise"]
        assert rise.masks((224, 224), cat.device)(torch.arange(3)).dtype == torch.float32
    assert low.dtype == torch.float32 and low.shape == ref.shape and torch.isfinite(low).all()
    assert not torch.equal(low, ref)  # the passes did run in bf16


def test_set_overrides_parse_json_values_and_reject_bad_syntax():
    from runners.overrides import parse_overrides

    assert parse_overrides(["rise.n_masks=1000", 'pcampm.layers=["a","b"]', "gradcampp.alpha=eq19"]) == {
        "rise": {"n_masks": 1000}, "pcampm": {"layers": ["a", "b"]}, "gradcampp": {"alpha": "eq19"}}
    for bad in ("rise=3", "rise.n_masks", ".n=1"):
        with pytest.raises(ValueError, match="METHOD.PARAM=VALUE"):
            parse_overrides([bad])


def test_dry_run_of_metrics_without_maps_says_what_to_give(tmp_path):
    proc = run_cli("metrics", *TINY, "--limit", "1", "--out", tmp_path, "--dry-run")
    assert proc.returncode == 2
    assert "give --methods for the dry run of metrics" in proc.stderr
