"""Baselines drawn from the product of per-feature choices (Captum's
``captum.attr._utils.baselines.ProductBaselines``)."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple, Union


class ProductBaselines:
    """A callable baseline: each call draws one element of the Cartesian product of
    the features' possible baselines, i.e. one value chosen uniformly per feature.

    Args:
        baseline_values: a list of lists (the possible values of each feature; a call
            returns a list with one value per feature), or a dict ``{name: values}``
            (a call returns ``{name: value}``). A dict key may be a tuple of names
            whose baselines go together: its values are tuples, one entry per name,
            and a call returns each name with its entry.
        rng (beyond Captum): a ``random.Random`` to draw with; Python's global
            ``random`` by default, as in Captum (``random.seed`` reproduces draws).
    """

    def __init__(
        self,
        baseline_values: Union[List[List[Any]], Dict[Union[str, Tuple[str, ...]], List[Any]]],
        *,
        rng: Optional[random.Random] = None,
    ) -> None:
        if isinstance(baseline_values, dict):
            self.dict_keys = list(baseline_values)
            values = [baseline_values[k] for k in self.dict_keys]
        elif isinstance(baseline_values, (list, tuple)):
            self.dict_keys = []
            values = list(baseline_values)
        else:
            raise TypeError(
                f"baseline_values must be a list of lists or a dict of lists; got {type(baseline_values).__name__}"
            )
        for i, choices in enumerate(values):
            where = repr(self.dict_keys[i]) if self.dict_keys else str(i)
            if not isinstance(choices, (list, tuple)) or len(choices) == 0:
                raise ValueError(f"baseline_values[{where}] must be a non-empty list of possible baselines")
            key = self.dict_keys[i] if self.dict_keys else None
            if isinstance(key, tuple):
                for v in choices:
                    if not isinstance(v, (tuple, list)) or len(v) != len(key):
                        raise ValueError(
                            f"baseline_values[{where}] must hold tuples of {len(key)} values (one per name); got {v!r}"
                        )
        self.baseline_values = values
        self._rng = rng

    def sample(self) -> Union[List[Any], Dict[str, Any]]:
        """One draw: a value per feature (a list, or a dict for dict baseline_values)."""
        choose = (self._rng or random).choice
        drawn = [choose(choices) for choices in self.baseline_values]
        if not self.dict_keys:
            return drawn
        out: Dict[str, Any] = {}
        for key, value in zip(self.dict_keys, drawn):
            if isinstance(key, tuple):
                out.update(zip(key, value))
            else:
                out[key] = value
        return out

    def __call__(self) -> Union[List[Any], Dict[str, Any]]:
        return self.sample()


__all__ = ["ProductBaselines"]
