"""What ``--compact-maps`` costs and saves, measured: the same maps stored float32 (the default layout) and compact
(float16, one image per chunk, shuffle + gzip 4), then scored by the harness's own insertion and deletion code from
both stores.

    python scripts/compact_maps_effect.py --out compact_effect.json [--images 5]

Model: a small seeded CNN (5 conv layers, 3 -> 104 channels in all, 224 px input, ImageNet normalisation) so that
Poly-CAM's every ablation runs on a CPU in minutes; images: the demo photos shipped with scikit-image. Methods:
Poly-CAM (pcampm, with ablations: 33 maps per image), Grad-CAM and Input x Gradient. The JSON gives, per output id,
the bytes one map takes in each layout (read from the file: ``Dataset.id.get_storage_size()`` / images), the largest
|float32 - float16 map| relative to the map's largest |value|, and the largest and mean |delta AUC| of insertion and
deletion; then the projection to a 2000-image VGG16 store with every method and every Poly-CAM ablation (the ablation
groups at the measured compact bytes per map, every other group float32 as the default ``ablations`` setting keeps
them). ``exact_float16`` says whether a map read back equals plain ``np.float16(map)``: false where the per-image
power-of-two exponent kept more bits than plain float16 (values below 2**-14 of a map).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.data import DemoSource, preprocess  # noqa: E402
from benchmark.models import ModelBundle  # noqa: E402
from methods import METHODS, make_method  # noqa: E402
from methods.base import load_builtin_methods  # noqa: E402
from methods.polycam import is_ablation  # noqa: E402
from metrics.base import make_metric  # noqa: E402
from runners.store import COMPACT, H5Store  # noqa: E402

LAYERS = ["c1", "c2", "c3", "c4", "c5"]
METHOD_IDS = ("pcampm", "gradcam", "inputxgrad")


class SmallCNN(nn.Module):
    """224 -> 112 -> 56 -> 28 -> 14 -> 7 px, 8/16/16/32/32 channels, GAP + Linear to 10 classes, seeded."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        chans = [3, 8, 16, 16, 32, 32]
        for k in range(5):
            setattr(self, f"c{k + 1}", nn.Sequential(nn.Conv2d(chans[k], chans[k + 1], 3, stride=2, padding=1),
                                                     nn.ReLU()))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        for name in LAYERS:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def small_bundle(seed: int = 0) -> ModelBundle:
    net = SmallCNN(seed).eval().requires_grad_(False)
    return ModelBundle(name="small_cnn", net=net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                       weights="random", weights_sha256=None, layer_sets={"small": LAYERS}, polycam_preset="small",
                       fc="fc", num_classes=10)


def demo_images(model: ModelBundle, n: int) -> tuple[list[str], torch.Tensor]:
    src = DemoSource()
    names = src.names[:n]
    x = torch.stack([preprocess(src.open(name), 224) for name in names])
    return names, model.normalize(x)


