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
    """Feature ablation of the layer's values (Captum's LayerFeatureAblation): each
    layer unit (or group of units sharing a ``layer_mask`` id) is set to its
    ``layer_baselines`` value (0 by default) while the rest of the model runs on the
    inputs; the attribution is the drop in the explained output,
    ``F(x) - F(x with the unit ablated at the layer)``. Every ablation runs batched
    through :class:`FeatureAblation` (``perturbations_per_eval``)."""

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
    """Permutation feature importance of the layer's values (Captum's
    LayerFeaturePermutation): each layer unit (or ``layer_mask`` group) is shuffled
    across the batch while the rest of the model runs on the inputs; the attribution
    is ``F(x) - F(x with the unit permuted at the layer)``, as
    :class:`FeaturePermutation` computes it (which it runs batched).

    Returns the layer's form: a tensor, or a tuple for a layer with several tensors;
    with ``target=None`` on a model with several outputs per example, one row per
    output element (``example * outputs + output``), as in Captum. Beyond Captum:
    ``attribute_to_layer_input``, ``forward_kwargs``, ``show_progress``, and
    ``generator`` / ``seed`` for reproducible permutations."""

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
