"""What ``explainer(X)`` returns: an object with shap.Explanation's fields."""

from __future__ import annotations

import numbers

import numpy as np


class Explanation:
    """The SHAP values of a batch, with the fields of ``shap.Explanation``.

    * ``values``: NumPy ``(N, *features, K)``, as ``shap_values`` returns them (a
      list of such arrays for a model with several inputs);
    * ``base_values``: NumPy ``(N, K)``, each example's expected model output over the
      background (``explainer.expected_value`` per example), so that
      ``values.sum(features) + base_values`` is the model's output;
    * ``data``: ``X`` as it was given (a tensor, or a list of tensors), as in shap;
    * ``output_names``: ``["Output 0", ..., "Output K-1"]``, shap's default names;
    * ``feature_names``: None (shap's for tensor inputs).

    ``explanation[i]`` (an int or a slice) takes examples, as shap's slicing does on
    the first axis; ``shape`` is the values' shape.
    """

    def __init__(self, values, base_values, data, output_names=None, feature_names=None):
        self.values = values
        self.base_values = base_values
        self.data = data
        self.output_names = output_names
        self.feature_names = feature_names

    @classmethod
    def of(cls, values, expected_value, data) -> "Explanation":
        """From ``shap_values``' result, the explainer's expected value and ``X``."""
        first = values[0] if isinstance(values, list) else values
        n, k = first.shape[0], first.shape[-1]
        expected = np.atleast_1d(np.asarray(expected_value, dtype=np.float64))
        base = np.ascontiguousarray(np.broadcast_to(expected, (n, k)))
        return cls(values, base, data, [f"Output {i}" for i in range(k)])

    @property
    def shape(self) -> tuple:
        if isinstance(self.values, list):
            return tuple(np.shape(v) for v in self.values)
        return tuple(np.shape(self.values))

    def __len__(self) -> int:
        first = self.values[0] if isinstance(self.values, list) else self.values
        return len(first)

    def __getitem__(self, item) -> "Explanation":
        if isinstance(item, bool) or not isinstance(item, (numbers.Integral, slice)):
            raise TypeError(f"an Explanation is indexed by example (an int or a slice); got {type(item).__name__}")

        def take(v):
            return [take(x) for x in v] if isinstance(v, (list, tuple)) else v[item]

        return Explanation(take(self.values), self.base_values[item], take(self.data), self.output_names,
                           self.feature_names)

    def __repr__(self) -> str:
        base = np.shape(self.base_values)
        return f"torchexplain.shap.Explanation(values shape {self.shape}, base_values shape {base})"
