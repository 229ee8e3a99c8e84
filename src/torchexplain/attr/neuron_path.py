"""Neuron attributions along a path or against references: NeuronIntegratedGradients,
NeuronDeepLift, NeuronDeepLiftShap, NeuronGradientShap and NeuronConductance. Each is
the matching input method applied to the neuron function (see ``neuron``), except
conductance, whose adapter reads the flow through the neuron."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.forward import ForwardAdapter
from ..core.gradients import check_grad_kwargs, input_gradients
from ..core.hooks.layers import LayerTap
from ..core.inputs import format_baselines, format_output
from .deeplift import DeepLift, DeepLiftShap
from .integrated import IntegratedGradients
from .neuron import NeuronAttribution, select_neuron
from .noise import GradientShap
from .seeding import positive_int


class _Multiplying(NeuronAttribution):
    """A neuron method with Captum's ``multiply_by_inputs`` switch."""

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True, *,
                 output_selector=None, layer_call: int | None = None):
        super().__init__(forward_func, layer, device_ids, output_selector=output_selector, layer_call=layer_call)
        self._multiply_by_inputs = multiply_by_inputs


class NeuronIntegratedGradients(_Multiplying):
    r"""Integrated gradients (Sundararajan et al. 2017) of the neuron's value along the
    straight path from the baselines to the inputs (Gauss-Legendre quadrature by default, as
    Captum).

    Formula:
        $$\phi_i = (x_i - x'_i) \int_0^1 \frac{\partial n(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha
        \approx (x_i - x'_i) \sum_{k=1}^{m} w_k \frac{\partial n(x' + \alpha_k (x - x'))}{\partial x_i}$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(x'\) is the baseline (zero by default), and
        \(\alpha_k\) and \(w_k\) are the \(m\) = ``n_steps`` points and weights of
        ``method``. With ``multiply_by_inputs=False`` the factor \((x_i - x'_i)\) is left
        out. Completeness: \(\sum_i \phi_i = n(x) - n(x')\) up to the quadrature error.

    Cost:
        ``n_steps`` forward passes (of the whole model) and backward passes (from the
        layer) per example, batched in chunks of ``internal_batch_size`` rows
        (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronIntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4),
        ...                             torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronIntegratedGradients(model, model[3]).attribute(x, neuron_selector=1)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 1] - model[:4](torch.zeros(1, 3))[:, 1]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-4))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size="auto",
                  attribute_to_neuron_input: bool = False, forward_kwargs=None):
        return self._through(
            lambda f: IntegratedGradients(f, self._multiply_by_inputs), inputs, neuron_selector,
            attribute_to_neuron_input, baselines=baselines, additional_forward_args=additional_forward_args,
            n_steps=n_steps, method=method, internal_batch_size=internal_batch_size, forward_kwargs=forward_kwargs,
        )


class NeuronDeepLift(_Multiplying):
    r"""DeepLIFT (Shrikumar et al. 2017; rescale rule) of the neuron's value: inputs and
    baselines run as one batch and every ReLU and max-pool below the neuron passes back
    rescaled multipliers, so the attributions sum to ``neuron(x) - neuron(x0)`` on ReLU /
    max-pool / eval-BatchNorm networks.

    Formula:
        $$\phi_i = m_i \, (x_i - x'_i), \qquad
        m_{\mathrm{in}} = m_{\mathrm{out}} \odot \frac{f(z) - f(z')}{z - z'}$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(x'\) is the baseline (zero by default) and \(m_i\) the
        multiplier of input \(x_i\): the backward pass from \(n\) in which every activation
        (and max-pool) \(y = f(z)\) passes back the secant slope between its inputs for
        \(x\) and \(x'\) (the derivative where \(|z - z'| <\) ``eps``). With
        ``multiply_by_inputs=False`` the result is \(m_i\). Summation to delta on such
        networks: \(\sum_i \phi_i = n(x) - n(x')\).

    Cost:
        One forward pass (of the whole model) and one backward pass (from the layer) per
        example, each chunk of examples run together with its baselines as one batch
        ``[x; x']`` (twice the rows). Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronDeepLift
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
        ...                             torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> attributions = NeuronDeepLift(model, model[3]).attribute(x, neuron_selector=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 0] - model[:4](torch.zeros(1, 3))[:, 0]
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    _method = DeepLift

    def __init__(self, model, layer, multiply_by_inputs: bool = True, eps: float = 1e-10, *,
                 layer_call: int | None = None):
        super().__init__(model, layer, None, multiply_by_inputs, layer_call=layer_call)
        self.eps = eps

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, custom_attribution_func=None, forward_kwargs=None,
                  internal_batch_size="auto"):
        return self._through(
            lambda f: self._method(f, self._multiply_by_inputs, self.eps), inputs, neuron_selector,
            attribute_to_neuron_input, baselines=baselines, additional_forward_args=additional_forward_args,
            custom_attribution_func=custom_attribution_func, forward_kwargs=forward_kwargs,
            internal_batch_size=internal_batch_size,
        )


class NeuronDeepLiftShap(NeuronDeepLift):
    r"""DeepLiftShap (Lundberg & Lee 2017) of the neuron: DeepLIFT of the neuron's value
    against each row of a baseline distribution, averaged.

    Formula:
        $$\phi_i = \frac{1}{B} \sum_{j=1}^{B} m_i^{(j)} \, (x_i - b_{j,i})$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(b_1, \dots, b_B\) are the rows of ``baselines`` and
        \(m^{(j)}\) the DeepLIFT (rescale) multipliers of \(n\) for \(x\) against \(b_j\)
        (see :class:`NeuronDeepLift`); with ``multiply_by_inputs=False`` the multipliers
        alone are averaged. Where DeepLIFT sums to delta:
        \(\sum_i \phi_i = n(x) - \frac{1}{B} \sum_j n(b_j)\).

    Cost:
        \(B\) forward passes (of the whole model) and backward passes (from the layer)
        per example, one per baseline row: all (example, baseline) pairs are rows of one
        chunked evaluation, each chunk run together with its baselines as one batch
        (twice the rows). Chunks follow ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronDeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
        ...                             torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, baselines = torch.randn(2, 3), torch.randn(5, 3)
        >>> attributions = NeuronDeepLiftShap(model, model[3]).attribute(x, 0, baselines)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> gap = model[:4](x)[:, 0] - model[:4](baselines)[:, 0].mean()
        >>> bool(torch.allclose(attributions.sum(1), gap, atol=1e-5))
        True
    """

    _method = DeepLiftShap

    def attribute(self, inputs, neuron_selector, baselines, additional_forward_args=None,  # type: ignore[override]
                  attribute_to_neuron_input: bool = False, custom_attribution_func=None, forward_kwargs=None,
                  internal_batch_size="auto"):
        return super().attribute(
            inputs, neuron_selector, baselines, additional_forward_args, attribute_to_neuron_input,
            custom_attribution_func, forward_kwargs, internal_batch_size,
        )


class NeuronGradientShap(_Multiplying):
    r"""GradientSHAP (Lundberg & Lee 2017) of the neuron's value: gradients at random points
    between noisy inputs and rows of a baseline distribution, times the difference.
    ``generator`` (beyond Captum) makes the draws reproducible.

    Formula:
        $$\phi_i = \frac{1}{S} \sum_{s=1}^{S} (\tilde{x}_{s,i} - b_{s,i})
        \frac{\partial n(b_s + \alpha_s (\tilde{x}_s - b_s))}{\partial x_i}, \qquad
        \tilde{x}_s = x + \epsilon_s$$

        \(n(x) = \sum_{u \in U} h_u(x)\) is the value of the neuron (or the sum of a group
        \(U\) of neurons) that ``neuron_selector`` picks from the layer's output \(h\)
        (input, with ``attribute_to_neuron_input=True``); a callable selector \(c\) gives
        \(n(x) = c(h(x))\). \(S\) is ``n_samples``, each sample's baseline \(b_s\)
        is drawn uniformly from the rows of ``baselines``, \(\alpha_s\) uniformly from
        \([0, 1)\) and \(\epsilon_s\) from \(\mathcal{N}(0, \sigma^2 I)\), \(\sigma\) =
        ``stdevs``. With ``multiply_by_inputs=False`` the factor
        \((\tilde{x}_s - b_s)\) is left out. Completeness holds only approximately
        (exactly for a neuron linear in the inputs).

    Cost:
        ``n_samples`` forward passes (of the whole model) and backward passes (from the
        layer) per example, all rows batched in chunks of ``internal_batch_size``.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import NeuronGradientShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> ngs = NeuronGradientShap(model, model[0])
        >>> attributions = ngs.attribute(x, 1, torch.zeros(1, 3), n_samples=4,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> attributions.shape
        torch.Size([2, 3])
        >>> # a neuron linear in the inputs, one zero baseline: every sample gives x * weight
        >>> bool(torch.allclose(attributions, x * model[0].weight[1], atol=1e-6))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines, n_samples: int = 5, stdevs=0.0,
                  additional_forward_args=None, attribute_to_neuron_input: bool = False, forward_kwargs=None,
                  internal_batch_size="auto", generator: torch.Generator | None = None):
        return self._through(
            lambda f: GradientShap(f, self._multiply_by_inputs), inputs, neuron_selector, attribute_to_neuron_input,
            baselines=baselines, n_samples=n_samples, stdevs=stdevs, additional_forward_args=additional_forward_args,
            forward_kwargs=forward_kwargs, internal_batch_size=internal_batch_size, generator=generator,
        )


class ConductanceAdapter(ForwardAdapter):
    """An adapter whose per-row scalar has the conductance through the neuron as its
    input gradient: ``sum_j w_j * (dF/dv_j) * v_j``, with ``dF/dv`` (the gradient of
    the target output with respect to the layer) and ``w = d selection / dv`` held
    constant, so only the layer values ``v`` carry the inputs' gradient. ``w`` is the
    0/1 mask of the selected neurons for an index selector, the callable's gradient
    otherwise. One backward pass through the model per chunk, as for the inputs."""

    def __init__(self, adapter: ForwardAdapter, tap: LayerTap, selector, grad_kwargs=None):
        super().__init__(adapter.forward_func, adapter.n, adapter.target, adapter.args, adapter.kwargs,
                         adapter.output_selector)
        self.tap = tap
        self.selector = selector
        self.grad_kwargs = {**check_grad_kwargs(grad_kwargs), "retain_graph": True}

    def scalars(self, inputs, examples) -> Tensor:
        with self.tap.recording(grad=True) as record:
            out = super().scalars(inputs, examples)
        values = record.values
        grads = input_gradients(out, values, f"layer {self.tap.name!r}'s values", self.grad_kwargs)
        probe = tuple(v.detach().requires_grad_() for v in values)
        with torch.enable_grad():
            picked = select_neuron(self.selector, probe, len(out))
        if not picked.requires_grad:
            raise ValueError("neuron_selector (a callable) must compute its values from the layer's values")
        weights = torch.autograd.grad(picked.sum(), probe, allow_unused=True)
        total = 0
        for v, g, w in zip(values, grads, weights):
            if w is not None:
                total = total + (w * g.detach() * v).reshape(len(out), -1).sum(1)
        return total


class NeuronConductance(_Multiplying):
    r"""Conductance of the neuron (Dhamdhere et al. 2018): the flow of the target
    output's integrated gradients through the neuron, ``(x - x0) * integral of
    dF/dv * dv/dx`` along the straight path (``riemann_trapezoid`` by default, as
    Captum). A slice, or a callable linear in the layer's values (a selection, a sum,
    a weighted sum), gives the same combination of the single neurons' conductances;
    Captum instead multiplies the selection of the output gradients by the gradient
    of the selection, which differs for groups. A nonlinear callable is linearised
    at each point of the path (its gradient weights the neurons).
    ``output_selector`` (beyond Captum) picks the explained output of a model that
    returns a tuple or dict.

    Formula:
        $$\phi_i = (x_i - x'_i) \sum_{k=1}^{m} w_k \sum_j s_j(x_k)
        \frac{\partial F(x_k)}{\partial h_j} \frac{\partial h_j(x_k)}{\partial x_i}, \qquad
        x_k = x' + \alpha_k (x - x')$$

        with \(F\) the target output, \(h\) the layer's output (input, with
        ``attribute_to_neuron_input=True``), \(s_j = \partial n / \partial h_j\) the
        weight of unit \(j\) in the selection \(n\) (1 for the selected neurons of an index
        selector, 0 elsewhere), \(x'\) the baseline (zero by default) and the \(m\) =
        ``n_steps`` points \(\alpha_k\) and weights \(w_k\) of ``method``. With
        ``multiply_by_inputs=False`` the factor \((x_i - x'_i)\) is left out. By the
        chain rule, the conductances of all the layer's neurons sum to the integrated
        gradients of \(F\) when the output depends on the inputs only through the layer.

    Cost:
        ``n_steps`` forward passes per example, each with two partial backward passes
        (output to layer, then layer to inputs: about one full backward), batched in
        chunks of ``internal_batch_size`` rows (``"auto"``: from the memory budget).

    Examples:
        >>> import torch
        >>> from torchexplain.attr import IntegratedGradients, NeuronConductance
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(2, 3)
        >>> nc = NeuronConductance(model, model[1])
        >>> attributions = nc.attribute(x, neuron_selector=1, target=0)
        >>> attributions.shape
        torch.Size([2, 3])
        >>> whole_layer = nc.attribute(x, neuron_selector=slice(None), target=0)
        >>> ig = IntegratedGradients(model).attribute(x, target=0, method="riemann_trapezoid")
        >>> bool(torch.allclose(whole_layer, ig, atol=1e-5))
        True
    """

    def attribute(self, inputs, neuron_selector, baselines=None, target=None, additional_forward_args=None,
                  n_steps: int = 50, method: str = "riemann_trapezoid", internal_batch_size="auto",
                  attribute_to_neuron_input: bool = False, grad_kwargs=None, forward_kwargs=None):
        neuron = self._neuron(neuron_selector, attribute_to_neuron_input)
        inputs, is_tuple, adapter = self._prepare(inputs, target, additional_forward_args, forward_kwargs)
        baselines = format_baselines(baselines, inputs)
        n_steps = positive_int(n_steps, "n_steps")
        chunk = self._chunk(internal_batch_size)
        scores = ConductanceAdapter(adapter, neuron.tap, neuron.selector, grad_kwargs)
        integrator = IntegratedGradients(self.forward_func, self._multiply_by_inputs)
        with self._guard():
            attributions = integrator._integrate(inputs, baselines, scores, n_steps, method, chunk)
        return format_output(is_tuple, attributions)
