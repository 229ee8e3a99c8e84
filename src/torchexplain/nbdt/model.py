"""``torchexplain.nbdt.model``: the inference classes where nbdt's readers import them
(``from nbdt.model import HardNBDT, SoftNBDT``)."""

from .inference import HardNBDT, SoftNBDT

__all__ = ["HardNBDT", "SoftNBDT"]
