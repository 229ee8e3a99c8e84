"""Feature ablation and permutation (Captum's FeatureAblation, FeaturePermutation).

Block 0 is the inputs, block ``1 + f`` perturbs feature ``f``; every block runs
through :func:`~torchexplain.attr.blocks.block_values` (see :mod:`.blocks` for models
with one output for the whole batch, and for futures).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

from ..core.incremental import IncrementalReport
from ..core.inputs import format_baselines, format_output
from ..core.registry import grid_mask, register
from .blocks import Blocks, PerturbationAttribution, example_rows, then
from .feature_mask import FeatureMask
from .incremental import FeatureBoxes, Incremental
from .seeding import make_generator

__all__ = ["FeatureAblation", "FeaturePermutation", "PerturbationAttribution", "perturbation_baselines", "randperm"]


def randperm(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator)


def perturbation_baselines(baselines, inputs) -> tuple[Tensor, ...]:
    """Baselines for perturbed inputs: as :func:`format_baselines`, but an integer or
    boolean input with a baseline of a wider type (a float for int token ids) is
    promoted to it, never truncated."""
    return format_baselines(baselines, inputs, promote=True)


def _drops(blocks: Blocks) -> Tensor:
    """``F(x) - F(x with feature f perturbed)``: ``(n_outputs, n_features)``."""
    v = blocks.flat()
    return (v[0:1] - v[1:]).t()


@register("feature_ablation", aliases=("ablation",), order=120, defaults=grid_mask(8),
          description="zeroing each cell of an 8x8 grid")
class FeatureAblation(PerturbationAttribution):
    r"""Feature ablation: each feature is set to its baseline and the drop of the explained output is its attribution.

    A feature is a group of input scalars sharing a ``feature_mask`` id (every
    scalar by default); it is replaced by its baseline, and its attribution, the drop
    in the explained output ``F(x) - F(x with the feature ablated)``, is given to every
    scalar of the feature.

    Every ablation runs batched: ``perturbations_per_eval="auto"`` sizes the batches
    from the memory budget; an int is Captum's number of ablations per forward.
    Attributions have the model output's dtype (an int model gives int attributions,
    as in Captum) and one row per explained output value: per example, or, for a
    model with one output for the whole batch (a loss), one row per output value;
    with ``target=None`` on a model with several outputs per example, every output
    element is attributed (rows ``example * outputs + output``).
    ``attribute_future`` takes a ``forward_func`` returning ``torch.futures.Future``.

    Formula:
        $$\phi_i = F(x) - F\big(x \odot (1 - \mathbb{1}_{f(i)}) + x' \odot \mathbb{1}_{f(i)}\big)$$

        with \(f(i)\) the feature of scalar \(i\), \(\mathbb{1}_{f}\) the indicator of the
        scalars of feature \(f\) and \(x'\) the ``baselines`` (0 by default). For a model
        additive in the features, the drops of the features sum to \(F(x) - F(x')\).

    Cost:
        \(1 + M\) forward passes per example and no backward pass, \(M\) the number of
        features (distinct ``feature_mask`` ids; every scalar by default): the inputs
        once, then one ablated copy per feature, ``perturbations_per_eval`` ablations per
        forward call. A model with one output for the whole batch gets one forward of
        the batch per feature. With ``incremental`` an ablated copy recomputes only the
        part of each layer that its feature changes.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import FeatureAblation
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> x = torch.randn(2, 4)
        >>> mask = torch.tensor([[0, 0, 1, 1]])  # two features of two scalars each
        >>> attributions = FeatureAblation(model).attribute(x, target=0, feature_mask=mask)
        >>> attributions.shape
        torch.Size([2, 4])
        >>> ablated = x.clone()
        >>> ablated[:, :2] = 0  # feature 0 at its baseline
        >>> bool(torch.allclose(attributions[:, 0], model(x)[:, 0] - model(ablated)[:, 0], atol=1e-6))
        True
        >>> bool(torch.equal(attributions[:, 0], attributions[:, 1]))
        True
    """

    incremental_report: IncrementalReport | None = None

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None,
                  incremental="auto", projective_field_threshold: float | None = None):
        """``incremental`` (beyond Captum): for one image-like input whose features
        are compact (a grid mask), each ablated copy recomputes only what its feature's
        box changes (see :mod:`torchexplain.attr.incremental`); ``"auto"`` uses it
        when it applies, ``False`` opts out, ``"approximate"`` caps the change at
        ``projective_field_threshold`` of each layer. :attr:`incremental_report`
        says how it went (None when not used)."""
        return self._attribute(inputs, baselines, target, additional_forward_args, feature_mask,
                               perturbations_per_eval, show_progress, forward_kwargs, futures=False,
                               incremental=incremental, threshold=projective_field_threshold)

    def attribute_future(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                         perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None):
        """:meth:`attribute` for a ``forward_func`` returning ``torch.futures.Future``:
        every perturbed batch is dispatched before any is waited for (the first one
        excepted, whose output tells the model's form); returns a future of the
        attributions."""
        return self._attribute(inputs, baselines, target, additional_forward_args, feature_mask,
                               perturbations_per_eval, show_progress, forward_kwargs, futures=True)

    def _attribute(self, inputs, baselines, target, additional_forward_args, feature_mask, perturbations_per_eval,
                   show_progress, forward_kwargs, *, futures, incremental=False, threshold=None):
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask, futures=futures
        )
        baselines, n = perturbation_baselines(baselines, inputs), adapter.n
        boxes = FeatureBoxes(fm, inputs[0]) if incremental is not False and len(inputs) == 1 else None
        inc = Incremental(incremental, threshold, inputs, adapter, boxes.share if boxes else 1.0)
        self.incremental_report = inc.report

        def build(blocks: Tensor, examples: Tensor):
            xs = [example_rows(x, examples, n) for x in inputs]
            bs = [example_rows(b, examples, n) for b in baselines]
            rows = fm.ablate_features(xs, bs, blocks - 1, examples)
            return rows if inc.engine is None else inc.rows(rows, examples, *boxes.of(blocks - 1, examples))

        return self._ablation_result(inputs, is_tuple, adapter, fm, build, perturbations_per_eval, show_progress,
                                     reserved_bytes=inc.cached_bytes)

    def _ablation_result(self, inputs, is_tuple, adapter, fm: FeatureMask, build, perturbations_per_eval,
                         show_progress, skipped: Tensor | None = None, reserved_bytes=None):
        """Attributions from the drops of blocks ``1 + f``; features in ``skipped``
        get 0."""

        nothing = skipped is not None and len(skipped) == fm.n_features  # only the inputs need a forward

        def finish(blocks: Blocks):
            if nothing:
                v = blocks.flat()
                drops = v.new_zeros((v.shape[1], fm.n_features))
            else:
                drops = _drops(blocks)
                if skipped is not None:
                    drops[:, skipped.to(drops.device)] = 0
            return format_output(is_tuple, blocks.attributions(fm, drops, inputs, drops.dtype))

        n_blocks = 1 if nothing else 1 + fm.n_features
        return then(self._blocks(adapter, fm, inputs, n_blocks, build, perturbations_per_eval, show_progress,
                                 reserved_bytes), finish)


@register("feature_permutation", aliases=("permutation",), order=130, defaults=grid_mask(8),
          description="permuting each grid cell across the batch (needs 2+ inputs)")
class FeaturePermutation(FeatureAblation):
    r"""Permutation feature importance (Breiman 2001): the output's drop when a feature is shuffled across the batch.

    Each feature is shuffled across the batch (every example takes the feature's
    values from another example, the same permutation for every input tensor of the
    batch that the feature spans) and its attribution is
    ``F(x) - F(x with the feature permuted)``: per example, or for the whole batch
    when ``forward_func`` returns one value for it (a loss, the usual case).

    A feature found in an input with fewer than ``_min_examples_per_batch_grouped``
    (Captum's name, 2) examples cannot be permuted: it gets 0, with a warning, as in
    Captum. A tensor whose first dimension is not the batch (a sparse index list, for
    a whole-batch model) is permuted along its own first dimension.

    ``perm_func(x, mask)`` (Captum's) replaces the default random permutation; it
    receives an input tensor and a bool mask of the feature and returns the permuted
    tensor. Beyond Captum, ``generator`` or ``seed`` make the permutations reproducible
    without touching torch's global generator (used, as in Captum, when neither is given).

    Formula:
        $$\phi_i = F(X) - F\big(X \odot (1 - \mathbb{1}_{f(i)}) + P_{f(i)} X \odot \mathbb{1}_{f(i)}\big)$$

        with \(X\) the batch, \(f(i)\) the feature of scalar \(i\), \(\mathbb{1}_{f}\) the
        indicator of its scalars and \(P_f X\) the batch with its examples reordered by a
        random permutation drawn for feature \(f\) (never the identity). \(F(X)\) is
        read per example, or once for a whole-batch model. A feature the model ignores
        gets 0.

    Cost:
        \(1 + M\) forward passes per example and no backward pass, \(M\) the number of
        features: the batch once, then one permuted copy per feature, batched as in
        :class:`FeatureAblation`; for a whole-batch model, \(1 + M\) forward passes of
        the batch, one at a time.

    Examples:
        >>> import torch
        >>> from torchexplain.attr import FeaturePermutation
        >>> model = torch.nn.Linear(3, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight[0, 2].zero_()  # the model ignores feature 2
        >>> loss = lambda inputs: model(inputs).square().mean()  # one value for the batch
        >>> x = torch.randn(8, 3)
        >>> attributions = FeaturePermutation(loss).attribute(x, seed=0)
        >>> attributions.shape  # one row: the batch's loss
        torch.Size([1, 3])
        >>> bool(torch.allclose(attributions[:, 2], torch.zeros(1)))
        True
    """

    def __init__(self, forward_func, perm_func: Callable | None = None, output_selector=None):
        super().__init__(forward_func, output_selector)
        if perm_func is not None and not callable(perm_func):
            raise TypeError(f"perm_func must be callable; got {type(perm_func).__name__}")
        self.perm_func = perm_func
        self._min_examples_per_batch_grouped = 2

    def attribute(self, inputs, target=None, additional_forward_args=None, feature_mask=None,  # type: ignore[override]
                  perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None,
                  generator: torch.Generator | None = None, seed: int | None = None):
        return self._permuted(inputs, target, additional_forward_args, feature_mask, perturbations_per_eval,
                              show_progress, forward_kwargs, generator, seed, futures=False)

    def attribute_future(self, inputs, target=None, additional_forward_args=None, feature_mask=None,  # type: ignore[override]
                         perturbations_per_eval="auto", show_progress: bool = False, forward_kwargs=None,
                         generator: torch.Generator | None = None, seed: int | None = None):
        """:meth:`attribute` for a ``forward_func`` returning ``torch.futures.Future``;
        returns a future of the attributions (see :meth:`FeatureAblation.attribute_future`)."""
        return self._permuted(inputs, target, additional_forward_args, feature_mask, perturbations_per_eval,
                              show_progress, forward_kwargs, generator, seed, futures=True)

    def _permuted(self, inputs, target, additional_forward_args, feature_mask, perturbations_per_eval, show_progress,
                  forward_kwargs, generator, seed, *, futures):
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask, futures=futures
        )
        skipped = self._unpermutable(inputs, fm)
        if self.perm_func is None and (self._min_examples_per_batch_grouped or 0) < 2 and any(
            x.shape[0] < 2 and x.numel() > 0 for x in inputs
        ):
            raise ValueError("FeaturePermutation permutes features across the batch: every input needs at least 2 "
                             f"examples; got first dimensions {[x.shape[0] for x in inputs]}")
        rng = make_generator(generator, seed)
        build = self._custom_build(inputs, fm) if self.perm_func is not None else self._build(inputs, fm, rng)
        return self._ablation_result(inputs, is_tuple, adapter, fm, build, perturbations_per_eval, show_progress,
                                     skipped)

    def _unpermutable(self, inputs, fm: FeatureMask) -> Tensor:
        """Positions of the features that cannot be permuted (warned about)."""
        least = self._min_examples_per_batch_grouped or 0
        few = torch.tensor([x.shape[0] < least and x.numel() > 0 for x in inputs], dtype=torch.bool)
        skipped = (fm.present & few.unsqueeze(1)).any(0)
        if bool(skipped.any()):
            warnings.warn(
                f"FeaturePermutation: {int(skipped.sum())} feature(s) lie in inputs with fewer than {least} examples "
                "and cannot be permuted; their attributions are 0",
                stacklevel=4,
            )
        return skipped.nonzero().flatten()

    @staticmethod
    def _permutation(size: int, rng) -> Tensor:
        """A random permutation of ``size`` (>= 2) items, never the identity."""
        identity, perm = torch.arange(size), randperm(size, rng)
        while bool((perm == identity).all()):
            perm = randperm(size, rng)
        return perm

    def _build(self, inputs, fm: FeatureMask, rng):
        n = inputs[0].shape[0]
        # per feature, in id order (Captum's order of draws): one permutation of the batch shared by
        # the batched inputs it spans, then one of each unbatched input's first dimension; an input
        # too small to permute is left as it is (its features' drops are set to 0)
        batched = torch.tensor([x.shape[0] == n for x in inputs], dtype=torch.bool)
        source = torch.arange(n).repeat(fm.n_features, 1)
        own = {i: torch.arange(x.shape[0]).repeat(fm.n_features, 1) for i, x in enumerate(inputs) if x.shape[0] != n}
        for f in range(fm.n_features):
            if n >= 2 and bool((fm.present[:, f] & batched).any()):
                source[f] = self._permutation(n, rng)
            for i in own:
                if bool(fm.present[i, f]) and inputs[i].shape[0] >= 2:
                    own[i][f] = self._permutation(inputs[i].shape[0], rng)

        def build(blocks: Tensor, examples: Tensor):
            features = blocks - 1
            donors = torch.where(features >= 0, source[features.clamp_min(0), examples], examples)
            xs, moved = [], []
            for i, x in enumerate(inputs):
                xs.append(example_rows(x, examples, n))
                if i not in own:
                    moved.append(x.index_select(0, donors.to(x.device)))
                elif int(features[0]) >= 0:  # an unbatched input: one block per call
                    moved.append(x.index_select(0, own[i][int(features[0])].to(x.device)))
                else:
                    moved.append(x)
            return fm.ablate_features(xs, moved, features, examples)

        return build

    def _custom_build(self, inputs, fm: FeatureMask):
        ids, n = fm.ids.tolist(), inputs[0].shape[0]

        def build(blocks: Tensor, examples: Tensor):
            parts = [[] for _ in inputs]
            for b in blocks.unique().tolist():
                here = (blocks == b).nonzero().flatten()
                for i, x in enumerate(inputs):
                    batch = x
                    if b > 0 and bool(fm.present[i, b - 1]):
                        batch = self.perm_func(x, fm.masks[i] == ids[b - 1])
                    parts[i].append((here, example_rows(batch, examples[here], n)))
            out = []
            for i, x in enumerate(inputs):
                if x.shape[0] != n:
                    out.append(parts[i][0][1])
                    continue
                rows = torch.empty((blocks.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
                for here, values in parts[i]:
                    rows[here.to(x.device)] = values.to(x.dtype)
                out.append(rows)
            return tuple(out)

        return build
