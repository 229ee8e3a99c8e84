"""Feature ablation and permutation, and what every perturbation method shares.

A perturbation method describes its work as *blocks*: block ``b`` is one perturbation
of every example (the original inputs, one ablated feature, one coalition...). Row
``b * n + i`` is block ``b`` of example ``i``; all rows run through
:func:`~torchexplain.core.perturb.forward_rows` (inference mode, memory-sized chunks),
and the explained scalars come back as a ``(n_blocks, n)`` table that the method folds
into attributions without further forward passes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..core.inputs import format_baselines, format_output
from ..core.perturb import forward_rows
from .seeding import make_generator, positive_int
from .base import Attribution, take
from .feature_mask import FeatureMask, format_feature_mask


def rows_of(t: Tensor, examples: Tensor) -> Tensor:
    """Rows ``examples`` of ``t``; a broadcast view (stride 0 over the batch, e.g. a
    scalar or batch-1 baseline) stays one row that broadcasts."""
    if t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    return take(t, examples)


def block_values(
    adapter,
    n_blocks: int,
    build: Callable[[Tensor, Tensor], tuple],
    *,
    perturbations_per_eval="auto",
    show_progress: bool = False,
    desc: str = "perturbations",
) -> Tensor:
    """The explained scalar of every (block, example): a ``(n_blocks, n)`` table.
    ``build(blocks, examples)`` returns the inputs of rows given by their block and
    example indices."""
    n = adapter.n
    table: dict[str, Tensor] = {}

    def consume(rows: Tensor, examples: Tensor, scalars: Tensor) -> None:
        if "v" not in table:
            table["v"] = torch.empty(n_blocks * n, dtype=scalars.dtype, device=scalars.device)
        table["v"][rows.to(scalars.device)] = scalars

    forward_rows(
        adapter,
        n_blocks * n,
        lambda rows, examples: build(rows // n, examples),
        consume,
        perturbations_per_eval=perturbations_per_eval,
        show_progress=show_progress,
        desc=desc,
    )
    return table["v"].view(n_blocks, n)


def result_dtype(values: Tensor) -> torch.dtype:
    """Attributions are in the model output's dtype, at least float32."""
    return torch.promote_types(values.dtype, torch.float32)


def to_inputs(attributions, inputs, dtype) -> list[Tensor]:
    return [a.to(device=x.device, dtype=dtype) for a, x in zip(attributions, inputs)]


def randperm(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator)


class PerturbationAttribution(Attribution):
    """Base of the forward-only methods: inputs may be of any dtype (token ids
    included); the model runs under inference mode and is left unchanged."""

    def _setup(self, inputs, target, additional_forward_args, forward_kwargs, feature_mask):
        inputs, is_tuple, adapter = self._prepare(
            inputs, target, additional_forward_args, forward_kwargs, floating=False
        )
        return inputs, is_tuple, adapter, format_feature_mask(feature_mask, inputs)


class FeatureAblation(PerturbationAttribution):
    """Replace each feature (a group of input scalars sharing a ``feature_mask`` id;
    every scalar by default) with its baseline; its attribution is the drop in the
    explained output, ``F(x) - F(x with the feature ablated)``, given to every scalar
    of the feature.

    Every ablation runs batched: ``perturbations_per_eval="auto"`` sizes the batches
    from the memory budget; an int is Captum's number of ablations per forward.
    """

    def attribute(
        self,
        inputs,
        baselines=None,
        target=None,
        additional_forward_args=None,
        feature_mask=None,
        perturbations_per_eval="auto",
        show_progress: bool = False,
        forward_kwargs=None,
    ):
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask
        )
        baselines = format_baselines(baselines, inputs)

        def build(blocks: Tensor, examples: Tensor):
            xs = [take(x, examples) for x in inputs]
            bs = [rows_of(b, examples) for b in baselines]
            return fm.ablate_features(xs, bs, blocks - 1, examples)

        return self._ablation_result(inputs, is_tuple, adapter, fm, build, perturbations_per_eval, show_progress)

    def _ablation_result(self, inputs, is_tuple, adapter, fm: FeatureMask, build, perturbations_per_eval, show_progress):
        """Block 0 is the inputs, block ``1 + f`` ablates feature ``f``."""
        with self._guard():
            values = block_values(
                adapter,
                1 + fm.n_features,
                build,
                perturbations_per_eval=perturbations_per_eval,
                show_progress=show_progress,
                desc=type(self).__name__,
            )
        drops = (values[0:1] - values[1:]).t()  # (n, n_features)
        dtype = result_dtype(values)
        return format_output(is_tuple, to_inputs(fm.expand(drops), inputs, dtype))


