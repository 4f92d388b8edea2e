r"""CALM's attribution maps as methods (``calm_em``, ``calm_ml``, ``calm_cam``): the score maps of a model of
:mod:`benchmark.models.calm` (docs/calm.md).

CALM is not post hoc: it is its own classifier, and its maps exist only on a model trained with the matching
method: ``calm_em`` on CALM-EM models, ``calm_ml`` on CALM-ML models, ``calm_cam`` on the reference's CAM baseline
(the same trunk, class maps then global average pooling; ``train-calm --loss cam`` or the authors' CAM files).

Score maps (``score_map``), as the reference's ``get_cam`` (``network/universal.py``), for the explained class y:

- ``jointll`` p(y,z|x) (default of calm_em/calm_ml), ``vanilla`` f_y (the CAM of the class maps; default of
  calm_cam), ``gtcond`` p(z|x,y) = p(y,z|x) / (p(y|x) + 1e-10), ``saliency`` p(z|x);
- ``vanilla-saliency``: sum over every class c of minmax(f_c) (the same map for every y);
- ``<m>-superclass``: sum over the classes c of y's superclass of ``<m>``'s map of c (``vanilla-superclass`` sums
  minmax(f_c); ``jointll-superclass``, ``gtcond-superclass`` the raw maps); ``<m>-superclass-mean``: their mean
  (``jointll`` and ``gtcond`` only, as the reference). The superclass of y is the parameter ``superclass``: a JSON
  file or value, either ``{"y": [c, ...]}`` (the reference's ``superclass[y]``, its subclasses) or a list of
  disjoint groups ``[[c, ...], ...]`` (y's group). The reference's evaluation scripts never pass one, so these
  maps cannot run there; here they need ``--set calm_em.superclass=FILE``.

``minmax`` of a constant class map is 0/0 = NaN, as in the reference; a map holding a NaN then becomes zeros in
the normalisation. Norm (``norm``, the reference's ``normalize_scoremap``): ``clipping`` (default of calm_em and
calm_ml): NaN or constant maps become zeros, values clipped to [0, 1]; ``minmax`` (default of calm_cam, the
reference's default ``norm_type``), ``max``; ``none`` returns the raw map (what CALM's evaluations use under
their ``calm`` protocol, which normalise later or not at all). A map is scored with the model's own p(y|x): its
network returns log p(y|x), and every metric takes the softmax.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmark.core.cost import Cost
from benchmark.models.calm import POSTERIOR_EPS, TRAINING_LABELS, CalmNet, is_calm

from .base import Method, MethodError, NotApplicable, register_method

BASE_MAPS = ("jointll", "vanilla", "gtcond", "saliency")
SUPERCLASS_MAPS = ("vanilla-superclass", "jointll-superclass", "jointll-superclass-mean", "gtcond-superclass",
                   "gtcond-superclass-mean")
SCORE_MAPS = BASE_MAPS + ("vanilla-saliency",) + SUPERCLASS_MAPS
NORMS = ("clipping", "minmax", "max", "none")


# ------------------------------------------------------------------------------------------ score maps

def normalize_map(maps: torch.Tensor, norm: str) -> torch.Tensor:
    """The reference's ``normalize_scoremap`` per map [B,h,w]: NaN or constant -> zeros; ``max``: /max;
    ``minmax``: (m - min)/(max - min); ``clipping``: as is; then clipped to [0, 1] (``none``: untouched)."""
    if norm == "none":
        return maps
    flat = maps.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
    bad = (torch.isnan(flat).any(1) | (flat.amin(1) == flat.amax(1))).view(-1, 1, 1)
    if norm == "max":
        maps = maps / hi
    elif norm == "minmax":
        maps = (maps - lo) / (hi - lo)
    elif norm != "clipping":
        raise MethodError(f"norm must be one of {NORMS}, not {norm!r}")
    maps = torch.where(bad, torch.zeros_like(maps), maps)
    return maps.nan_to_num(0.0).clamp(0.0, 1.0)


def superclass_groups(spec, num_classes: int) -> dict[int, list[int]]:
    """{class: the classes summed for it} from ``spec``: a JSON file path, a JSON string, ``{"y": [c, ...]}`` or a
    list of disjoint groups ``[[c, ...], ...]``."""
    if spec is None:
        raise MethodError("the superclass score maps need the parameter superclass: a JSON file (or value) "
                          "{\"class\": [classes]} or [[classes], ...], e.g. --set calm_em.superclass=groups.json")
    if isinstance(spec, str):
        text = Path(spec).read_text() if Path(spec).is_file() else spec
        try:
            spec = json.loads(text)
        except json.JSONDecodeError:
            raise MethodError(f"superclass {spec!r} is neither a JSON file nor a JSON value") from None
    if isinstance(spec, dict):
        groups = {int(k): [int(c) for c in v] for k, v in spec.items()}
    elif isinstance(spec, list):
        groups = {}
        for g in spec:
            for c in g:
                if int(c) in groups:
                    raise MethodError(f"superclass groups overlap at class {c}")
                groups[int(c)] = [int(x) for x in g]
    else:
        raise MethodError(f"superclass must be a dict or a list of groups, not {type(spec).__name__}")
    bad = sorted({c for k, v in groups.items() for c in [k, *v] if not 0 <= c < num_classes})
    if bad:
        raise MethodError(f"superclass names classes outside 0..{num_classes - 1}: {bad[:5]}")
    return groups


def _minmax_per_class(f: torch.Tensor) -> torch.Tensor:
    """(f - min) / (max - min) over each class map of [B,C,h,w] (0/0 = NaN for a constant map, as the reference)."""
    lo = f.amin(dim=(2, 3), keepdim=True)
    hi = (f - lo).amax(dim=(2, 3), keepdim=True)
    return (f - lo) / hi


def _group_weights(classes: torch.Tensor, groups: dict[int, list[int]], num_classes: int, mean: bool):
    """[B, K, C] weights: 1 (or 1/|group|) on the classes of each target's superclass."""
    w = torch.zeros(*classes.shape, num_classes, dtype=torch.float64)
    for idx, y in enumerate(classes.flatten().tolist()):
        if y not in groups:
            raise MethodError(f"class {y} has no superclass in the superclass parameter")
        g = groups[y]
        w.view(-1, num_classes)[idx, g] = 1.0 / len(g) if mean else 1.0
    return w


