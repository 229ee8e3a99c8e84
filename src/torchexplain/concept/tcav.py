"""Testing with Concept Activation Vectors (Kim et al. 2018), with Captum's API.

``TCAV(model, layers).interpret(inputs, experimental_sets, target=...)`` gives, per
experimental set and layer, ``{"sign_count": (C,), "magnitude": (C,)}`` in the
set's concept order (see :mod:`.scores`), under the set's key (``"0-1"``).

What happens: each concept's examples run through the model in chunks and their
activations at every layer are cached on disk (:mod:`.store`, keyed by a hash of
the model, so a new TCAV object on the same model reuses them without running the
model, and a changed model does not); per set and layer a classifier is trained on
the cached activations, mini-batched, and its weights, the CAVs, are cached as
Captum caches them; the gradients of the target at the layers are computed over
chunks of ``inputs`` and reduced chunk by chunk. :meth:`TCAV.significance` runs the
paper's t-test against random concepts.

Classifiers: ``classifier=None`` is :class:`~.classifier.DefaultClassifier` (a
linear SVM trained in torch on the model's device), ``"fastcav"`` is
:class:`~.fastcav.FastCAVClassifier` (mean differences); any Captum ``Classifier``
or scikit-learn-style estimator (``fit``, ``coef_``) works too.

Differences from Captum: ``processes`` is accepted and ignored (the classifier is
trained on the device, mini-batched); a CAV file records the model's hash and a
changed model retrains it; input and output activations of a layer are cached
apart; errors are ValueError / TypeError naming the argument (Captum asserts).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor, nn

from ..core.batching import check_chunk_size
from ..core.hooks.layers import LayerTap
from ..core.inputs import as_tuple, validate_inputs
from .activations import stream_activations
from .cav import CAV
from .classifier import binary_rows
from .concept import Concept, ConceptInterpreter, check_experimental_sets, concepts_to_str
from .fastcav import as_classifier
from .layers import resolve_layers
from .scores import ScoreSums, gradient_scores, method_scores
from .significance import significance_results
from .store import ActivationLoader, ActivationStore, model_key


class TCAV(ConceptInterpreter):
    r"""Testing with Concept Activation Vectors (Kim et al. 2018; see the module
    docstring). Arguments as Captum's: ``layers`` are
    module names (``"layer3"``, ``"conv.1"``) or modules; ``model_id`` names the
    cache folder; ``classifier`` as above; ``layer_attr_method`` replaces the
    layer gradient (a layer attribution instance, pointed at each layer in turn);
    ``attribute_to_layer_input`` uses the layers' inputs; ``save_path`` is the cache
    root; ``classifier_kwargs`` go to ``classifier.train_and_eval``.
    ``internal_batch_size`` (beyond Captum): rows per forward / backward chunk, an
    int, None (all at once) or ``"auto"`` (sized from
    ``torchexplain.config.memory_budget``).

    Formula:
        For an experimental set, a layer \(l\) and concept \(c\) of the set, with
        \(v_c\) the CAV (the classifier's weight row for \(c\), trained on the
        concepts' activations at \(l\); a binary classifier's row \(w\) gives
        \(v = \pm w\)):

        $$s_{i,c} = \nabla_{a_l} F_t\big(a_l(x_i)\big) \cdot v_c, \qquad
        \operatorname{TCAV}_c = \frac{1}{N} \sum_{i=1}^{N} [\, s_{i,c} > 0 \,], \qquad
        \operatorname{mag}_c = \frac{1}{N} \sum_{i=1}^{N} s_{i,c}$$

        with \(a_l(x_i)\) the activation of input \(x_i\) at \(l\) (flattened), \(F_t\)
        the output for ``target`` and \(N\) the number of inputs; ``sign_count`` is
        \(\operatorname{TCAV}_c\) (the paper's score), ``magnitude`` is
        \(\operatorname{mag}_c\). With ``layer_attr_method``, its attribution at
        \(l\) replaces the gradient.

    Cost:
        Per concept, one forward pass over its examples for all layers at once (the
        activations are cached on disk and reused while the model is unchanged); per
        (set, layer), the classifier's training on the cached activations (no model
        pass; a cached CAV is loaded instead); then one forward and one backward pass
        per input for every layer and set together, in chunks of
        ``internal_batch_size``. With ``layer_attr_method``, one call of its
        ``attribute`` per chunk and layer instead.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from torchexplain.concept import TCAV, Concept
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
        >>> shifted = Concept(0, "shifted", [torch.randn(8, 4) + 1.0])  # any re-iterable of batches
        >>> random = Concept(1, "random", [torch.randn(8, 4)])
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     scores = TCAV(model, ["0"], save_path=cache).interpret(torch.randn(5, 4), [[shifted, random]],
        ...                                                            target=1)
        >>> list(scores), list(scores["0-1"]), scores["0-1"]["0"]["sign_count"].shape
        (['0-1'], ['0'], torch.Size([2]))
        >>> found = scores["0-1"]["0"]  # two concepts: v_1 = -v_0
        >>> bool(torch.allclose(found["sign_count"].sum(), torch.tensor(1.0))), bool(torch.allclose(
        ...     found["magnitude"][0], -found["magnitude"][1]))
        (True, True)
    """

    def __init__(self, model: nn.Module, layers, model_id: str = "default_model_id", classifier=None,
                 layer_attr_method=None, attribute_to_layer_input: bool = False, save_path: str = "./cav/", *,
                 internal_batch_size="auto", **classifier_kwargs) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (TCAV reads its layers); got {type(model).__name__}")
        if not isinstance(model_id, str) or not model_id or "/" in model_id or "\\" in model_id:
            raise ValueError(f"model_id must be a non-empty string without '/' (it names a folder); got {model_id!r}")
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"save_path must be a path (str); got {type(save_path).__name__}")
        super().__init__(model)
        resolved = resolve_layers(model, layers)
        self.layers: list[str] = [name for name, _ in resolved]
        self._modules = {name: module for name, module in resolved}
        self.model_id = model_id
        self.concepts: set[Concept] = set()
        self.classifier = as_classifier(classifier)
        self.classifier_kwargs = classifier_kwargs
        self.cavs: dict[str, dict[str, CAV]] = defaultdict(dict)
        self.layer_attr_method = layer_attr_method
        self.attribute_to_layer_input = bool(attribute_to_layer_input)
        self.save_path = os.fspath(save_path)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self._key: str | None = None
        CAV.create_cav_dir_if_missing(self.save_path, model_id)

    # ----------------------------------------------------------------- the cache

    @contextlib.contextmanager
    def _model_state(self):
        """Hash the model once for a public call (nested calls reuse it)."""
        if self._key is not None:
            yield self._key
            return
        self._key = model_key(self.model, self.model_id, self.attribute_to_layer_input)
        try:
            yield self._key
        finally:
            self._key = None

    def _store(self, key: str) -> ActivationStore:
        return ActivationStore(self.save_path, self.model_id, key)

    def _device(self):
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def _module(self, layer) -> tuple[str, nn.Module]:
        if isinstance(layer, str) and layer in self._modules:
            return layer, self._modules[layer]
        return resolve_layers(self.model, layer)[0]

    def generate_all_activations(self) -> None:
        """Cache the activations of every concept in ``self.concepts`` at every layer."""
        for concept in self.concepts:
            self.generate_activation(self.layers, concept)

    def generate_activation(self, layers, concept: Concept) -> None:
        """Run ``concept``'s examples through the model (chunked; one pass for all
        ``layers``) and cache its activations at ``layers``."""
        names = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
        if not names:
            return
        resolved = [self._module(layer) for layer in names]
        if concept.data_iter is None:
            raise ValueError(f"concept {concept!r} has data_iter=None and its activations are not cached; "
                             "give it a data_iter")
        with self._model_state() as key:
            store = self._store(key)
            writers = [store.writer(concept.identifier, name) for name, _ in resolved]
            stream_activations(self.model, [m for _, m in resolved], concept.data_iter, writers,
                               self.attribute_to_layer_input, f"concept {concept!r}'s data_iter",
                               self.internal_batch_size)

    def generate_activations(self, concept_layers: dict) -> None:
        """:meth:`generate_activation` for each ``{concept: [layers]}`` entry."""
        for concept, layers in concept_layers.items():
            self.generate_activation(layers, concept)

    def load_cavs(self, concepts: list[Concept]) -> tuple[list[str], dict]:
        """Load the cached CAVs of ``concepts`` (for this model) into ``self.cavs``;
        returns the layers still to train and ``{concept: layers}`` whose activations
        are not cached, as Captum's."""
        key_str = concepts_to_str(concepts)
        layers, concept_layers = [], defaultdict(list)
        with self._model_state() as key:
            store = self._store(key)
            for layer in self.layers:
                held = self.cavs.get(key_str, {}).get(layer)
                if held is None or held.model_hash != key:
                    held = CAV.load(self.save_path, self.model_id, concepts, layer, model_hash=key)
                    if held is not None:
                        self.cavs[key_str][layer] = held
                if held is None:
                    layers.append(layer)
                    for concept in concepts:
                        if not store.exists(concept.identifier, layer):
                            concept_layers[concept].append(layer)
        return layers, concept_layers

    def compute_cavs(self, experimental_sets: list[list[Concept]], force_train: bool = False,
                     processes: int | None = None) -> dict[str, dict[str, CAV]]:
        """Train (or load from the cache) the CAVs of every set at every layer;
        ``force_train=True`` recomputes the activations and retrains."""
        sets = check_experimental_sets(experimental_sets)
        _check_processes(processes)
        new = {c.id: c for concepts in sets for c in concepts}
        self.concepts = {c for c in self.concepts if c.id not in new} | set(new.values())
        with self._model_state() as key:
            if force_train:
                for concept in new.values():
                    self.generate_activation(self.layers, concept)
            for concepts in sets:
                if force_train:
                    layers = list(self.layers)
                else:
                    layers, missing = self.load_cavs(concepts)
                    self.generate_activations(missing)
                self._train(concepts, layers, key)
        return self.cavs

    def _train(self, concepts: list[Concept], layers: Sequence[str], key: str) -> None:
        store = self._store(key)
        set_key = concepts_to_str(concepts)
        for layer in layers:
            sources = [(store.files(c.identifier, layer), c.id) for c in concepts]
            loader = ActivationLoader(sources, self._device())
            stats = self.classifier.train_and_eval(loader, **self.classifier_kwargs) or {}
            weights, classes = _checked_weights(self.classifier, concepts)
            cav = CAV(concepts, layer, {"weights": weights, "classes": classes, **stats}, self.save_path,
                      self.model_id, key)
            cav.save()
            self.cavs[set_key][layer] = cav

    # ----------------------------------------------------------------- scores

    def interpret(self, inputs, experimental_sets: list[list[Concept]], target=None, additional_forward_args=None,
                  processes: int | None = None, **kwargs) -> dict[str, dict[str, dict[str, Tensor]]]:
        """TCAV scores of every set at every layer for ``inputs`` (CAVs trained or
        loaded first): ``{set key: {layer: {"sign_count", "magnitude"}}}``, each a
        tensor with one value per concept of the set, in the set's order.
        ``kwargs`` go to ``layer_attr_method.attribute`` (the default gradient takes
        ``grad_kwargs`` only)."""
        if "attribute_to_layer_input" in kwargs:
            raise ValueError("attribute_to_layer_input is a TCAV constructor argument (it applies to both the "
                             "activations and the attributions); do not pass it to interpret")
        inputs, _ = as_tuple(inputs)
        validate_inputs(inputs, floating=False)
        sets = check_experimental_sets(experimental_sets)
        with self._model_state():
            self.compute_cavs(sets, processes=processes)
            plans = [self._plan(sets, layer) for layer in self.layers]
            sums = [ScoreSums(cavs) for cavs, _ in plans]
            modules = [self._modules[layer] for layer in self.layers]
            if self.layer_attr_method is None:
                unknown = sorted(set(kwargs) - {"grad_kwargs"})
                if unknown:
                    raise TypeError(f"interpret got keyword(s) {unknown} that the default layer gradient does not "
                                    "take (only grad_kwargs); pass layer_attr_method to use them")
                taps = [LayerTap(m, to_input=self.attribute_to_layer_input, name=name)
                        for name, m in zip(self.layers, modules)]
                gradient_scores(self.model, taps, sums, inputs, target, additional_forward_args,
                                self.internal_batch_size, kwargs.get("grad_kwargs"))
            else:
                method_scores(self.layer_attr_method, self.model, modules, sums, inputs, target,
                              additional_forward_args, self.attribute_to_layer_input, self.internal_batch_size, kwargs)
        return _results(sets, self.layers, plans, sums)

    def _plan(self, sets: list[list[Concept]], layer: str) -> tuple[Tensor, list[list[int]]]:
        """The CAV rows of every set at ``layer``, stacked, and for each set the
        row of each of its concepts (in the set's order)."""
        rows, index, offset = [], [], 0
        for concepts in sets:
            stats = self.cavs[concepts_to_str(concepts)][layer].stats
            weights = torch.as_tensor(stats["weights"]).float()
            order = {int(c): i for i, c in enumerate(stats["classes"])}
            index.append([offset + order[c.id] for c in concepts])
            rows.append(weights.reshape(weights.shape[0], -1))
            offset += weights.shape[0]
        return torch.cat(rows).to(self._device()), index

    def significance(self, inputs, concepts, random_concepts: Sequence[Concept], target=None,
                     additional_forward_args=None, score_type: str = "sign_count", alpha: float = 0.05,
                     processes: int | None = None, **kwargs) -> dict[str, dict[str, dict]]:
        """The paper's statistical test: for each concept ``c`` (one or a list) and
        ``random_concepts = [r0, r1, ..., rm]`` (m >= 2), the TCAV scores (``score_type``
        of the concept, the first of its set) of the sets ``[c, ri]`` for i >= 1 are
        compared with those of ``[r0, ri]`` by a two-sided Student's t-test.
        Returns ``{str(c.id): {layer: {"p_value", "t_statistic", "significant"
        (p < alpha), "concept_scores", "random_scores", "concept_mean",
        "random_mean"}}}``."""
        return significance_results(self, inputs, concepts, random_concepts, target, additional_forward_args,
                                    score_type, alpha, processes, kwargs)


