"""Poly-CAM the way the reference code computes it, for ``perf``'s speed-up: a plain per-image loop."""

from __future__ import annotations

import torch

from benchmark.core.hooks import OutputRecorder
from methods.polycam import class_scores, fuse, percentile_normalize, resize

REFERENCE_CHUNK = 32  # channels per forward pass in the reference Poly-CAM code


def reference_polycam(model, x: torch.Tensor, targets: torch.Tensor, layers: list[str], percent: float = 0.1,
                      chunk: int = REFERENCE_CHUNK, weightings: tuple[str, ...] = ("p", "m", "pm"),
                      ablations: bool = True) -> dict[str, torch.Tensor]:
    """Poly-CAM the way the reference code computes it: a plain loop, image by image, PCAM+ then PCAM- then PCAM+-,
    each with its own hooked clean pass and its own masked passes (per layer, ``chunk`` channels per forward pass;
    masked inputs for PCAM+, complement inputs for PCAM-, both for PCAM+-), no channel skipped, inputs in the
    default (contiguous) memory format. Same formulas as :mod:`methods.polycam` (so the same maps):
    ``{"pcam<w>": [B,H,W]}`` and, with ``ablations``, the fusion steps, isolated-layer maps and no-LNorm maps.
    Passes per image: ``3 + C (PCAM+) + C (PCAM-) + 2 C (PCAM+-)`` with ``C`` the channels of all layers."""
    with torch.no_grad():
        return _reference_polycam(model, x, targets, layers, percent, chunk, weightings, ablations)


def _reference_polycam(model, x, targets, layers, percent, chunk, weightings, ablations):
    net, out_size = model.net, tuple(x.shape[-2:])
    out: dict[str, list[torch.Tensor]] = {}
    for w in weightings:
        for i in range(x.shape[0]):
            xi, ci = x[i:i + 1], targets[i:i + 1]
            with OutputRecorder(net, layers, clone=True) as rec:
                clean = class_scores(net(xi), ci)[0]
            cams = []
            for name in layers:
                a = rec.outputs[name][0]  # [C, h, w]
                u = percentile_normalize(a, percent)
                weights = []
                for s in range(0, a.shape[0], chunk):
                    m = resize(u[s:s + chunk], out_size)[:, None]  # [k, 1, H, W]
                    cls = ci.expand(m.shape[0])
                    if w in ("p", "pm"):
                        sp = class_scores(net(m * xi), cls)
                    if w in ("m", "pm"):
                        sm = class_scores(net((1.0 - m) * xi), cls)
                    weights.append(sp if w == "p" else torch.relu(clean - sm) if w == "m" else
                                   torch.relu(sp + clean - sm))
                wt = torch.cat(weights)
                cams.append(torch.relu(torch.einsum("k,khw->hw", wt, a.float()))[None])
            steps = fuse(cams, out_size, percent, use_lnorm=True, all_steps=ablations)
            maps = {f"pcam{w}": steps[-1]}
            if ablations:
                maps.update({f"pcam{w}_step{k}": m for k, m in enumerate(steps[:-1], start=1)})
                maps.update({f"cam{w}_l{k}": resize(c, out_size) for k, c in enumerate(cams, start=1)})
                maps[f"pcam{w}_nolnorm"] = fuse(cams, out_size, percent, use_lnorm=False, all_steps=False)[-1]
            for k, m in maps.items():
                out.setdefault(k, []).append(m)
    return {k: torch.cat(v) for k, v in out.items()}
