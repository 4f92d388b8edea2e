"""Floor 1, the models: loading (``load_model``), the weights' identity, layer presets and discovery, the CALM
network, and torchvision's import fix. Imports only the core.

    from benchmark.models import load_model
    model = load_model("efficientnet_lite0")          # a ModelBundle: net, normalisation, layers, weights
"""

from .bundle import ModelBundle, ModelError  # noqa: F401
from .loading import available_models, load_model  # noqa: F401
