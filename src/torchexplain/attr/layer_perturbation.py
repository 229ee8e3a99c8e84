"""Perturbations of a hidden layer's values: LayerFeatureAblation and
LayerFeaturePermutation (Captum's names, arguments and return forms).

The layer's values for the inputs are read once; then the matching input method
(:class:`~torchexplain.attr.FeatureAblation`, :class:`~torchexplain.attr.FeaturePermutation`)
perturbs them as if they were the inputs of a *layer function*: the model run on the
real inputs with the layer's output (or input, ``attribute_to_layer_input=True``)
replaced by the perturbed rows. So every perturbation runs batched through the input
method's block evaluator, with its target forms (``target=None`` on a model with
several outputs per example attributes every output element) and its return forms.
"""

from __future__ import annotations

import torch

from .ablation import FeatureAblation, FeaturePermutation, PerturbationAttribution
from .layer_base import LayerAttribution, layer_output


class _LayerPerturbation(LayerAttribution, PerturbationAttribution):
    """A perturbation method applied to the layer's values (``multiplies_by_inputs``
    is True, as for Captum's perturbation methods)."""

    def _at_layer(self, make, inputs, target, additional_forward_args, forward_kwargs, to_input: bool, **options):
        """``make(layer function).attribute(layer values, **options)`` in the layer's
        return form."""
        inputs, _, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs, floating=False)
        tap = self._tap(to_input)
        with self._guard():
            values = self._layer_values(adapter, inputs, to_input=to_input)

            def layer_forward(*args, **kwargs):
                layer_rows, model_args = args[: len(values)], args[len(values):]
                with tap.recording(replace=lambda found: layer_rows):
                    return self.forward_func(*model_args, **kwargs)

            attributions = make(layer_forward).attribute(
                tuple(values), target=target, additional_forward_args=tuple(inputs) + tuple(adapter.args),
                forward_kwargs=forward_kwargs, **options,
            )
        return layer_output(attributions)


class LayerFeatureAblation(_LayerPerturbation):
    r"""Feature ablation of the layer's values (Captum's LayerFeatureAblation): each
    layer unit (or group of units sharing a ``layer_mask`` id) is set to its
    ``layer_baselines`` value (0 by default) while the rest of the model runs on the
    inputs; the attribution is the drop in the explained output,
    ``F(x) - F(x with the unit ablated at the layer)``. Every ablation runs batched
    through :class:`FeatureAblation` (``perturbations_per_eval``).

    Formula:
        $$\phi_j = F_x(h) - F_x(h_{g \leftarrow b}), \qquad j \in g$$

        with \(h\) the layer's values for the input \(x\), \(F_x(v)\) the target output of
        the model run on \(x\) with the layer's values replaced by \(v\), and
        \(h_{g \leftarrow b}\) the values with the units of group \(g\) (a ``layer_mask``
        id; each unit alone by default) set to ``layer_baselines``. Every unit of a group
        gets the group's drop.

    Cost:
        No backward pass. One forward pass for the layer's values, then \(1 + G\)
        forward passes per example (the unablated model and one per group, \(G\) the
        number of groups), ``perturbations_per_eval`` ablations batched per forward
        (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerFeatureAblation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = LayerFeatureAblation(model, model[1]).attribute(x, target=0)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> # above a linear head, zeroing unit j drops the output by weight_j * h_j
        >>> by_hand = model[2].weight[0] * model[:2](x)
        >>> bool(torch.allclose(attributions, by_hand, atol=1e-5))
        True
    """

    def attribute(
        self,
        inputs,
        layer_baselines=None,
        target=None,
        additional_forward_args=None,
        layer_mask=None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval="auto",
        forward_kwargs=None,
        show_progress: bool = False,
    ):
        return self._at_layer(
            lambda f: FeatureAblation(f, output_selector=self.output_selector), inputs, target,
            additional_forward_args, forward_kwargs, attribute_to_layer_input, baselines=layer_baselines,
            feature_mask=layer_mask, perturbations_per_eval=perturbations_per_eval, show_progress=show_progress,
        )


class LayerFeaturePermutation(_LayerPerturbation):
    r"""Permutation feature importance of the layer's values (Captum's
    LayerFeaturePermutation): each layer unit (or ``layer_mask`` group) is shuffled
    across the batch while the rest of the model runs on the inputs; the attribution
    is ``F(x) - F(x with the unit permuted at the layer)``, as
    :class:`FeaturePermutation` computes it (which it runs batched).

    Returns the layer's form: a tensor, or a tuple for a layer with several tensors;
    with ``target=None`` on a model with several outputs per example, one row per
    output element (``example * outputs + output``), as in Captum. Beyond Captum:
    ``attribute_to_layer_input``, ``forward_kwargs``, ``show_progress``, and
    ``generator`` / ``seed`` for reproducible permutations.

    Formula:
        $$\phi_{i,j} = F_{x_i}(h(x_i)) - F_{x_i}(\tilde{h}_{i,g}), \qquad j \in g$$

        for example \(x_i\) of the batch, with \(h\) the layer's values, \(F_{x}(v)\) the
        target output of the model run on \(x\) with the layer's values replaced by
        \(v\), and \(\tilde{h}_{i,g}\) the values \(h(x_i)\) whose units of
        group \(g\) (a ``layer_mask`` id; each unit alone by default) are taken from
        example \(\pi(i)\), \(\pi\) a random permutation of the batch drawn for each
        group. For a model with one output for the whole batch (a loss), one drop of
        that output per group.

    Cost:
        No backward pass. One forward pass for the layer's values, then \(1 + G\)
        forward passes per example (the unpermuted model and one per group, \(G\) the
        number of groups), ``perturbations_per_eval`` permuted copies of the batch per
        forward (``"auto"``: from the memory budget). A batch of one example cannot be
        permuted: its attributions are 0, with a warning, as in Captum.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import LayerFeaturePermutation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(6, 3)
        >>> lfp = LayerFeaturePermutation(model, model[1])
        >>> attributions = lfp.attribute(x, target=0, generator=torch.Generator().manual_seed(0))
        >>> attributions.shape
        torch.Size([6, 4])
        >>> # above a linear head a permutation only moves values: the drops sum to 0 over the batch
        >>> bool(torch.allclose(attributions.sum(0), torch.zeros(4), atol=1e-5))
        True
    """

    def attribute(
        self,
        inputs,
        target=None,
        additional_forward_args=None,
        layer_mask=None,
        perturbations_per_eval="auto",
        attribute_to_layer_input: bool = False,
        forward_kwargs=None,
        show_progress: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        return self._at_layer(
            lambda f: FeaturePermutation(f, output_selector=self.output_selector), inputs, target,
            additional_forward_args, forward_kwargs, attribute_to_layer_input, feature_mask=layer_mask,
            perturbations_per_eval=perturbations_per_eval, show_progress=show_progress, generator=generator,
            seed=seed,
        )
