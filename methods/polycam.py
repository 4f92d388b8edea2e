r"""Poly-CAM (Englebert et al.): PCAM+ ``pcamp``, PCAM- ``pcamm`` and PCAM+- ``pcampm``, paper Eq. 1-7, with every
detail the paper leaves out taken from the reference code (docs/protocol.md).

Notation: ``x`` the normalised image, ``c`` the target class, ``f_c`` the *softmax probability* of ``c`` (a
sigmoid if the model has a single output), ``A_l^k`` channel ``k`` of layer ``l`` (raw activation of the clean
image; layers shallow -> deep, ``l = 1..L``), ``p = outlier_percent`` (0.1).

* Channel mask (percentile normaliser, applied per channel over H x W, then bilinear upsampling to the input size,
  align_corners=False)::

      u(A) = clamp((A - q_p(A)) / max(q_{100-p}(A), 1e-12), 0, 1)      m_l^k = up(u(A_l^k))

  ``q`` are percentiles with numpy's default 'linear' interpolation, computed on the device. It divides by the
  99.9th percentile, not by the range: a channel spanning 10..25 maps to 0..0.6. (The paper's Eq. 4 writes
  ``u(up(A))``; the reference normalises at the layer's resolution and then upsamples, as here.)
* Weights (Eq. 4-6; no baseline subtraction: f_c(X_b) = 0)::

      CIC  w+  = f_c(x * m)                                  (pcamp)
      CDC  w-  = ReLU(f_c(x) - f_c(x * up(1 - u(A))))         (pcamm)
      CVC  w+- = ReLU(f_c(x * m) + f_c(x) - f_c(x * up(1 - u(A))))   (pcampm)

* Per-layer map (Eq. 2): ``CAM_l = ReLU(sum_k w_l^k A_l^k)``.
* Fusion (Eq. 3), deepest to shallowest, with LNorm (Eq. 1) on the size of the deeper running map::

      P_L = ReLU(CAM_L)
      P_l = ReLU(LNorm(CAM_l, size(P_{l+1})) * up(P_{l+1}, size(CAM_l)))
      LNorm(M, s) = M / max(up(down(M, s), size(M)), 1e-12)

  ``down``/``up`` are bilinear (align_corners=False, no antialiasing); for an exact 2x step the bilinear
  downsample is the 2x2 average pool of the paper's Eq. 1 (for ResNet50's reference list, 112 -> 28 px, it averages
  the 2x2 centre of each 4x4 block, and between two 7 px layers LNorm is M / max(M, 1e-12), as the
  reference code computes it). The running map ``P`` is used raw in the recursion; the map
  *reported* after each step is ``up(u(P_l), input size)``; the last one is the Poly-CAM map.
* Without LNorm (Eq. 7, Appendix B.2): ``P_l = ReLU(CAM_l * up(P_{l+1}))``, reported the same way.

Outputs. ``pcampm`` derives all three weightings from one set of passes (masked ``x*m``, complement ``x*(1-m)``
and the clean ``x``) and returns ``pcamp`` and ``pcamm`` as variants; ``pcamp`` (masked passes only) and
``pcamm`` (complement passes only) give the identical maps at half the cost. With ``ablations=True`` each weighting
``W`` in ``p, m, pm`` that a class computes also yields (``L`` = number of layers, 5 for every preset):

* ``pcamW_step{k}``, k = 1..L-1: the reported map after fusion step k (k = 1: the deepest layer alone; step L is
  the Poly-CAM map itself, stored under ``pcamW``, so it is not duplicated). Paper Tables 2-3 (Poly-CAM rows).
* ``camW_l{i}``, i = 1..L (l1 = shallowest, the order of the layer list): the isolated-layer map
  ``ReLU(sum_k w_k A_i^k)`` with the same weights, raw (not normalised), bilinearly upsampled to the input size,
  as the reference's intermediate maps were evaluated. Paper Tables 2-3 (CAM rows).
* ``pcamW_nolnorm``: Poly-CAM without LNorm (Eq. 7).

The ablations use the same layer list as the main maps (``layers``). The reference ran its ResNet50 ablations on
the paper-text list: for those use ``layers="paper_text"`` (a separate run: the parameters are stored with maps).

Parameters: ``layers`` (None: the model's paper preset ``model.polycam_layers``; a preset name from
``model.layer_sets``; or a list of module names, shallow -> deep), ``ablations`` (paper: True, quick: False),
``outlier_percent`` (0.1).

Batching. One hooked clean forward pass per ``batch_size`` images records every layer's activations (the hooks are
removed afterwards, even on error; each hook keeps the last call of its module, as the reference). Then the masked
and complement inputs of all channels of all layers of all images form one list of tasks that goes through the
model ``batch_size`` inputs at a time: each chunk builds its masks and inputs on the device from the activations
and the per-channel percentiles, and the softmax probability of each image's own target is written into a device
tensor; nothing is copied to the host inside the loop. Memory: the activations of the images of one call (the
harness passes at most ``batch_size`` images) plus one chunk of ``batch_size`` inputs.

Constant channels. A channel whose activation is constant over H x W has ``u(A) = 0`` exactly (its percentiles
equal the constant), so its masked input is the all-zero image and its complement input is ``x`` itself. Its
forward passes are skipped: ``f_c(x * 0)`` is taken from one forward pass of the zero image per call (made only if
such a channel exists), and ``f_c(x * 1) = f_c(x)`` from the clean pass. So its weights are ``w+ = w+- =
f_c(0)`` and ``w- = 0``. This is *not* the same as dropping the channel: a constant non-zero channel adds
``w * constant`` to ``CAM_l``, and it still does. The result equals the unskipped computation (within float
tolerance, as any change of batch composition), which is what the reference does.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.core.cost import Cost
from benchmark.core.hooks import OutputRecorder
from benchmark.models.layers import output_channels

from .base import Method, MethodError, register_method

EPS = 1e-12
WEIGHTINGS = ("p", "m", "pm")  # CIC (w+), CDC (w-), CVC (w+-)
_QUANTILE_BLOCK = 1 << 22  # elements per block of the percentile computation (bounds its copies)


# ----------------------------------------------------------------------------------------------- operators

def percentiles(a: torch.Tensor, percent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_p, q_{100-p})`` of ``a[..., h, w]`` over its last two dims, numpy's default 'linear' interpolation.

    Exact order statistics (``topk``) interpolated with ``torch.lerp`` (numpy's two-sided lerp), on ``a``'s device.
    """
    h, w = a.shape[-2:]
    n = h * w
    lead = a.shape[:-2]
    a = a.reshape(-1, *a.shape[-3:]) if a.ndim >= 3 else a.reshape(1, 1, h, w)  # [N, C, h, w] (a view if possible)
    lo_out = torch.empty(a.shape[:2], dtype=a.dtype, device=a.device)
    hi_out = torch.empty_like(lo_out)
    # numpy: virtual index q (n - 1), q = percent / 100; interpolate the order statistics around it
    spec = []
    for q in (percent / 100.0, (100.0 - percent) / 100.0):
        pos = q * (n - 1)
        i0 = min(int(math.floor(pos)), n - 1)
        i1 = min(i0 + 1, n - 1)
        spec.append((i0, i1, pos - i0))
    (l0, l1, lg), (h0, h1, hg) = spec
    per_item = a.shape[1] * n
    step = max(1, _QUANTILE_BLOCK // per_item)  # images per block: copies (channels_last) stay block-sized
    for s in range(0, a.shape[0], step):
        flat = a[s:s + step].reshape(-1, n)
        small = torch.topk(flat, l1 + 1, dim=1, largest=False, sorted=True).values  # order stats 0..l1
        lo_out[s:s + step] = torch.lerp(small[:, l0], small[:, l1], lg).view(-1, a.shape[1])
        big = torch.topk(flat, n - h0, dim=1, largest=True, sorted=True).values  # big[:, j] = order stat n-1-j
        hi_out[s:s + step] = torch.lerp(big[:, n - 1 - h0], big[:, n - 1 - h1], hg).view(-1, a.shape[1])
    return lo_out.view(lead), hi_out.view(lead)


def percentile_normalize(a: torch.Tensor, percent: float = 0.1) -> torch.Tensor:
    """``u(A) = clamp((A - q_p(A)) / max(q_{100-p}(A), 1e-12), 0, 1)`` per map over the last two dims."""
    lo, hi = percentiles(a, percent)
    return _normalize_with(a, lo, hi)


def _normalize_with(a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return ((a - lo[..., None, None]) / hi.clamp_min(EPS)[..., None, None]).clamp(0.0, 1.0)


def resize(m: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of ``[B, h, w]`` maps (align_corners=False, no antialiasing)."""
    size = tuple(int(s) for s in size)
    if tuple(m.shape[-2:]) == size:
        return m
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def lnorm(m: torch.Tensor, size) -> torch.Tensor:
    """Eq. 1: ``LNorm(M, s) = M / max(up(down(M, s), size(M)), 1e-12)``, ``M`` of shape [B, h, w]."""
    return m / resize(resize(m, size), m.shape[-2:]).clamp_min(EPS)


def fuse(cams: list[torch.Tensor], out_size, percent: float = 0.1, use_lnorm: bool = True,
         all_steps: bool = True) -> list[torch.Tensor]:
    """Eq. 3 (Eq. 7 without LNorm) on per-layer maps ``cams`` (shallow -> deep, each [B, h_l, w_l]).

    Returns the reported map after each step, deepest first: ``up(u(P_l), out_size)`` (only the last one when
    ``all_steps`` is False).
    """
    out, p = [], None
    for i, cam in enumerate(reversed(cams)):
        if p is None:
            p = cam
        else:
            p = (lnorm(cam, p.shape[-2:]) if use_lnorm else cam) * resize(p, cam.shape[-2:])
        p = torch.relu(p)
        if all_steps or i == len(cams) - 1:
            out.append(resize(percentile_normalize(p, percent), out_size))
    return out


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``f_c``: softmax probability of ``classes[i]`` in row i (sigmoid for a single-output model)."""
    logits = logits.float()
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    if logits.shape[1] == 1:
        return probs[:, 0]
    return probs.gather(1, classes.view(-1, 1))[:, 0]


# ----------------------------------------------------------------------------------------------- layers

def resolve_layers(model, layers: Any) -> list[str]:
    """The layer list, shallow -> deep: ``None`` -> the model's paper preset, a preset name, or module names."""
    if layers is None:
        names = list(model.polycam_layers)
    elif isinstance(layers, str):
        if layers not in model.layer_sets:
            raise MethodError(f"unknown Poly-CAM layer preset {layers!r} for {model.name}; "
                              f"presets: {sorted(model.layer_sets)}")
        names = list(model.layer_sets[layers])
    elif isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers):
        names = list(layers)
    else:
        raise MethodError(f"layers must be None, a preset name or a list of module names, not {layers!r}")
    if not names:
        raise MethodError("Poly-CAM needs at least one layer")
    known = dict(model.net.named_modules())
    missing = [n for n in names if n not in known or n == ""]
    if missing:
        raise MethodError(f"{model.name} has no module(s) {missing}")
    return names


def channel_counts(model, layers: list[str], size: int | None = None) -> list[int]:
    """Channels of each layer (one hooked forward pass on a zero input, cached per network and list)."""
    return output_channels(model.net, layers, model.device, size or model.input_size)


# ----------------------------------------------------------------------------------------------- methods

ABLATION_RE = re.compile(r"^(pcam(p|m|pm)_(step\d+|nolnorm)|cam(p|m|pm)_l\d+)$")


def is_ablation(output_id: str) -> bool:
    """True for the ids of Poly-CAM's ablation maps (``pcamW_stepK``, ``camW_lI``, ``pcamW_nolnorm``)."""
    return bool(ABLATION_RE.match(output_id))


POLYCAM_PAPER_PARAMS = {"layers": None, "ablations": True, "outlier_percent": 0.1}
POLYCAM_QUICK_PARAMS = {"ablations": False}


class _PolyCAM(Method):
    """Shared computation of every Poly-CAM class; ``weightings`` says which of w+, w-, w+- it derives.

    Masked passes are needed for w+ and w+-, complement passes for w- and w+-.
    """

    family = "polycam"
    citation = ("Englebert, Cornu & De Vleeschouwer, Poly-CAM: High resolution class activation map for "
                "convolutional neural networks, 2022")
    paper_params = POLYCAM_PAPER_PARAMS  # one dict for pcamp, pcamm and pcampm: the harness compares them
    quick_params = POLYCAM_QUICK_PARAMS

    def check_params(self):
        self.require("outlier_percent", 0.0 <= self.params["outlier_percent"] < 50.0, "in [0, 50) (a percentile)")
    weightings: tuple[str, ...] = ()
    _n_layers: int = 5  # the paper's layer count until a model is seen (check_applicable / explain fix it)

    # -- outputs -----------------------------------------------------------------------------------------
    def _ids(self, w: str) -> list[str]:
        ids = [f"pcam{w}"]
        if self.params["ablations"]:
            n = self._n_layers
            ids += [f"pcam{w}_step{k}" for k in range(1, n)]
            ids += [f"cam{w}_l{i}" for i in range(1, n + 1)]
            ids.append(f"pcam{w}_nolnorm")
        return ids

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(i for w in self.weightings for i in self._ids(w) if i != self.id)

    @property
    def _kinds(self) -> tuple[int, ...]:
        """Pass kinds needed: 0 = masked x*m, 1 = complement x*(1-m)."""
        plus = any(w in ("p", "pm") for w in self.weightings)
        minus = any(w in ("m", "pm") for w in self.weightings)
        return tuple(k for k, need in ((0, plus), (1, minus)) if need)

    def _layers(self, model) -> list[str]:
        layers = resolve_layers(model, self.params["layers"])
        self._n_layers = len(layers)
        return layers

    def check_applicable(self, model) -> None:
        self._layers(model)

    def cost(self, model) -> Cost:
        """Forward passes per image: (channels over the layers) x (1, or 2 for PCAM+-) + 1 clean pass (an upper
        bound: constant channels are skipped)."""
        return Cost(forward=float(sum(channel_counts(model, self._layers(model))) * len(self._kinds) + 1))

    # -- computation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, model, x, targets):
        layers = self._layers(model)
        percent = float(self.params["outlier_percent"])
        net, bs = model.net, max(1, int(self.batch_size))
        b_all, out_size = x.shape[0], x.shape[-2:]
        targets = targets.to(x.device).long()

        # 1. clean pass(es) with hooks: activations A_l [B, C_l, h_l, w_l] and f_c(x)
        acts = {n: [] for n in layers}
        clean = []
        with OutputRecorder(net, layers, clone=True) as rec:
            for s in range(0, b_all, bs):
                xs = x[s:s + bs].contiguous(memory_format=torch.channels_last)
                clean.append(class_scores(net(xs), targets[s:s + bs]))
                for n in layers:
                    acts[n].append(rec.pop(n))
        acts = [torch.cat(acts[n]) for n in layers]
        clean = torch.cat(clean)

        # 2. per-channel percentiles, constant channels, task list (one host sync per layer, before the loop)
        kinds = self._kinds
        nk = len(kinds)
        kinds_t = torch.tensor(kinds, device=x.device)
        stats, pairs, offsets, any_const = [], [], [0], False
        for a in acts:
            lo, hi = percentiles(a, percent)
            varying = a.amax(dim=(-2, -1)) != a.amin(dim=(-2, -1))
            p = varying.nonzero()  # [n_l, 2]: (image, channel), image-major
            any_const |= p.shape[0] < varying.numel()
            stats.append((lo, hi))
            pairs.append(p)
            offsets.append(offsets[-1] + p.shape[0] * nk)
        total = offsets[-1]

        def make_inputs(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Masked inputs of tasks start..stop-1 (possibly spanning layers) and their images."""
            xs, imgs = [], []
            for l, a in enumerate(acts):
                s, e = max(start, offsets[l]), min(stop, offsets[l + 1])
                if s >= e:
                    continue
                t = torch.arange(s - offsets[l], e - offsets[l], device=x.device)
                pr = pairs[l][t // nk]
                img, ch = pr[:, 0], pr[:, 1]
                lo, hi = stats[l]
                m = _normalize_with(a[img, ch], lo[img, ch], hi[img, ch])  # u(A) [n, h, w]
                comp = (kinds_t[t % nk] == 1).view(-1, 1, 1)
                m = torch.where(comp, 1.0 - m, m)
                xs.append(resize(m, out_size)[:, None] * x[img])
                imgs.append(img)
            return torch.cat(xs), torch.cat(imgs)

        # 3. the masked / complement passes, batch_size inputs per forward pass, scores kept on the device
        scores = torch.empty(total, device=x.device)
        for start in range(0, total, bs):
            stop = min(start + bs, total)
            inp, img = make_inputs(start, stop)
            scores[start:stop] = class_scores(net(inp.contiguous(memory_format=torch.channels_last)), targets[img])

        zero_score = None
        if any_const and 0 in kinds:  # f_c(x * 0) for the skipped masked passes of constant channels
            z = torch.zeros(1, *x.shape[1:], device=x.device).contiguous(memory_format=torch.channels_last)
            logits = net(z).expand(b_all, -1)
            zero_score = class_scores(logits, targets)

        # 4. weights, per-layer maps, fusion
        weights: dict[str, list[torch.Tensor]] = {w: [] for w in self.weightings}
        for l, a in enumerate(acts):
            bsz, c = a.shape[:2]
            sc = scores[offsets[l]:offsets[l + 1]].view(-1, nk)
            img, ch = pairs[l][:, 0], pairs[l][:, 1]
            sp = sm = None
            if 0 in kinds:
                sp = (zero_score[:, None].expand(bsz, c).clone() if zero_score is not None
                      else torch.zeros(bsz, c, device=x.device))
                sp[img, ch] = sc[:, kinds.index(0)]
            if 1 in kinds:
                sm = clean[:, None].expand(bsz, c).clone()  # constant channel: complement input = x
                sm[img, ch] = sc[:, kinds.index(1)]
            for w in self.weightings:
                if w == "p":
                    wt = sp
                elif w == "m":
                    wt = torch.relu(clean[:, None] - sm)
                else:
                    wt = torch.relu(sp + clean[:, None] - sm)
                weights[w].append(wt)

        out: dict[str, torch.Tensor] = {}
        for w in self.weightings:
            cams = [torch.relu(torch.einsum("bk,bkhw->bhw", wt, a.float())) for wt, a in zip(weights[w], acts)]
            steps = fuse(cams, out_size, percent, use_lnorm=True, all_steps=bool(self.params["ablations"]))
            out[f"pcam{w}"] = steps[-1]
            if self.params["ablations"]:
                for k, m in enumerate(steps[:-1], start=1):
                    out[f"pcam{w}_step{k}"] = m
                for i, cam in enumerate(cams, start=1):
                    out[f"cam{w}_l{i}"] = resize(cam, out_size)
                out[f"pcam{w}_nolnorm"] = fuse(cams, out_size, percent, use_lnorm=False, all_steps=False)[-1]
        return out


@register_method
class PCAMpm(_PolyCAM):
    """PCAM+- (CVC weights ``w = ReLU(f_c(x*m) + f_c(x) - f_c(x*(1-m)))``); also returns PCAM+ and PCAM- (and the
    ablations) from the same passes. See the module docstring for every formula."""

    id = "pcampm"
    weightings = ("pm", "p", "m")


@register_method
class PCAMp(_PolyCAM):
    """PCAM+ (CIC weights ``w = f_c(x*m)``), masked passes only. See the module docstring."""

    id = "pcamp"
    weightings = ("p",)


@register_method
class PCAMm(_PolyCAM):
    """PCAM- (CDC weights ``w = ReLU(f_c(x) - f_c(x*(1-m)))``), complement passes only. See the module docstring."""

    id = "pcamm"
    weightings = ("m",)
