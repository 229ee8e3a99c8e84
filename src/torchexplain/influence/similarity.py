"""SimilarityInfluence: the training examples whose layer activations are most similar.

For each layer, the activations of the source dataset are computed once (forward
hooks, no gradients) and kept, in memory and under ``activation_dir`` (reused when
``load_src_from_disk``); the test activations are compared with them one source
batch at a time and a running top-k is kept. The forward passes run inside
:func:`._state.borrowed`, so a model in train mode keeps its batch-norm statistics.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from ._state import borrowed
from .base import DataInfluence

DIRECTIONS = ("max", "min")


def euclidean_distance(test: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """``[n_test, n_train]`` Euclidean distances between flattened rows."""
    return torch.cdist(test.reshape(test.shape[0], -1)[None], train.reshape(train.shape[0], -1)[None])[0]


def cosine_similarity(test: torch.Tensor, train: torch.Tensor, replace_nan: float = 0) -> torch.Tensor:
    """``[n_test, n_train]`` cosine similarities of flattened rows; a pair with a zero
    vector (no direction) gets ``replace_nan``."""
    a, b = test.reshape(test.shape[0], -1), train.reshape(train.shape[0], -1)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    sim = (a / na.clamp_min(torch.finfo(a.dtype).tiny)) @ (b / nb.clamp_min(torch.finfo(b.dtype).tiny)).T
    zero = (na == 0) | (nb.T == 0)
    return torch.where(zero, torch.full_like(sim, float(replace_nan)), sim)


def _call(module, batch, extra=None):
    args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if extra is not None:
        args = args + (tuple(extra) if isinstance(extra, (tuple, list)) else (extra,))
    return module(*args)


class SimilarityInfluence(DataInfluence):
    r"""Similarity influence (Captum's ``SimilarityInfluence``): the top-k most
    similar (``similarity_direction="max"``) or least distant (``"min"``)
    examples of ``influence_src_dataset`` for each input, by the activations of each
    of ``layers`` (names of submodules of ``module``), under ``similarity_metric``
    (default cosine; zero vectors get ``replace_nan``, -2 for "max" and 2 for "min",
    and their (input, source) index pairs are returned under ``"zero_acts-<layer>"``).
    ``influence`` returns ``{layer: (indices, scores)}``, each ``[n_inputs, top_k]``.

    Formula:
        $$\operatorname{topk}_{j} \; s\big(a_l(x), a_l(z_j)\big), \qquad
        s_{\cos}(a, b) = \frac{a \cdot b}{\lVert a \rVert\, \lVert b \rVert}$$

        per layer \(l\) and input \(x\), over the source examples \(z_j\), with
        \(a_l\) the flattened activation (the layer's output) and \(s\) =
        ``similarity_metric``: the largest values for "max", the smallest for "min"
        (e.g. with a Euclidean distance).

    Cost:
        One forward pass over the source dataset, without gradients, on the first call
        (kept in memory and saved under ``activation_dir``, reused while
        ``load_src_from_disk``); one forward pass over the inputs per call; then the
        \(N \times N_{\text{src}}\) similarities, ``batch_size`` source rows at a time
        with a running top-k. No backward pass.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from torchexplain.influence import SimilarityInfluence
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> source = torch.randn(6, 4)
        >>> with tempfile.TemporaryDirectory() as activations:
        ...     found = SimilarityInfluence(model, ["0"], source, activations).influence(source[:2], top_k=1)
        >>> indices, scores = found["0"]  # each source example is most similar to itself
        >>> indices.tolist(), bool(torch.allclose(scores, torch.ones(2, 1)))
        ([[0], [1]], True)
    """

    def __init__(
        self,
        module: nn.Module,
        layers,
        influence_src_dataset,
        activation_dir: str,
        model_id: str = "",
        similarity_metric: Callable = cosine_similarity,
        similarity_direction: str = "max",
        batch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"module: expected a torch.nn.Module; got {type(module).__name__}")
        self.module = module
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        named = dict(module.named_modules())
        for layer in self.layers:
            if not isinstance(layer, str) or layer not in named or not layer:
                raise ValueError(f"layers: {layer!r} is not the name of a layer of module; got {layers!r}")
        self._layer_modules = [named[n] for n in self.layers]
        if similarity_direction not in DIRECTIONS:
            raise ValueError(f"similarity_direction: expected one of {list(DIRECTIONS)}; got {similarity_direction!r}")
        if not callable(similarity_metric):
            raise ValueError(
                f"similarity_metric: expected a callable (test, train) -> scores; got {similarity_metric!r}")
        self.similarity_direction = similarity_direction
        self.influence_src_dataset = influence_src_dataset
        self.activation_dir = activation_dir
        self.model_id = model_id
        self.batch_size = batch_size
        self._zero_check = similarity_metric is cosine_similarity
        if self._zero_check:
            self.replace_nan = kwargs.get("replace_nan", -2 if similarity_direction == "max" else 2)
            similarity_metric = partial(cosine_similarity, replace_nan=self.replace_nan)
        self.similarity_metric = similarity_metric
        self.influence_src_dataloader = DataLoader(influence_src_dataset, batch_size, shuffle=False)
        self._src: dict[str, torch.Tensor] | None = None

    def _activations(self, batches, extra=None) -> list[torch.Tensor]:
        found: list[list[torch.Tensor]] = [[] for _ in self.layers]

        def keeper(i):
            def hook(module, args, output):
                found[i].append(output.detach() if isinstance(output, torch.Tensor) else output[0].detach())
            return hook

        handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(self._layer_modules)]
        try:
            with torch.no_grad(), borrowed(self.module):  # a train-mode forward would update batch-norm statistics
                for batch in batches:
                    _call(self.module, batch, extra)
        finally:
            for h in handles:
                h.remove()
        return [torch.cat(parts) for parts in found]

    def _path(self, layer: str) -> str:
        return os.path.join(self.activation_dir, self.model_id or "model", "src", f"{layer}.pt")

    def _source(self, load_from_disk: bool) -> dict[str, torch.Tensor]:
        paths = {layer: self._path(layer) for layer in self.layers}
        if load_from_disk and self._src is not None:
            return self._src
        if load_from_disk and all(os.path.isfile(p) for p in paths.values()):
            self._src = {layer: torch.load(p, weights_only=True) for layer, p in paths.items()}
            return self._src
        acts = dict(zip(self.layers, self._activations(self.influence_src_dataloader)))
        for layer, value in acts.items():
            os.makedirs(os.path.dirname(paths[layer]), exist_ok=True)
            torch.save(value, paths[layer])
        self._src = acts
        return acts

    def _top(self, test: torch.Tensor, src: torch.Tensor, top_k: int):
        largest = self.similarity_direction == "max"
        best_v = best_i = None
        step = max(1, int(self.batch_size))
        for a in range(0, src.shape[0], step):
            sim = self.similarity_metric(test, src[a:a + step])
            want = (test.shape[0], min(step, src.shape[0] - a))
            if tuple(sim.shape) != want:
                raise ValueError(f"similarity_metric: expected scores of shape {want} (inputs x source batch); "
                                 f"got {tuple(sim.shape)}")
            v, i = torch.topk(sim, min(top_k, sim.shape[1]), dim=1, largest=largest)
            if best_v is not None:
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i + a], 1)
                v, order = torch.topk(v, min(top_k, v.shape[1]), dim=1, largest=largest)
                i = torch.gather(i, 1, order)
            best_v, best_i = v, i
        return best_i, best_v

    def influence(self, inputs, top_k: int = 1, additional_forward_args=None, load_src_from_disk: bool = True,
                  **kwargs: Any) -> dict:
        """``{layer: (indices, scores)}`` with ``[n_inputs, top_k]`` tensors (plus
        ``"zero_acts-<layer>"``: ``[pairs, 2]`` (input, source) indices of zero vectors)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected an int >= 1; got {top_k!r}")
        src = self._source(bool(load_src_from_disk))
        tests = self._activations([inputs], additional_forward_args)
        out: dict = {}
        for layer, test in zip(self.layers, tests):
            out[layer] = self._top(test, src[layer], top_k)
            if self._zero_check:
                tz = test.reshape(test.shape[0], -1).norm(dim=1) == 0
                sz = src[layer].reshape(src[layer].shape[0], -1).norm(dim=1) == 0
                pairs = (tz[:, None] | sz[None, :]).nonzero()
                if len(pairs):
                    warnings.warn(f"layer {layer}: zero activation vectors have no cosine similarity; their "
                                  f"(input, source) index pairs are under 'zero_acts-{layer}'", RuntimeWarning,
                                  stacklevel=2)
                    out[f"zero_acts-{layer}"] = pairs
        return out