def compute_maps(model: ModelBundle, x: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
    load_builtin_methods()
    maps = {}
    for mid in METHOD_IDS:
        params = {"ablations": True} if mid == "pcampm" else {}
        method = make_method(mid, batch_size=16, **params)
        method.check_applicable(model)
        out = method.compute_all(model, x, targets, 224)
        maps.update({k: v.float().cpu().numpy() for k, v in out.items()})
    return maps


def store(path: Path, names: list[str], maps: dict[str, np.ndarray], compact: bool) -> None:
    with H5Store(path, names, {"protocol": {"compact_maps": "all" if compact else "none"}}) as st:
        for oid, m in maps.items():
            st.ensure_group(f"maps/{oid}", {"map": ((224, 224), "f4")},
                            {"params": {}, **({"storage": COMPACT} if compact else {})})
            st.write(f"maps/{oid}", list(range(len(names))), map=m)


def read_back(path: Path, names: list[str], oids) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    maps, size = {}, {}
    with H5Store(path, names, mode="r") as st:
        for oid in oids:
            values, bad = st.read_rows(f"maps/{oid}")
            assert not bad and values["map"].dtype == np.float32
            maps[oid] = values["map"]
            size[oid] = st.f[f"maps/{oid}"]["map"].id.get_storage_size()
    return maps, size


def aucs(model: ModelBundle, x: torch.Tensor, targets: torch.Tensor, maps: dict[str, np.ndarray]) -> dict:
    out = {}
    for metric_id in ("insertion", "deletion"):
        metric = make_metric(metric_id, batch_size=64)
        base = metric.prepare(x)
        out[metric_id] = {oid: metric.compute(model, x, torch.from_numpy(m), targets, prepared=base)["value"].numpy()
                          for oid, m in maps.items()}
    return out


def vgg16_groups() -> tuple[int, int]:
    """(ablation groups, other groups) of a VGG16 run with every registered method (CALM's need CALM models)."""
    load_builtin_methods()
    ids = set()
    for mid in METHODS:
        if not mid.startswith("calm_"):
            ids |= set(make_method(mid).output_ids)  # paper parameters: Poly-CAM with ablations, 5 layers
    abl = sum(map(is_ablation, ids))
    return abl, len(ids) - abl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--images", type=int, default=5, help="demo photos used (1-5, default 5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    model = small_bundle()
    names, x = demo_images(model, args.images)
    with torch.no_grad():
        targets = model.net(x).argmax(1)
    maps = compute_maps(model, x, targets)
    with tempfile.TemporaryDirectory() as tmp:
        f32, f16 = Path(tmp) / "float32.h5", Path(tmp) / "compact.h5"
        store(f32, names, maps, compact=False)
        store(f16, names, maps, compact=True)
        m32, s32 = read_back(f32, names, maps)
        m16, s16 = read_back(f16, names, maps)
        with h5py.File(f16, "r") as f:
            layout = {k: getattr(f["maps/pcampm_step1/map"], k) for k in ("dtype", "chunks", "compression",
                                                                          "compression_opts", "shuffle")}
        files = {"float32": f32.stat().st_size, "compact": f16.stat().st_size}
    a32, a16 = aucs(model, x, targets, m32), aucs(model, x, targets, m16)
    n = len(names)
    per_id = {}
    for oid in maps:
        scale = np.abs(m32[oid]).reshape(n, -1).max(axis=1)
        rel = np.abs(m32[oid] - m16[oid]).reshape(n, -1).max(axis=1) / np.where(scale > 0, scale, 1)
        per_id[oid] = {"ablation": is_ablation(oid), "bytes_per_map_float32": s32[oid] / n,
                       "bytes_per_map_compact": s16[oid] / n, "ratio": s32[oid] / s16[oid],
                       "max_rel_map_diff": float(rel.max()), "exact_float16": bool(np.array_equal(
                           m16[oid], maps[oid].astype(np.float16).astype(np.float32)))}
        for metric in ("insertion", "deletion"):
            d = np.abs(a32[metric][oid] - a16[metric][oid])
            per_id[oid][f"max_abs_d_{metric}"] = float(d.max())
            per_id[oid][f"mean_abs_d_{metric}"] = float(d.mean())
    abl = [v for v in per_id.values() if v["ablation"]]
    summary = {
        "bytes_per_map_float32": float(np.mean([v["bytes_per_map_float32"] for v in per_id.values()])),
        "bytes_per_map_compact_ablations": float(np.mean([v["bytes_per_map_compact"] for v in abl])),
        "bytes_per_map_compact_all": float(np.mean([v["bytes_per_map_compact"] for v in per_id.values()])),
        "max_rel_map_diff": max(v["max_rel_map_diff"] for v in per_id.values()),
        "every_map_equals_float16_of_float32": all(v["exact_float16"] for v in per_id.values()),
    }
    for metric in ("insertion", "deletion"):
        summary[f"max_abs_d_{metric}"] = max(v[f"max_abs_d_{metric}"] for v in per_id.values())
        summary[f"mean_abs_d_{metric}"] = float(np.mean([v[f"mean_abs_d_{metric}"] for v in per_id.values()]))
    n_abl, n_other = vgg16_groups()
    f32_map, images = 224 * 224 * 4, 2000
    proj = {"images": images, "ablation_groups": n_abl, "other_groups": n_other,
            "none_GB": images * (n_abl + n_other) * f32_map / 1e9,
            "ablations_GB": images * (n_abl * summary["bytes_per_map_compact_ablations"] + n_other * f32_map) / 1e9,
            "all_GB": images * (n_abl + n_other) * summary["bytes_per_map_compact_all"] / 1e9,
            "ablation_groups_only_none_GB": images * n_abl * f32_map / 1e9,
            "ablation_groups_only_compact_GB": images * n_abl * summary["bytes_per_map_compact_ablations"] / 1e9}
    result = {"command": "python scripts/compact_maps_effect.py " + " ".join(argv or sys.argv[1:]),
              "model": "SmallCNN (seeded, 5 conv layers, scripts/compact_maps_effect.py)", "images": names,
              "methods": list(METHOD_IDS), "maps_per_image": len(maps), "compact_layout": {
                  **{k: str(v) for k, v in layout.items()}, "storage_attr": COMPACT},
              "file_bytes": files, "summary": summary, "vgg16_2000_projection": proj, "per_output_id": per_id,
              "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__, "h5py": h5py.__version__}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": summary, "vgg16_2000_projection": proj}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
