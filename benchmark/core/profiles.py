"""Named protocol bundles (``paper``, ``quick``), recorded with every output.

``paper`` is the protocol of the Poly-CAM reference code (docs/protocol.md). ``quick`` keeps every rule of
``paper`` but gives every method and metric its cheaper ``quick_params`` (e.g. 16 insertion/deletion steps instead
of 224, 3 max-sensitivity perturbations instead of 10), for demos and CI; every file it writes lives under a
folder named after it and carries the profile in its provenance. The parameters themselves belong to the methods
and metrics (``paper_params`` / ``quick_params``); a profile only says which set applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    quick: bool = False  # methods and metrics use their cheaper ``quick_params``
    image_size: int = 224
    antialias: bool = False  # torchvision 0.9 tensor resize: bilinear, no antialiasing (paper protocol)
    # Cascading randomisation sanity check (paper Appendix G, Figures 26-28 show 3 images): the first N images of
    # the run, and the methods `run` checks (the paper's Poly-CAM variants, Grad-CAM as the usual reference).
    sanity_images: int = 8
    sanity_methods: tuple[str, ...] = ("pcampm", "pcamp", "pcamm", "gradcam")

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper"),
    # quick: the sanity check on 2 images with Grad-CAM alone (one backward per map: Poly-CAM's thousands of
    # masked passes per map times every layer of the network are GPU work).
    "quick": Profile("quick", quick=True, sanity_images=2, sanity_methods=("gradcam",)),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
