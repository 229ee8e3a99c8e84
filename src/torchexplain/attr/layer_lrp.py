"""LayerLRP: the LRP relevance reaching a hidden layer, with Captum's ``LayerLRP``
interface.

The relevance is propagated exactly as by :class:`~torchexplain.attr.LRP` (same rules,
same engine, same rule attributes read from the modules) and read where it reaches the
layer's output, or its input with ``attribute_to_layer_input=True``: ``R_layer =
(d f / d layer values, under the rules) * f(x)``.
"""

from __future__ import annotations

from torch import nn

from ..core.hooks.layers import LayerTap, layer_name, resolve_layer
from .layer_base import LayerAttribution, layer_output
from .lrp import LRP


class LayerLRP(LRP, LayerAttribution):
    r"""Layer-wise relevance propagation (Bach et al. 2015) to a layer (or a list of layers),
    Captum-compatible.

    ``layer`` is a module of the model, its dotted name, or a list of those (Captum's
    ``ModuleOrModuleList``); a list gives a list of results, one per layer. Rules are
    chosen as in :class:`LRP` (``rules`` > a module's ``rule`` attribute > ``composite`` >
    epsilon). ``layer_call`` (beyond Captum) picks the run of a layer that runs more
    than once per forward pass.

    ``attribute`` returns the relevance at the layer's output (its input with
    ``attribute_to_layer_input=True``): a tensor, or a tuple when the layer has several;
    with ``return_convergence_delta``, also ``f(x) - sum(R_layer)`` per example (a list
    of those for a list of layers).

    Formula:
        $$R_h = F(x) \, \hat{g}_h$$

        with \(h\) the layer's output (or input) values, \(F(x)\) the target output and
        \(\hat{g}_h\) the backward pass from \(F\) to \(h\) under the LRP rules:
        \(R_h\) is the relevance of :class:`LRP` (same rules, e.g. epsilon:
        \(R_j = \sum_k x_j w_{jk} R_k / (z_k + \epsilon \operatorname{sign}(z_k))\)) where it
        reaches the layer. Conservation: \(\sum R_h = F(x)\) when every layer above
        conserves relevance (e.g. bias-free, \(\epsilon \to 0\)); the delta returns
        \(F(x) - \sum R_h\).

    Cost:
        One forward and one backward pass per example for all the layers together
        (the backward under the rules), batched in chunks of ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerLRP
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.ReLU(),
        ...                             torch.nn.Linear(4, 2, bias=False))
        >>> x = torch.randn(2, 3)
        >>> relevance, delta = LayerLRP(model, model[1]).attribute(x, target=0, return_convergence_delta=True)
        >>> relevance.shape, delta.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> bool(delta.abs().max() < 1e-4)
        True
    """

    def __init__(self, model: nn.Module, layer, rules=None, composite=None, fold_batchnorm: bool = False,
                 layer_call: int | None = None):
        LRP.__init__(self, model, rules, composite, fold_batchnorm)
        many = isinstance(layer, (list, tuple))
        if many and not layer:
            raise ValueError("layer must be a module, its name, or a non-empty list of those; got an empty list")
        layers = [resolve_layer(model, m, f"layer[{i}]" if many else "layer")
                  for i, m in enumerate(layer if many else [layer])]
        self.layer = layers if many else layers[0]
        self._layers = layers
        self.layer_call = layer_call
        self.device_ids = getattr(model, "device_ids", None)
        LayerTap(layers[0], call=layer_call)  # validates layer_call

    def attribute(
        self,
        inputs,
        target=None,
        additional_forward_args=None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        verbose: bool = False,
        internal_batch_size="auto",
        forward_kwargs=None,
    ):
        """Relevance at the layer(s) for the target output; see the class docstring.
        ``forward_kwargs`` (beyond Captum): keyword arguments of the model."""
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        self._check_flags(return_convergence_delta=return_convergence_delta, verbose=verbose,
                          attribute_to_layer_input=attribute_to_layer_input)
        taps = [
            LayerTap(m, to_input=attribute_to_layer_input, call=self.layer_call, name=layer_name(self.model, m))
            for m in self._layers
        ]
        per_layer, outputs = self._run(inputs, adapter, internal_batch_size, verbose, taps)
        results = [layer_output(values) for values in per_layer]
        deltas = [self.compute_convergence_delta(values, outputs) for values in per_layer]
        if isinstance(self.layer, list):
            return (results, deltas) if return_convergence_delta else results
        return (results[0], deltas[0]) if return_convergence_delta else results[0]
