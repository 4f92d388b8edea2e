r"""CALM's attribution maps as methods (``calm_em``, ``calm_ml``): p(y, z | x) of a CALM model (docs/calm.md).

CALM is not post hoc: it is its own classifier (:mod:`benchmark.models.calm`), and its maps exist only on a CALM
model trained with the matching loss. Score maps (``score_map``): ``jointll`` p(y,z|x) (default), ``vanilla`` f_y
(the CAM of the class maps), ``gtcond`` p(z|x,y), ``saliency`` p(z|x); norm ``clipping`` (reference): NaN or
constant maps become zeros, values clipped to [0, 1] (``minmax``, ``max`` and ``none`` are options). A CALM map is
scored with the CALM model's own p(y|x): its network returns log p(y|x), and every metric takes the softmax.
"""

from __future__ import annotations

import torch

from benchmark.core.cost import Cost
from benchmark.models.calm import POSTERIOR_EPS, CalmNet, is_calm

from .base import Method, MethodError, NotApplicable, register_method

SCORE_MAPS = ("jointll", "vanilla", "gtcond", "saliency")
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


def score_maps(net: CalmNet, x: torch.Tensor, classes: torch.Tensor, score_map: str = "jointll") -> torch.Tensor:
    """[B, K, h, w] raw score maps of ``classes`` [B, K] (or [B]) for the images ``x`` (one forward pass)."""
    if classes.ndim == 1:
        classes = classes[:, None]
    s = net.scores(x)
    idx = classes[:, :, None, None].expand(-1, -1, *s["f"].shape[-2:])
    if score_map == "jointll":
        return s["joint"].gather(1, idx)
    if score_map == "vanilla":
        return s["f"].gather(1, idx)
    if score_map == "gtcond":
        return (s["joint"] / (s["p_y"][:, :, None, None] + POSTERIOR_EPS)).gather(1, idx)
    if score_map == "saliency":
        return s["p_z"].expand(-1, classes.shape[1], -1, -1)
    raise MethodError(f"score_map must be one of {SCORE_MAPS}, not {score_map!r}")


class _Calm(Method):
    family = "calm"
    citation = ("Kim, Choe, Akata, Oh, Keep CALM and Improve Visual Feature Attribution, ICCV 2021 "
                "(github.com/naver-ai/calm)")
    needs_grad = False
    paper_params = {"score_map": "jointll", "norm": "clipping"}
    loss = ""

    def __init__(self, quick=False, seed=0, **overrides):
        super().__init__(quick=quick, seed=seed, **overrides)
        if self.params["score_map"] not in SCORE_MAPS:
            raise MethodError(f"{self.id}: score_map must be one of {SCORE_MAPS}, not {self.params['score_map']!r}")
        if self.params["norm"] not in NORMS:
            raise MethodError(f"{self.id}: norm must be one of {NORMS}, not {self.params['norm']!r}")

    def check_applicable(self, model) -> None:
        if not is_calm(model):
            raise NotApplicable(
                f"{self.id} is CALM's own attribution: it needs a CALM model, not the classifier {model.name}. "
                f"Load one with --model calm_{self.loss}_resnet50 --weights CKPT (the authors' checkpoint or one "
                f"from 'python -m benchmark train-calm --loss {self.loss}'), or train one with train-calm")
        if model.net.loss != self.loss:
            raise NotApplicable(f"{self.id} explains CALM-{self.loss.upper()} models; {model.name} was trained "
                                f"with CALM-{model.net.loss.upper()}: use calm_{model.net.loss}")

    def explain(self, model, x, targets):
        self.check_applicable(model)
        maps = score_maps(model.net, x, targets, self.params["score_map"])[:, 0]
        return normalize_map(maps.float(), self.params["norm"])

    def cost(self, model):
        return Cost(forward=1.0)

    def describe(self) -> dict:
        d = super().describe()
        d["scored_with"] = "the CALM model's own p(y|x) (softmax of its log p(y|x) output) and its top-1 class"
        return d


@register_method
class CalmEM(_Calm):
    id = "calm_em"
    loss = "em"


@register_method
class CalmML(_Calm):
    id = "calm_ml"
    loss = "ml"
