"""Feature ablation over a whole DataLoader (Captum 0.9's ``DataLoaderAttribution``).

The explained quantity is a metric of the whole dataset: the model's outputs on every
batch are folded by ``reduce(accum, output, inputs)`` (by default concatenated) and
turned into a tensor by ``to_metric(accum)`` (by default the accumulated value
itself). Feature ``f`` gets

    attr_f = metric(dataset) - metric(dataset with feature f set to its baseline in every example)

(one value per element of the metric), as ``FeatureAblation`` does for one batch.
Features are the ids of ``feature_mask``, shared by every batch (first dimension 1).

The unperturbed metric takes one pass over the data; the features then go through
the chunked evaluator (:func:`torchexplain.core.batching.evaluate_rows`),
``perturbations_per_pass`` of them per pass. Within a pass the perturbed copies of a
batch run in one forward when the model's outputs are per example (their first
dimension is the batch, as seen in the first pass), else one forward each.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor

from ..core.batching import evaluate_rows
from ..core.forward import select_output
from ..core.inputs import format_baselines, format_forward_kwargs, format_output
from .base import Attribution
from .feature_mask import FeatureMask, format_feature_mask


class InputRole:
    """What each element a DataLoader yields is for (Captum's values)."""

    need_attr = 0  #: passed to the model and attributed (a tensor)
    need_forward = 1  #: passed to the model, not attributed (e.g. extra arguments)
    no_forward = 2  #: not passed to the model (e.g. labels, seen by ``reduce``)


def _concat_tensors(accum: Optional[Tensor], output: Tensor, inputs) -> Tensor:
    return output if accum is None else torch.cat([accum, output])


def _parts(batch) -> tuple:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


class _Plan:
    """The validated arguments of one ``attribute`` call."""

    def __init__(self, forward, selector, roles, baselines, fm: FeatureMask, reduce, to_metric, kwargs=None):
        self.forward, self.selector, self.roles, self.kwargs = forward, selector, roles, kwargs or {}
        self.baselines, self.fm, self.reduce, self.to_metric = baselines, fm, reduce, to_metric
        self.batched = True  # whether perturbed copies of a batch may share one forward

    def call(self, inputs: tuple):
        out = self.forward(*inputs, **self.kwargs)
        return out if self.selector is None else select_output(out, self.selector)

    def metric(self, accum) -> Tensor:
        value = self.to_metric(accum) if self.to_metric is not None else accum
        if not isinstance(value, Tensor):
            raise TypeError(
                "the accumulated metric must be a tensor (return one from reduce or to_metric); "
                f"got {type(value).__name__}"
            )
        return value


class DataLoaderAttribution(Attribution):
    r"""Attributes a dataset-wide metric to input features by feature ablation over a
    whole DataLoader (Captum 0.9's DataLoaderAttribution; see the module docstring).

    Args:
        attr_method: a :class:`~torchexplain.attr.FeatureAblation` (the only method
            Captum supports); its ``forward_func`` is the model.

    Formula:
        $$\phi_{k,f} = M(D)_k - M(D_{f \leftarrow b})_k$$

        with \(M(D)\) the metric of the dataset \(D\): the model's outputs on every batch
        folded by ``reduce`` (concatenated by default) and turned into a tensor by
        ``to_metric`` (the folded value itself by default), \(k\) an element of that
        metric, and \(D_{f \leftarrow b}\) the dataset with feature \(f\) (a
        ``feature_mask`` id shared by every batch; each scalar alone by default) set to
        its ``baselines`` value (0 by default) in every example. Every scalar of a
        feature gets the feature's drop.

    Cost:
        No backward pass. With \(G\) features and \(p\) = ``perturbations_per_pass``,
        the loader is read \(2 + \lceil G / p \rceil\) times (the first time for one
        batch only): one pass for the unperturbed metric, then one pass per \(p\)
        features, in which each batch's \(p\) perturbed copies run in one forward when
        the model's outputs are per example (else one forward each). So \(1 + G\)
        forward evaluations of every example in all.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from torchexplain.attr import DataLoaderAttribution, FeatureAblation
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 1))
        >>> x = torch.randn(8, 3)
        >>> dla = DataLoaderAttribution(FeatureAblation(model))
        >>> attributions = dla.attribute(DataLoader(x, batch_size=4), to_metric=lambda outputs: outputs.mean(0))
        >>> attributions.shape  # (metric elements, *input.shape[1:])
        torch.Size([1, 3])
        >>> # the metric is the mean output: zeroing feature i lowers it by weight_i * mean_i
        >>> bool(torch.allclose(attributions, model[0].weight * x.mean(0), atol=1e-5))
        True
    """

    def __init__(self, attr_method) -> None:
        from .ablation import FeatureAblation

        if type(attr_method) is not FeatureAblation:
            raise TypeError(f"attr_method must be a FeatureAblation instance; got {type(attr_method).__name__}")
        super().__init__(attr_method.forward_func, getattr(attr_method, "output_selector", None))
        self.attr_method = attr_method

    def attribute(
        self,
        dataloader,
        input_roles: Optional[Tuple[int, ...]] = None,
        baselines=None,
        feature_mask=None,
        reduce: Optional[Callable] = None,
        to_metric: Optional[Callable] = None,
        perturbations_per_pass: int = 1,
        show_progress: bool = False,
        return_input_shape: bool = True,
        forward_kwargs=None,
    ):
        """Attributions of the metric: per attributed input (role ``need_attr``), a
        tensor ``(n_outputs, *input.shape[1:])`` (a tuple when the loader yields
        tuples or lists), with ``n_outputs`` the metric's number of elements; with
        ``return_input_shape=False``, one ``(n_outputs, max feature id + 1)`` tensor.

        Args:
            dataloader: an iterable of batches (tensors, or tuples / lists of them),
                read ``2 + ceil(n_features / perturbations_per_pass)`` times.
            input_roles: an :class:`InputRole` per element of a batch (all
                ``need_attr`` by default).
            baselines: per attributed input, a number or a tensor with first
                dimension 1 (0 by default).
            feature_mask: per attributed input, an integer tensor with first
                dimension 1; ids may be shared across inputs (each scalar its own
                feature by default).
            reduce: ``reduce(accum, output, inputs) -> accum`` (``accum`` is None at
                the first batch; ``inputs`` are the batch's elements, perturbed).
            to_metric: ``to_metric(accum) -> Tensor``.
            perturbations_per_pass: features perturbed in each pass over the data.
            forward_kwargs (beyond Captum): keyword arguments passed unchanged to every
                forward call (values that differ by example belong in the batches,
                with the role ``need_forward``).
        """
        if isinstance(perturbations_per_pass, bool) or not isinstance(perturbations_per_pass, numbers.Integral) \
                or perturbations_per_pass < 1:
            raise ValueError(f"perturbations_per_pass must be a positive int; got {perturbations_per_pass!r}")
        first = next(iter(dataloader))
        is_tuple = isinstance(first, (tuple, list))
        parts = _parts(first)
        roles = self._roles(input_roles, parts)
        attr_inputs = tuple(p for p, r in zip(parts, roles) if r == InputRole.need_attr)
        self._check_batch_one(baselines, attr_inputs, "baselines")
        self._check_batch_one(feature_mask, attr_inputs, "feature_mask")
        format_baselines(baselines, attr_inputs, promote=True)  # validate forms once
        fm = format_feature_mask(feature_mask, attr_inputs)
        reduce = _concat_tensors if reduce is None else reduce
        plan = _Plan(self.forward_func, self.output_selector, roles, baselines, fm, reduce, to_metric,
                     format_forward_kwargs(forward_kwargs))
        with self._guard(), torch.no_grad():
            drops = self._drops(dataloader, plan, int(perturbations_per_pass), show_progress)
        if not return_input_shape:
            return self._by_id(drops, fm)
        return format_output(is_tuple, fm.expand(drops))

    def attribute_future(self, *args, **kwargs):
        raise NotImplementedError("DataLoaderAttribution has no attribute_future")

    @staticmethod
    def _roles(input_roles, parts: tuple) -> tuple:
        if input_roles is None:
            roles = (InputRole.need_attr,) * len(parts)
        else:
            roles = tuple(input_roles)
            if len(roles) != len(parts):
                raise ValueError(
                    f"input_roles must give one role per element of a batch ({len(parts)}); got {len(roles)}"
                )
            if any(r not in (0, 1, 2) for r in roles):
                raise ValueError(f"input_roles must hold InputRole values 0, 1 or 2; got {roles}")
            if InputRole.need_attr not in roles:
                raise ValueError(f"input_roles must mark at least one element need_attr (0); got {roles}")
        for i, (p, r) in enumerate(zip(parts, roles)):
            if r == InputRole.need_attr and not isinstance(p, Tensor):
                raise TypeError(f"batch element {i} has role need_attr but is a {type(p).__name__}, not a tensor")
        return roles

    @staticmethod
    def _check_batch_one(value, attr_inputs, name: str) -> None:
        """Tensors of ``value`` with their input's number of dimensions must have a
        first dimension of 1: they are shared by every batch."""
        items = value if isinstance(value, (tuple, list)) else (value,) * len(attr_inputs)
        for i, (v, x) in enumerate(zip(items, attr_inputs)):
            if isinstance(v, Tensor) and v.dim() == x.dim() and v.shape[0] != 1:
                where = f"{name}[{i}]" if isinstance(value, (tuple, list)) else name
                raise ValueError(
                    f"{where} must have first dimension 1 (it is shared by every batch); got shape {tuple(v.shape)}"
                )

    def _drops(self, loader, plan: _Plan, per_pass: int, show_progress: bool) -> Tensor:
        """``(n_outputs, n_features)``: metric minus perturbed metric, features in ``fm.ids`` order."""
        n = plan.fm.n_features
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=1 + -(-n // per_pass), desc="DataLoader Attribution", unit="pass")
        try:
            base = self._pass(loader, plan, torch.tensor([-1]), first=True)[0].reshape(-1)
            if bar is not None:
                bar.update(1)
            drops: List[Optional[Tensor]] = [None] * n

            def run(a: int, b: int) -> None:
                for f, metric in zip(range(a, b), self._pass(loader, plan, torch.arange(a, b))):
                    if metric.numel() != base.numel():
                        raise ValueError(
                            f"the metric has {metric.numel()} values with feature {int(plan.fm.ids[f])} perturbed "
                            f"but {base.numel()} without: reduce / to_metric must give a tensor of fixed size"
                        )
                    drops[f] = base - metric.reshape(-1)
                if bar is not None:
                    bar.update(1)

            evaluate_rows(n, run, per_pass)
        finally:
            if bar is not None:
                bar.close()
        if n == 0:
            return base.new_zeros((base.numel(), 0))
        return torch.stack(drops, dim=1)

    def _pass(self, loader, plan: _Plan, features: Tensor, first: bool = False) -> List[Tensor]:
        """One traversal of ``loader``, each batch perturbed as each of ``features``
        (positions in ``fm.ids``; -1 leaves it as it is): one metric per feature."""
        states: List[Any] = [None] * features.numel()
        for batch in loader:
            parts = _parts(batch)
            for j, (output, inputs) in enumerate(self._outputs(plan, parts, features, first)):
                states[j] = plan.reduce(states[j], output, inputs)
        return [plan.metric(s) for s in states]

    def _outputs(self, plan: _Plan, parts: tuple, features: Tensor, first: bool):
        """``(output, perturbed batch)`` for each feature of ``features``."""
        attr = [p for p, r in zip(parts, plan.roles) if r == InputRole.need_attr]
        b, k = attr[0].shape[0], features.numel()
        rows = [x.repeat((k,) + (1,) * (x.dim() - 1)) if k > 1 else x for x in attr]
        fills = format_baselines(plan.baselines, tuple(rows), promote=True)
        perturbed = plan.fm.ablate_features(rows, fills, features.repeat_interleave(b), None)
        slices = [[t[j * b:(j + 1) * b] for t in perturbed] for j in range(k)]
        batches = [self._assemble(parts, plan.roles, s) for s in slices]
        shared = [p for p, r in zip(parts, plan.roles) if r == InputRole.need_forward]
        if first:
            tiles = all(isinstance(p, Tensor) and p.dim() > 0 and p.shape[0] == b for p in shared)
            plan.batched = plan.batched and tiles
        if k > 1 and plan.batched:
            tiled = tuple(p.repeat((k,) + (1,) * (p.dim() - 1)) for p in shared)
            out = plan.call(self._forward_inputs(parts, plan.roles, perturbed, tiled))
            if isinstance(out, Tensor) and out.dim() > 0 and out.shape[0] == k * b:
                return list(zip(out.split(b), batches))
        outputs = [plan.call(self._forward_inputs(parts, plan.roles, s, shared)) for s in slices]
        if first:
            out = outputs[0]
            plan.batched = plan.batched and isinstance(out, Tensor) and out.dim() > 0 and out.shape[0] == b
        return list(zip(outputs, batches))

    @staticmethod
    def _assemble(parts: tuple, roles: tuple, attributed) -> tuple:
        """The batch's elements in the loader's order, attributed ones replaced."""
        it = iter(attributed)
        return tuple(next(it) if r == InputRole.need_attr else p for p, r in zip(parts, roles))

    @staticmethod
    def _forward_inputs(parts: tuple, roles: tuple, attributed, shared) -> tuple:
        """The model's arguments: every element but the ``no_forward`` ones, in order."""
        a, s = iter(attributed), iter(shared)
        return tuple(next(a) if r == InputRole.need_attr else next(s) for r in roles if r != InputRole.no_forward)

    @staticmethod
    def _by_id(drops: Tensor, fm: FeatureMask) -> Tensor:
        """Columns indexed by feature id ``0 .. max id`` (Captum's form; ids absent from
        the mask get 0)."""
        if fm.n_features and int(fm.ids.min()) < 0:
            raise ValueError("return_input_shape=False needs non-negative feature ids in feature_mask")
        width = int(fm.ids.max()) + 1 if fm.n_features else 0
        out = drops.new_zeros((drops.shape[0], width))
        out[:, fm.ids.to(drops.device)] = drops
        return out


__all__ = ["DataLoaderAttribution", "InputRole"]
