"""The values published in the Poly-CAM paper, as data, for the "paper" columns of the tables.

Source: Englebert, Cornu, De Vleeschouwer, "Poly-CAM: High resolution class activation map for convolutional
neural networks" (arXiv 2204.13359; text in ``/work/shared/seeds/002_*.txt``), Tables 1-5. The numbers are copied
exactly as printed (two decimals for Tables 1-4, four for Table 5). They are shown *beside* our values for
comparison and are never used as test expectations: the paper's runs used the authors' 2000 ILSVRC2012 images,
their code and library versions, and most of its differences are within rounding.

Row labels of the paper are mapped to our method ids (``python -m benchmark methods``). Models: the paper's
``VGG16`` and ``ResNet50`` are torchvision ``vgg16`` / ``resnet50`` with ImageNet weights, i.e. our model tags
``vgg16`` and ``resnet50`` (a ``-random`` tag never gets published values).
"""

from __future__ import annotations

PAPER = ("Englebert, Cornu, De Vleeschouwer: Poly-CAM: High resolution class activation map for convolutional "
         "neural networks (arXiv 2204.13359)")

MODELS = ("vgg16", "resnet50")  # model tags that have published values

# Our id -> the paper's row label (Tables 1, 4, 5).
PAPER_LABELS = {
    "integratedgradient": "IntegratedGradient", "inputxgrad": "InputXGrad", "smoothgrad": "SmoothGrad",
    "rise": "RISE", "occlusion": "Occlusion", "gradcam": "GradCAM", "gradcampp": "GradCAM++",
    "smoothgradcampp": "SmoothGradCAM++", "scorecam": "ScoreCAM", "sscam": "SSCAM", "iscam": "ISCAM",
    "zoomcam": "ZoomCAM", "layercam": "LayerCAM", "pcamp": "PCAM+ (ours)", "pcamm": "PCAM- (ours)",
    "pcampm": "PCAM± (ours)",
}

# ------------------------------------------------------------------------------------------- Tables 1 and 4
TABLE1_TITLE = "Table 1: Faithfulness metrics for CAM-based methods (see Table 4 for full version with all methods)"
TABLE4_TITLE = "Table 4: Faithfulness metrics for all methods: CAM-based, gradient and perturbation methods"
FAITHFULNESS_NOTE = ("Insertion (higher is better), deletion (lower is better) and insertion-deletion (higher is "
                     "better) with VGG16 and ResNet50 on the 2012 ILSVRC validation set (paper: 2000 images, 224 "
                     "steps of 224 pixels, blurred baseline 11x11 sigma 5).")

# Rows in the paper's order. Table 1 is exactly the CAM-based rows of Table 4 (same numbers in both).
TABLE1_METHODS = ("gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "iscam", "zoomcam", "layercam",
                  "pcamp", "pcamm", "pcampm")
TABLE4_METHODS = ("integratedgradient", "inputxgrad", "smoothgrad", "rise", "occlusion") + TABLE1_METHODS

# (insertion, deletion, ins-del) as printed. Ins-Del is the paper's own column: it is not always the difference
# of the two rounded columns (e.g. VGG16 PCAM-: 0.60 - 0.16 = 0.44, printed 0.45), so it is copied, not derived.
FAITHFULNESS: dict[str, dict[str, tuple[float, float, float]]] = {
    "vgg16": {
        "integratedgradient": (0.41, 0.10, 0.31),
        "inputxgrad": (0.37, 0.12, 0.26),
        "smoothgrad": (0.54, 0.20, 0.34),
        "rise": (0.62, 0.18, 0.44),
        "occlusion": (0.62, 0.23, 0.39),
        "gradcam": (0.58, 0.18, 0.40),
        "gradcampp": (0.57, 0.19, 0.38),
        "smoothgradcampp": (0.54, 0.21, 0.33),
        "scorecam": (0.59, 0.19, 0.40),
        "sscam": (0.50, 0.23, 0.27),
        "iscam": (0.59, 0.19, 0.40),
        "zoomcam": (0.60, 0.14, 0.46),
        "layercam": (0.58, 0.14, 0.44),
        "pcamp": (0.58, 0.17, 0.41),
        "pcamm": (0.60, 0.16, 0.45),
        "pcampm": (0.61, 0.15, 0.46),
    },
    "resnet50": {
        "integratedgradient": (0.52, 0.16, 0.36),
        "inputxgrad": (0.47, 0.18, 0.28),
        "smoothgrad": (0.62, 0.29, 0.33),
        "rise": (0.67, 0.28, 0.39),
        "occlusion": (0.66, 0.33, 0.33),
        "gradcam": (0.65, 0.31, 0.35),
        "gradcampp": (0.65, 0.31, 0.34),
        "smoothgradcampp": (0.63, 0.32, 0.30),
        "scorecam": (0.65, 0.31, 0.34),
        "sscam": (0.59, 0.36, 0.24),
        "iscam": (0.65, 0.32, 0.33),
        "zoomcam": (0.66, 0.29, 0.37),
        "layercam": (0.65, 0.30, 0.35),
        "pcamp": (0.67, 0.29, 0.38),
        "pcamm": (0.66, 0.27, 0.39),
        "pcampm": (0.67, 0.28, 0.39),
    },
}