def score_maps(net: CalmNet, x: torch.Tensor, classes: torch.Tensor, score_map: str = "jointll",
               superclass=None) -> torch.Tensor:
    """[B, K, h, w] raw score maps of ``classes`` [B, K] (or [B]) for the images ``x`` (one forward pass)."""
    if score_map not in SCORE_MAPS:
        raise MethodError(f"score_map must be one of {SCORE_MAPS}, not {score_map!r}")
    if classes.ndim == 1:
        classes = classes[:, None]
    s = net.scores(x)
    b, c, h, w = s["f"].shape
    if score_map == "saliency":
        return s["p_z"].expand(-1, classes.shape[1], -1, -1)
    if score_map == "vanilla-saliency":
        return _minmax_per_class(s["f"]).sum(dim=1, keepdim=True).expand(-1, classes.shape[1], -1, -1)
    base = score_map.split("-")[0]
    if base == "vanilla":
        full = s["f"]
    elif base == "jointll":
        full = s["joint"]
    else:  # gtcond
        full = s["joint"] / (s["p_y"][:, :, None, None] + POSTERIOR_EPS)
    if score_map in BASE_MAPS:
        return full.gather(1, classes[:, :, None, None].expand(-1, -1, h, w))
    if base == "vanilla":
        full = _minmax_per_class(full)
    weights = _group_weights(classes.cpu(), superclass_groups(superclass, c), c, score_map.endswith("-mean"))
    return torch.einsum("bkc,bchw->bkhw", weights.to(full.device, full.dtype), full)


class _Calm(Method):
    family = "calm"
    citation = ("Kim, Choe, Akata, Oh, Keep CALM and Improve Visual Feature Attribution, ICCV 2021 "
                "(github.com/naver-ai/calm)")
    needs_grad = False
    paper_params = {"score_map": "jointll", "norm": "clipping", "superclass": None}
    loss = ""

    def check_params(self):
        self.require("score_map", self.params["score_map"] in SCORE_MAPS, f"one of {SCORE_MAPS}")
        self.require("norm", self.params["norm"] in NORMS, f"one of {NORMS}")

    def check_applicable(self, model) -> None:
        label = TRAINING_LABELS[self.loss]
        if not is_calm(model):
            raise NotApplicable(
                f"{self.id} is the {label} model's own attribution: it needs such a model, not the classifier "
                f"{model.name}. Load one with --model calm_{self.loss}_resnet50 --weights CKPT (the authors' "
                f"checkpoint or one from 'python -m benchmark train-calm --loss {self.loss}'), or train one with "
                "train-calm")
        if model.net.loss != self.loss:
            raise NotApplicable(f"{self.id} explains {label} models; {model.name} was trained with "
                                f"{TRAINING_LABELS[model.net.loss]}: use calm_{model.net.loss}")

    def explain(self, model, x, targets):
        self.check_applicable(model)
        maps = score_maps(model.net, x, targets, self.params["score_map"], self.params["superclass"])[:, 0]
        return normalize_map(maps.float(), self.params["norm"])

    def cost(self, model):
        return Cost(forward=1.0)

    def describe(self) -> dict:
        d = super().describe()
        d["scored_with"] = "the model's own p(y|x) (softmax of its log p(y|x) output)"
        return d


@register_method
class CalmEM(_Calm):
    id = "calm_em"
    loss = "em"


@register_method
class CalmML(_Calm):
    id = "calm_ml"
    loss = "ml"


@register_method
class CalmCAM(_Calm):
    """The reference's CAM baseline (``attribution_method=CAM``): its class maps f_y, min-max normalised (the
    reference's defaults ``score_map_process=vanilla``, ``norm_type=minmax``)."""

    id = "calm_cam"
    loss = "cam"
    citation = ("Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016, as the CAM baseline "
                "of Kim et al., ICCV 2021 (github.com/naver-ai/calm)")
    paper_params = {"score_map": "vanilla", "norm": "minmax", "superclass": None}
