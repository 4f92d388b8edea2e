"""Reference benchmark harness for saliency maps (Poly-CAM paper protocol). Entry point: ``python -m benchmark``."""

__version__ = "0.1.0"
