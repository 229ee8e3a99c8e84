"""Robustness: adversarial attacks and the metrics built on them, with Captum's
names, arguments and return forms (``captum.robust``).

* :class:`FGSM` and :class:`PGD`: gradient-sign attacks, targeted or not, Linf or L2,
  with masks, bounds and (PGD) a seeded random start; one batched forward and
  backward pass per step, the model's parameters frozen and everything restored;
* :class:`AttackComparator`: a metric on clean and attacked inputs, per batch and
  averaged;
* :class:`MinParamPerturbation`: the smallest attack parameter that fools the model,
  by linear or binary search;
* :class:`Perturbation`: the base of the attacks.
"""

from .comparator import AttackComparator
from .fgsm import FGSM
from .min_param import MinParamPerturbation
from .perturbation import Perturbation
from .pgd import PGD

__all__ = ["FGSM", "AttackComparator", "MinParamPerturbation", "Perturbation", "PGD"]