class FeaturePermutation(FeatureAblation):
    """Permutation feature importance: each feature is shuffled across the batch (every
    example takes the feature's values from another example, the same permutation for
    every input tensor the feature spans) and its attribution is ``F(x) - F(x with the
    feature permuted)`` per example.

    ``perm_func(x, mask)`` (Captum's) replaces the default random permutation; it
    receives an input tensor and a bool mask of the feature and returns the permuted
    tensor. Beyond Captum, ``generator`` or ``seed`` make the permutations reproducible
    without touching torch's global generator (used, as in Captum, when neither is given).
    """

    def __init__(self, forward_func, perm_func: Callable | None = None, output_selector=None):
        super().__init__(forward_func, output_selector)
        if perm_func is not None and not callable(perm_func):
            raise TypeError(f"perm_func must be callable; got {type(perm_func).__name__}")
        self.perm_func = perm_func

    def attribute(  # type: ignore[override]
        self,
        inputs,
        target=None,
        additional_forward_args=None,
        feature_mask=None,
        perturbations_per_eval="auto",
        show_progress: bool = False,
        forward_kwargs=None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        inputs, is_tuple, adapter, fm = self._setup(
            inputs, target, additional_forward_args, forward_kwargs, feature_mask
        )
        if adapter.n < 2:
            raise ValueError(
                f"FeaturePermutation permutes features across the batch: inputs need at least 2 examples; got {adapter.n}"
            )
        rng = make_generator(generator, seed)
        build = self._custom_build(inputs, fm) if self.perm_func is not None else self._build(inputs, fm, rng)
        return self._ablation_result(inputs, is_tuple, adapter, fm, build, perturbations_per_eval, show_progress)

    @staticmethod
    def _build(inputs, fm: FeatureMask, rng):
        n = inputs[0].shape[0]
        identity = torch.arange(n)
        sources = []
        for _ in range(fm.n_features):  # draws in feature order; never the identity
            perm = randperm(n, rng)
            while bool((perm == identity).all()):
                perm = randperm(n, rng)
            sources.append(perm)
        source = torch.stack(sources)  # (n_features, n): example each row takes the feature from

        def build(blocks: Tensor, examples: Tensor):
            features = blocks - 1
            donors = torch.where(features >= 0, source[features.clamp_min(0), examples], examples)
            xs = [take(x, examples) for x in inputs]
            return fm.ablate_features(xs, [take(x, donors) for x in inputs], features, examples)

        return build

    def _custom_build(self, inputs, fm: FeatureMask):
        ids = fm.ids.tolist()

        def build(blocks: Tensor, examples: Tensor):
            parts = [[] for _ in inputs]
            for b in blocks.unique().tolist():
                here = (blocks == b).nonzero().flatten()
                for i, x in enumerate(inputs):
                    batch = x
                    if b > 0 and bool(fm.present[i, b - 1]):
                        batch = self.perm_func(x, fm.masks[i] == ids[b - 1])
                    parts[i].append((here, take(batch, examples[here])))
            out = []
            for i, x in enumerate(inputs):
                rows = torch.empty((blocks.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
                for here, values in parts[i]:
                    rows[here.to(x.device)] = values.to(x.dtype)
                out.append(rows)
            return tuple(out)

        return build
