"""Named protocol bundles (``paper``, ``quick``), recorded with every output.

``paper`` is the protocol of the Poly-CAM reference code (conventions sections 1 and 5). ``quick`` keeps every
rule of ``paper`` but uses fewer insertion/deletion steps and cheaper method parameters, for demos and CI; every
file it writes lives under a folder named after it and carries the profile in its provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: int = 224
    antialias: bool = False  # torchvision 0.9 tensor resize: bilinear, no antialiasing (paper protocol)
    insdel_steps: int = 224  # 224 steps of 224 pixels; sample s holds the first (s + 1) * step pixels
    blur_kernel: int = 11  # Gaussian-blur baseline for insertion AND deletion
    blur_sigma: float = 5.0
    quick_methods: bool = False  # methods use their cheaper ``quick`` parameters
    # Max-sensitivity (paper Appendix F: captum's defaults): K perturbations, uniform in an L-inf ball of radius r.
    sens_perturbations: int = 10
    sens_radius: float = 0.02
    # Cascading randomisation sanity check (paper Appendix G, Figures 26-28 show 3 images): the first N images of
    # the run, and the methods `run` checks (the paper's Poly-CAM variants, Grad-CAM as the usual reference).
    sanity_images: int = 8
    sanity_methods: tuple[str, ...] = ("pcampm", "pcamp", "pcamm", "gradcam")

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper"),
    # quick only: 3 perturbations instead of 10; the sanity check on 2 images with Grad-CAM alone (one backward
    # per map: Poly-CAM's thousands of masked passes per map times every layer of the network are GPU work).
    "quick": Profile("quick", insdel_steps=16, quick_methods=True, sens_perturbations=3, sanity_images=2,
                     sanity_methods=("gradcam",)),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
