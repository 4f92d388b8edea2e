"""The choices of CALM's two evaluations (remove-and-classify, cue localization) and their two named protocols
(docs/calm.md): ``calm`` runs every choice as the authors' code (github.com/naver-ai/calm) does, so its numbers can
be regenerated; ``harness`` keeps the harness's own choices. Each choice can also be set alone; the protocol of a
result is its full set of choices, recorded in its outputs, named ``calm`` or ``harness`` when it equals one of
them and ``custom`` otherwise.

No torch at import: the command line reads these tables to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    name: str
    calm: str  # the authors' choice
    harness: str  # the harness's own
    values: tuple[str, ...]
    help: str


RC_CHOICES = (
    Choice("target", "label", "top1", ("label", "top1"),
           "the class explained and counted: the ground-truth label (authors) or the clean top-1 (harness)"),
    Choice("maps", "raw", "normalised", ("raw", "normalised"),
           "the maps ranked: raw (a method's parameter norm set to none; authors) or as the method normalises them "
           "(the stored maps; harness)"),
    Choice("ranking", "topk", "stable", ("topk", "stable"),
           "order of equal map values: torch.topk's (authors) or a stable sort, ties in raster order (harness)"),
    Choice("resize", "pil", "torch", ("pil", "torch", "torch-antialias"),
           "image resize to 224x224: PIL's bilinear Resize on the image (authors), torch's bilinear on the float "
           "tensor without antialiasing (the paper profile; harness) or with it"),
    Choice("random", "numpy", "per-image", ("numpy", "per-image"),
           "random pixels: numpy choice from one RandomState(--seed), batch by batch (authors; depends on "
           "--batch-size, 64 as theirs) or randperm seeded per image (harness; independent of the batch)"),
)

CUE_CHOICES = (
    Choice("test_images", "calm", "split", ("calm", "split"),
           "CUB test images: the authors' list of 5794 (image_lists/calm_cub_test_image_ids.txt) or CUB's "
           "train_test_split.txt"),
    Choice("resize", "pil", "torch-antialias", ("pil", "torch", "torch-antialias"),
           "image resize to 224x224: PIL's bilinear Resize on the image (authors) or torch's bilinear on the float "
           "tensor, antialiased (harness) or not"),
    Choice("normalise", "difference", "per-map", ("difference", "per-map"),
           "where the norm goes: norm(|R1 - R2|) of the raw maps with the method's norm (authors) or "
           "clip(|S1 - S2|) of maps the method normalised first (harness)"),
    Choice("histograms", "accumulate", "reset", ("accumulate", "reset"),
           "PxAP histograms: accumulated over every pair without reset (authors) or fresh for every pair "
           "(harness, the better definition)"),
)

PROTOCOLS = ("calm", "harness")


def resolve(choices: tuple[Choice, ...], protocol: str = "calm", **overrides) -> dict:
    """``{"name": calm|harness|custom, <choice>: value, ...}``: the ``protocol``'s values with ``overrides`` (None
    keeps the protocol's) on top."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, not {protocol!r}")
    known = {c.name: c for c in choices}
    unknown = set(overrides) - set(known)
    if unknown:
        raise ValueError(f"unknown choice(s) {sorted(unknown)}; known: {sorted(known)}")
    out = {c.name: getattr(c, protocol) for c in choices}
    for k, v in overrides.items():
        if v is None:
            continue
        if v not in known[k].values:
            raise ValueError(f"--{k.replace('_', '-')} must be one of {known[k].values}, not {v!r}")
        out[k] = v
    name = next((p for p in PROTOCOLS if all(out[c.name] == getattr(c, p) for c in choices)), "custom")
    return {"name": name, **out}


def describe(choices: tuple[Choice, ...], protocol: dict) -> dict:
    """{choice: {"value", "authors", "harness", "meaning"}} for the outputs."""
    return {c.name: {"value": protocol[c.name], "authors": c.calm, "harness": c.harness, "meaning": c.help}
            for c in choices}


def image_tensor(img, resize: str):
    """A PIL image as the [3, 224, 224] float tensor in [0, 1] of the ``resize`` choice (before normalisation)."""
    from benchmark.data.preprocessing import preprocess, preprocess_pil

    if resize == "pil":
        return preprocess_pil(img, 224)
    if resize in ("torch", "torch-antialias"):
        return preprocess(img, 224, antialias=resize == "torch-antialias")
    raise ValueError(f"resize must be pil, torch or torch-antialias, not {resize!r}")


def raw_variant(method):
    """The method with its parameter ``norm`` set to ``none`` (its raw maps: CALM's score maps before
    ``normalize_scoremap``); a method without that parameter is returned as it is (its maps are its raw maps)."""
    if method.params.get("norm", "none") == "none":
        return method
    return type(method)(seed=method.seed, batch_size=method.batch_size, **{**method.params, "norm": "none"})
