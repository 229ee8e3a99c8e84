"""Names of Captum's influence family that torchexplain does not implement (yet).

They exist so that code importing them fails where it is used, with a message that
says so, instead of at import; they are not in ``torchexplain.influence.__all__``.
"""

from __future__ import annotations

from .base import DataInfluence


class NaiveInfluenceFunction(DataInfluence):
    """Not implemented: influence functions with an explicit Hessian are outside
    torchexplain's TracIn issue. Use ``captum.influence.NaiveInfluenceFunction``."""

    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            "torchexplain.influence.NaiveInfluenceFunction is not implemented (influence functions with a "
            "Hessian are outside the TracIn issue); use captum.influence.NaiveInfluenceFunction, or TracInCP"
        )

    def influence(self, inputs=None, **kwargs):  # pragma: no cover - never constructed
        raise NotImplementedError
