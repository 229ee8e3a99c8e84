"""The base of every attack: ``attack(inputs, ...)`` is ``attack.perturb(inputs, ...)``."""

from __future__ import annotations


class Perturbation:
    """An attack or perturbation of inputs (Captum's base class of the same name).

    Subclasses implement ``perturb(inputs, ...)``, which returns perturbed inputs in
    the form the inputs were given (a tensor, or a tuple of tensors of the inputs'
    shapes); calling the object calls ``perturb``, so an attack can be passed where
    a plain function ``inputs -> perturbed inputs`` is expected
    (:class:`~torchexplain.robust.AttackComparator`,
    :class:`~torchexplain.robust.MinParamPerturbation`)."""

    def perturb(self, inputs, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement perturb(inputs, ...)")

    def __call__(self, *args, **kwargs):
        return self.perturb(*args, **kwargs)