# ------------------------------------------------------------------------------------------- Tables 2 and 3
TABLE2_TITLE = "Table 2: Faithfulness metrics for Poly-CAM and CAM on isolated layers - VGG16"
TABLE3_TITLE = "Table 3: Faithfulness metrics for Poly-CAM and CAM on isolated layers - ResNet50"
ABLATION_TITLES = {"vgg16": TABLE2_TITLE, "resnet50": TABLE3_TITLE}

# The paper's layer names, shallow -> deep (our l1..l5). Keras-style names; ours are the torchvision modules:
# VGG16 features.3, .8, .15, .22, .29; ResNet50 (Appendix B.1 text: conv1_1, conv2_3, conv3_4, conv4_6, conv5_3)
# corresponds to relu, layer1, layer2, layer3, layer4 (our ``paper_text`` layer set). Ambiguity: the reference
# code's main PCAM runs (Tables 1, 4, 5) used relu, layer2.0, layer3.0, layer4.0, layer4 instead, yet Table 3's
# last row (conv1_1) equals Table 1's ResNet50 PCAM numbers for all three variants; which layer list Table 3
# really used cannot be told from the text.
PAPER_LAYERS = {
    "vgg16": ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
    "resnet50": ("conv1_1", "conv2_3", "conv3_4", "conv4_6", "conv5_3"),
}

# Paper rows, per variant, from the deepest layer (printed first) to the shallowest, as printed:
#   "PCAM W at layer X" = the Poly-CAM map fused from the deepest layer down to X; the deepest layer alone is our
#   pcamW_step1, ..., layer 1 (all five layers) is pcamW itself (step 5). Interpretation check: the last PCAM row
#   equals Table 1's PCAM W row and the first PCAM row equals the first CAM row (one layer alone), for every
#   variant and both models, as it must.
#   "CAM W at layer X" = the isolated-layer map of layer X (Eq. 2): our camW_l{i}, l1 = shallowest.
# Values: (insertion, deletion, ins-del), deepest layer first.
_T2 = {
    "p": [(0.59, 0.19, 0.40), (0.59, 0.17, 0.42), (0.58, 0.16, 0.42), (0.58, 0.16, 0.42), (0.58, 0.17, 0.41)],
    "m": [(0.59, 0.18, 0.41), (0.59, 0.16, 0.43), (0.59, 0.16, 0.43), (0.60, 0.16, 0.44), (0.60, 0.16, 0.45)],
    "pm": [(0.60, 0.18, 0.42), (0.60, 0.16, 0.45), (0.60, 0.15, 0.45), (0.60, 0.15, 0.45), (0.61, 0.15, 0.46)],
    "cam_p": [(0.59, 0.19, 0.40), (0.50, 0.17, 0.33), (0.44, 0.18, 0.26), (0.43, 0.21, 0.22), (0.44, 0.27, 0.17)],
    "cam_m": [(0.59, 0.18, 0.41), (0.53, 0.15, 0.38), (0.47, 0.14, 0.33), (0.47, 0.17, 0.29), (0.49, 0.22, 0.27)],
    "cam_pm": [(0.60, 0.18, 0.42), (0.54, 0.14, 0.39), (0.48, 0.14, 0.34), (0.47, 0.18, 0.29), (0.49, 0.23, 0.26)],
}
_T3 = {
    "p": [(0.65, 0.31, 0.33), (0.65, 0.31, 0.33), (0.66, 0.29, 0.37), (0.67, 0.29, 0.38), (0.67, 0.29, 0.38)],
    "m": [(0.65, 0.31, 0.34), (0.65, 0.31, 0.34), (0.66, 0.29, 0.37), (0.66, 0.28, 0.38), (0.66, 0.27, 0.39)],
    "pm": [(0.65, 0.31, 0.33), (0.65, 0.31, 0.33), (0.66, 0.29, 0.37), (0.67, 0.28, 0.39), (0.67, 0.28, 0.39)],
    "cam_p": [(0.65, 0.31, 0.33), (0.64, 0.27, 0.37), (0.61, 0.26, 0.35), (0.56, 0.27, 0.29), (0.53, 0.34, 0.19)],
    "cam_m": [(0.65, 0.31, 0.34), (0.63, 0.26, 0.36), (0.58, 0.24, 0.34), (0.50, 0.29, 0.21), (0.54, 0.33, 0.21)],
    "cam_pm": [(0.65, 0.31, 0.33), (0.65, 0.26, 0.39), (0.61, 0.24, 0.37), (0.54, 0.27, 0.27), (0.55, 0.33, 0.22)],
}


