""":meth:`TCAV.significance`: experimental sets against random concepts, and the t-test."""

from __future__ import annotations

import torch

from .concept import Concept, concepts_to_str
from .stats import significance_test

SCORE_TYPES = ("sign_count", "magnitude")


def _concept_list(value, name: str, minimum: int) -> list[Concept]:
    items = [value] if isinstance(value, Concept) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a Concept or a list of Concept; got {type(value).__name__}")
    items = list(items)
    if len(items) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} concepts; got {len(items)}")
    for i, c in enumerate(items):
        if not isinstance(c, Concept):
            raise TypeError(f"{name}[{i}] must be a Concept; got {type(c).__name__}")
    return items


def significance_results(tcav, inputs, concepts, random_concepts, target, additional_forward_args, score_type,
                         alpha, processes, kwargs) -> dict:
    concepts = _concept_list(concepts, "concepts", 1)
    randoms = _concept_list(random_concepts, "random_concepts", 3)
    if score_type not in SCORE_TYPES:
        raise ValueError(f"score_type must be one of {SCORE_TYPES}; got {score_type!r}")
    shared = {c.id for c in concepts} & {r.id for r in randoms}
    if shared:
        raise ValueError(f"random_concepts must not contain the tested concepts; shared id(s) {sorted(shared)}")
    reference, others = randoms[0], randoms[1:]
    sets = [[c, r] for c in concepts for r in others] + [[reference, r] for r in others]
    scores = tcav.interpret(inputs, sets, target=target, additional_forward_args=additional_forward_args,
                            processes=processes, **kwargs)

    def first_scores(head: Concept, layer: str) -> torch.Tensor:
        return torch.stack([scores[concepts_to_str([head, r])][layer][score_type][0] for r in others])

    out: dict = {}
    for c in concepts:
        out[str(c.id)] = {}
        for layer in tcav.layers:
            ours, base = first_scores(c, layer), first_scores(reference, layer)
            result = significance_test(ours, base, alpha)
            out[str(c.id)][layer] = {**result, "concept_scores": ours, "random_scores": base}
    return out