def _check_processes(processes) -> None:
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int)):
        raise TypeError(f"processes must be None or an int (it is accepted and ignored); got {processes!r}")


def _checked_weights(classifier, concepts: list[Concept]) -> tuple[Tensor, list[int]]:
    """The classifier's weights as ``(C, F)`` rows and its classes as ints, checked
    against the set's concepts (a binary ``(1, F)`` becomes ``[-w, w]``)."""
    name = type(classifier).__name__
    classes = classifier.classes()
    classes = classes.tolist() if hasattr(classes, "tolist") else list(classes)
    classes = [int(c) for c in classes]
    weights = classifier.weights()
    if weights is None or len(classes) == 0:
        raise ValueError(f"classifier {name} returned no weights or no classes after train_and_eval")
    weights = torch.as_tensor(weights).detach()
    weights = weights.reshape(1, -1) if weights.dim() == 1 else weights.reshape(weights.shape[0], -1)
    if weights.shape[0] == 1 and len(classes) == 2:
        weights = binary_rows(weights)
    if weights.shape[0] != len(classes):
        raise ValueError(f"classifier {name} gives {weights.shape[0]} weight rows for {len(classes)} classes")
    lacking = [c.id for c in concepts if c.id not in classes]
    if lacking:
        raise ValueError(f"classifier {name}'s classes() {classes} lack the concept id(s) {lacking}")
    return weights.cpu(), classes


def _results(sets, layers, plans, sums) -> dict[str, dict[str, dict[str, Tensor]]]:
    out: dict[str, dict[str, dict[str, Tensor]]] = defaultdict(dict)
    for layer, (_, index), acc in zip(layers, plans, sums):
        sign, magnitude = acc.scores()
        for concepts, rows in zip(sets, index):
            pick = torch.tensor(rows, device=sign.device)
            out[concepts_to_str(concepts)][layer] = {"sign_count": sign[pick], "magnitude": magnitude[pick]}
    return out