def _ablation_ids(table: dict) -> dict[str, tuple[str, tuple[float, float, float]]]:
    """Method id -> (paper layer index 1..5 as l-number, values)."""
    out = {}
    for w in ("p", "m", "pm"):
        for depth, vals in enumerate(table[w]):  # depth 0 = deepest layer alone = step 1
            step = depth + 1
            out[f"pcam{w}" if step == 5 else f"pcam{w}_step{step}"] = vals
        for depth, vals in enumerate(table[f"cam_{w}"]):
            out[f"cam{w}_l{5 - depth}"] = vals
    return out


ABLATION: dict[str, dict[str, tuple[float, float, float]]] = {"vgg16": _ablation_ids(_T2),
                                                              "resnet50": _ablation_ids(_T3)}

# ------------------------------------------------------------------------------------------------- Table 5
TABLE5_TITLE = "Table 5: Sensitivity max table"
TABLE5_NOTE = ("Max-sensitivity (lower is better; Yeh et al. 2019), captum implementation, 10 perturbations per "
               "input, L-infinity radius 0.02. The paper lists SS-CAM in the caption but prints no SS-CAM row.")
# Ambiguity: the printed ResNet50 value of PCAM± (0.0659) is identical to its VGG16 value, possibly a copy error
# in the paper; it is transcribed as printed.
SENSITIVITY: dict[str, dict[str, float]] = {
    "vgg16": {"integratedgradient": 0.3576, "inputxgrad": 0.6132, "smoothgrad": 5.6824, "rise": 0.7864,
              "occlusion": 2.5176, "gradcam": 0.0625, "gradcampp": 0.0525, "smoothgradcampp": 0.5451,
              "scorecam": 0.0466, "iscam": 0.0433, "zoomcam": 0.0987, "layercam": 0.0937, "pcamp": 0.0650,
              "pcamm": 0.0837, "pcampm": 0.0659},
    "resnet50": {"integratedgradient": 0.5299, "inputxgrad": 0.7225, "smoothgrad": 7.7777, "rise": 0.7841,
                 "occlusion": 3.4378, "gradcam": 0.0212, "gradcampp": 0.0199, "smoothgradcampp": 0.1594,
                 "scorecam": 0.0193, "iscam": 0.0334, "zoomcam": 0.0485, "layercam": 0.0590, "pcamp": 0.0262,
                 "pcamm": 0.0578, "pcampm": 0.0659},
}
TABLE5_METHODS = tuple(SENSITIVITY["vgg16"])


def faithfulness(tag: str, method: str) -> tuple[float, float, float] | None:
    """Published (insertion, deletion, ins-del) of Table 4 (Table 1 rows are the same numbers), or None."""
    return FAITHFULNESS.get(tag, {}).get(method)


def ablation(tag: str, method: str) -> tuple[float, float, float] | None:
    """Published (insertion, deletion, ins-del) of Table 2 (vgg16) / Table 3 (resnet50) for an ablation id."""
    return ABLATION.get(tag, {}).get(method)


def sensitivity(tag: str, method: str) -> float | None:
    """Published max-sensitivity of Table 5, or None."""
    return SENSITIVITY.get(tag, {}).get(method)
