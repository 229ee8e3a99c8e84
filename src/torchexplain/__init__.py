"""torchexplain: explain PyTorch models."""

from . import attr, config

__version__ = "0.1.0"

__all__ = ["attr", "config", "__version__"]
