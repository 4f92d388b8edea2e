r"""Synthetic localisation tasks for CALM, made on the fly (tests and ``scripts/calm_synthetic.py``).

Images ``[3, S, S]`` (S = 48): a textured background (smoothed colour noise plus random stripes) and one small
glyph (``G x G``, G = 8) at a uniformly random position; the glyph's shape decides the class. The glyph's pixels are
the ground truth of "where the cue is". A second, class-shared glyph is pasted at another random position:

- ``distractor`` task (3 classes): the same glyph for every class, so it carries no class information;
- ``pairs`` task (4 classes, CALM's Figure 1 in miniature): classes come in two families of two, and the shared
  glyph is the family's 16x16 body. It tells the family, so it is evidence for both siblings; only the small glyph
  tells a class from its sibling.

Models share one small trunk (two 3x3 and two 1x1 conv + BN + ReLU stages, two 2x2 max-pools: a 12x12 feature map, a
10-pixel receptive field):
``CamNet`` = trunk + global average pooling + Linear (the ordinary classifier; its CAM is
``W_c . g + b_c``), and :class:`benchmark.models.calm.CalmNet` on the same trunk (CALM-EM, CALM-ML).

Localisation scores of a map against the glyph mask (maps upsampled bilinearly to S x S):

- pointing game: the map's arg-max pixel (first in raster order) lies in the glyph's box (``on_shared``: in the
  shared glyph's box instead);
- pixel AP: average precision of the map's values as a ranking of the glyph's pixels (per image, ties in raster
  order after a stable descending sort), averaged over images.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.calm import CalmNet, calm_loss, calm_scores, init_heads

GLYPHS = {
    "cross": ["X......X", ".X....X.", "..X..X..", "...XX...", "...XX...", "..X..X..", ".X....X.", "X......X"],
    "ring": ["XXXXXXXX", "X......X", "X......X", "X......X", "X......X", "X......X", "X......X", "XXXXXXXX"],
    "plus": ["...XX...", "...XX...", "...XX...", "XXXXXXXX", "XXXXXXXX", "...XX...", "...XX...", "...XX..."],
    "bars": ["XX.XX.XX", "XX.XX.XX", "XX.XX.XX", "XX.XX.XX", "XX.XX.XX", "XX.XX.XX", "XX.XX.XX", "XX.XX.XX"],
}
DISTRACTOR = ["XXXXXXXX", "XXXXXXXX", "XX....XX", "XX....XX", "XX....XX", "XX....XX", "XXXXXXXX", "XXXXXXXX"]


def _glyph(rows) -> torch.Tensor:
    return torch.tensor([[c == "X" for c in r] for r in rows], dtype=torch.float32)


TASKS = ("distractor", "pairs")
BODY = 16  # side of a family's shared body (pairs task)


def _body(family: int, side: int = BODY) -> torch.Tensor:
    """A family's body texture, side x side: 2x2 checkerboard (family 0) or diagonal stripes of period 4 (family 1)."""
    r, c = torch.arange(side).view(side, 1), torch.arange(side).view(1, side)
    return ((((r // 2) + (c // 2)) if family == 0 else ((r + c) // 2)) % 2 == 0).float()


def _disjoint(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Two square boxes (row, col, side) do not overlap."""
    (r, c, sa), (r2, c2, sb) = a, b
    return r2 >= r + sa or r2 + sb <= r or c2 >= c + sa or c2 + sb <= c


def make_synthetic(n: int, seed: int, classes: int = 3, size: int = 48, task: str = "distractor"
                   ) -> dict[str, torch.Tensor]:
    """{"x": [n,3,S,S] in about [-1, 1], "y": [n], "mask": [n,S,S] glyph pixels, "box": [n,4] (y0, x0, y1, x1),
    "shared_box": [n,4] the class-shared glyph}.

    ``distractor``: one 8x8 glyph per class and one distractor glyph, the same for every class.
    ``pairs`` (4 classes, CALM's Figure 1 in miniature): classes come in two families of two; each image holds its
    family's 16x16 body (shared by the two sibling classes, so it tells the family, not the class) and its class's
    8x8 glyph (the only thing that tells a class from its sibling), at random non-overlapping positions. The glyph
    is the ground truth; the body is where a map that follows family evidence goes instead."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if task == "pairs" and classes != 4:
        raise ValueError(f"the pairs task has 4 classes (two families of two), not {classes}")
    g = torch.Generator().manual_seed(seed)
    names = list(GLYPHS)[:classes]
    glyphs = torch.stack([_glyph(GLYPHS[k]) for k in names])
    gs = glyphs.shape[-1]
    noise = torch.rand(n, 3, size // 4, size // 4, generator=g)
    bg = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    freq = torch.rand(n, 1, 1, 1, generator=g) * 0.8 + 0.3
    phase = torch.rand(n, 1, 1, 1, generator=g) * 6.28
    yy = torch.arange(size).view(1, 1, size, 1).float()
    xx = torch.arange(size).view(1, 1, 1, size).float()
    stripes = 0.25 * torch.sin(freq * (xx + yy * torch.rand(n, 1, 1, 1, generator=g)) + phase)
    x = bg + stripes + 0.1 * torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    mask = torch.zeros(n, size, size)
    box = torch.zeros(n, 4, dtype=torch.long)
    shared_box = torch.zeros(n, 4, dtype=torch.long)
    colour = torch.rand(n, 3, generator=g) * 0.5 + 1.0
    ss = gs if task == "distractor" else BODY
    shared = [_glyph(DISTRACTOR)] * classes if task == "distractor" else [_body(k // 2) for k in range(classes)]
    for i in range(n):
        while True:  # the class glyph's corner (r, c) and the shared glyph's (dr, dc), not overlapping
            if task == "distractor":
                r, c, dr, dc = (int(v) for v in torch.randint(0, size - gs + 1, (4,), generator=g))
            else:
                dr, dc = (int(v) for v in torch.randint(0, size - ss + 1, (2,), generator=g))
                r, c = (int(v) for v in torch.randint(0, size - gs + 1, (2,), generator=g))
            if _disjoint((r, c, gs), (dr, dc, ss)):
                break
        sh, gl = shared[y[i]], glyphs[y[i]]
        x[i, :, dr:dr + ss, dc:dc + ss] = torch.where(sh.bool(), colour[i].view(3, 1, 1),
                                                      x[i, :, dr:dr + ss, dc:dc + ss])
        x[i, :, r:r + gs, c:c + gs] = torch.where(gl.bool(), colour[i].view(3, 1, 1), x[i, :, r:r + gs, c:c + gs])
        mask[i, r:r + gs, c:c + gs] = gl
        box[i] = torch.tensor([r, c, r + gs, c + gs])
        shared_box[i] = torch.tensor([dr, dc, dr + ss, dc + ss])
    return {"x": (x - 0.5) / 0.5, "y": y, "mask": mask, "box": box, "shared_box": shared_box}


def small_trunk(width: int = 32) -> nn.Sequential:
    """3 -> w -> 2w -> 2w -> 2w channels: 3x3 conv, 2x2 max-pool, 3x3 conv, 2x2 max-pool, two 1x1 convs (each
    conv with BN and ReLU): [B, 2w, S/4, S/4], receptive field 10 pixels (a glyph is 8)."""
    def stage(cin, cout, k):
        return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*stage(3, width, 3), nn.MaxPool2d(2), *stage(width, 2 * width, 3), nn.MaxPool2d(2),
                         *stage(2 * width, 2 * width, 1), *stage(2 * width, 2 * width, 1))


class CamNet(nn.Module):
    """Trunk + global average pooling + Linear: the ordinary CAM classifier."""

    def __init__(self, trunk: nn.Module, channels: int, classes: int):
        super().__init__()
        self.backbone = trunk
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean(dim=(2, 3)))

    def logits_and_cam(self, x, targets):
        """(logits [B, C], the CAM of ``targets`` [B, h, w]) from one pass of the trunk."""
        g = self.backbone(x)
        cam = torch.einsum("bchw,bc->bhw", g, self.fc.weight[targets]) + self.fc.bias[targets][:, None, None]
        return self.fc(g.mean(dim=(2, 3))), cam


OPTIMIZERS = ("reference", "adam")


def make_optimizer(model: nn.Module, name: str, lr: float | None = None) -> torch.optim.Optimizer:
    """``reference``: CALM's schedule (docs/calm.md): SGD Nesterov, momentum 0.9, weight decay 1e-4, lr
    0.01 for the trunk and 10x for the heads (``fc`` / ``conv_last`` / ``attention``), the same for CAM and CALM;
    ``adam``: Adam, lr 2e-3, no weight decay, one group."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr or 2e-3)
    if name != "reference":
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")
    lr = lr or 0.01
    trunk = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    return torch.optim.SGD([{"params": trunk, "lr": lr}, {"params": heads, "lr": 10 * lr}], momentum=0.9,
                           nesterov=True, weight_decay=1e-4)


def train_model(model: nn.Module, data: dict, kind: str, epochs: int, seed: int, batch_size: int = 64,
                optimizer: str = "reference", lr: float | None = None) -> dict:
    """Train on ``data``; ``kind`` = cam (cross-entropy), em or ml (CALM losses). Returns timing and accuracy."""
    torch.manual_seed(seed)
    opt = make_optimizer(model, optimizer, lr)
    n = len(data["y"])
    per_epoch = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        t0 = time.perf_counter()
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            x, y = data["x"][idx], data["y"][idx]
            if kind == "cam":
                loss = F.cross_entropy(model(x), y)
            else:
                f, a = model.heads(x)
                loss = calm_loss(kind, f, a, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        per_epoch.append(time.perf_counter() - t0)
    model.eval()
    return {"seconds_per_epoch": float(np.mean(per_epoch)), "epochs": epochs, "images_per_epoch": n,
            "optimizer": optimizer}


@torch.no_grad()
def predict_and_maps(model: nn.Module, data: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """(top-1 [n], maps [n,S,S] of the true class, CALM's scores or None): CAM for ``cam``, jointll p(y,z|x) for
    CALM; one pass of the model."""
    x, y = data["x"], data["y"]
    if kind == "cam":
        logits, maps = model.logits_and_cam(x, y)
        pred, s = logits.argmax(1), None
    else:
        s = calm_scores(*model.heads(x))
        pred = s["p_y"].argmax(1)
        maps = s["joint"][torch.arange(len(y)), y]
    maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return pred, maps, s


def _grow(boxes: torch.Tensor, tol: int) -> torch.Tensor:
    return boxes + torch.tensor([-tol, -tol, tol, tol])


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, tol: int = 0) -> float:
    """Fraction of maps whose arg-max pixel (first in raster order) lies in the box (y0, x0, y1, x1) grown by
    ``tol`` pixels on every side."""
    w = maps.shape[-1]
    boxes = _grow(boxes, tol)
    arg = maps.flatten(1).argmax(1)
    r, c = arg // w, arg % w
    hit = (r >= boxes[:, 0]) & (r < boxes[:, 2]) & (c >= boxes[:, 1]) & (c < boxes[:, 3])
    return hit.float().mean().item()


def energy_in_box(maps: torch.Tensor, boxes: torch.Tensor, tol: int = 0) -> float:
    """Mean over images of the share of the map's positive mass inside the box grown by ``tol`` pixels
    (energy-based pointing game, Wang et al. 2020): sum_box relu(m) / sum relu(m)."""
    m = maps.clamp_min(0)
    boxes = _grow(boxes, tol)
    h, w = maps.shape[-2:]
    rr = torch.arange(h).view(1, h, 1)
    cc = torch.arange(w).view(1, 1, w)
    inside = ((rr >= boxes[:, 0, None, None]) & (rr < boxes[:, 2, None, None]) & (cc >= boxes[:, 1, None, None])
              & (cc < boxes[:, 3, None, None]))
    share = (m * inside).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-12)
    return share.mean().item()


def pixel_ap(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the average precision of the map ranking the mask's pixels."""
    flat, gt = maps.flatten(1), masks.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    hits = gt.gather(1, order)
    prec = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1)
    ap = (prec * hits).sum(1) / hits.sum(1).clamp_min(1)
    return ap.mean().item()


CALM_INITS = ("scratch", "cam")


def run_experiment(seed: int = 0, n_train: int = 1536, n_test: int = 256, epochs: int = 6, classes: int | None = None,
                   width: int = 32, size: int = 48, kinds=("em", "ml", "cam"), optimizer: str = "reference",
                   task: str = "distractor", calm_init: str = "scratch") -> dict:
    """Train each kind on the same data with the same optimizer for ``epochs``; score on held-out images.
    ``classes``: 3 for the distractor task, 4 for pairs (the default). ``calm_init``: ``scratch`` (every model
    from the same random trunk) or ``cam`` (as ``train-calm --head-init classifier`` does from a torchvision
    classifier: each CALM model starts from a copy of the trained CAM classifier -- its trunk, its ``fc`` as the
    class head, a uniform cue head (:func:`benchmark.models.calm.init_heads`, mode ``classifier``) -- and is
    fine-tuned for ``epochs``)."""
    if calm_init not in CALM_INITS:
        raise ValueError(f"calm_init must be one of {CALM_INITS}, not {calm_init!r}")
    if calm_init == "cam" and "cam" not in kinds:
        raise ValueError("calm_init='cam' starts CALM from the CAM classifier: kinds must include 'cam'")
    classes = classes or (4 if task == "pairs" else 3)
    train = make_synthetic(n_train, seed, classes, size, task)
    test = make_synthetic(n_test, seed + 1, classes, size, task)
    out = {}
    for kind in sorted(kinds, key=lambda k: k != "cam") if calm_init == "cam" else kinds:
        torch.manual_seed(seed)
        if kind == "cam":
            model = CamNet(small_trunk(width), 2 * width, classes)
        elif calm_init == "cam":
            cam = out["cam"]["model"]
            model = CalmNet(copy.deepcopy(cam.backbone), 2 * width, classes, kind, "small_cnn")
            init_heads(model, cam.fc, mode="classifier")
        else:
            model = CalmNet(small_trunk(width), 2 * width, classes, kind, "small_cnn")  # uniform cue head
        timing = train_model(model, train, kind, epochs, seed, optimizer=optimizer)
        pred, maps, scores = predict_and_maps(model, test, kind)
        cue = cue_head_scores(scores, test) if kind != "cam" else {}
        out[kind] = {"accuracy": (pred == test["y"]).float().mean().item(),
                     "pointing_game": pointing_game(maps, test["box"]),
                     "pointing_game_tol4": pointing_game(maps, test["box"], 4),
                     "energy_in_box": energy_in_box(maps, test["box"]),
                     "energy_in_box_tol4": energy_in_box(maps, test["box"], 4),
                     "pixel_ap": pixel_ap(maps, test["mask"]),
                     "pointing_game_on_shared": pointing_game(maps, test["shared_box"]),
                     **cue, **timing, "model": model}
    return {k: out[k] for k in kinds}


@torch.no_grad()
def cue_head_scores(s: dict, data: dict) -> dict:
    """Where CALM's cue head p(z|x) alone points (the ``saliency`` score map, upsampled like the others): its
    pointing game and energy in the glyph's box, and how peaked it is (mean over images of max_z a_z / mean_z a_z;
    1 = uniform). And how flat the top of the jointll map p(y*, z|x) is, on the feature grid: the number of cells
    within 10 % of its maximum (``joint_cells_near_peak``), and p(y*|x, z) at its peak cell and at the cells under
    the centres of the glyph and of the shared glyph (``p_class_at_peak``, ``p_class_at_glyph``,
    ``p_class_at_shared``), means over images. ``s``: :func:`benchmark.models.calm.calm_scores` of ``data["x"]``."""
    pz = F.interpolate(s["p_z"], size=data["x"].shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    a = s["a"].flatten(1)
    n, h, w = len(data["y"]), *s["a"].shape[-2:]
    rows = torch.arange(n)
    joint = s["joint"][rows, data["y"]].flatten(1)  # [n, h*w]
    peak = joint.argmax(1)
    stride = data["x"].shape[-1] // w
    p_class = s["p_y_given_z"][rows, data["y"]].flatten(1)

    def at_centre(boxes):  # p(y*|x, z) at the cell under each box's centre
        cell = ((boxes[:, :2] + boxes[:, 2:]) // 2 // stride).clamp(max=h - 1)
        return p_class[rows, cell[:, 0] * w + cell[:, 1]].mean().item()

    return {"cue_pointing_game": pointing_game(pz, data["box"]), "cue_energy_in_box": energy_in_box(pz, data["box"]),
            "cue_peak_over_mean": (a.amax(1) / a.mean(1).clamp_min(1e-12)).mean().item(),
            "joint_cells_near_peak": (joint >= 0.9 * joint.amax(1, keepdim=True)).sum(1).float().mean().item(),
            "p_class_at_peak": p_class[rows, peak].mean().item(),
            "p_class_at_glyph": at_centre(data["box"]), "p_class_at_shared": at_centre(data["shared_box"])}
