"""``torchexplain demo``: the bundled digits model explained by every method, its
neural-backed decision tree and a short faithfulness table, in one report (offline).
``torchexplain.cli`` calls :func:`run`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import cli


def run(args) -> Path:
    """``torchexplain demo``: returns the report's path."""
    import torch

    from . import models
    from .api import explain

    methods = cli._methods(args.method)
    out = cli._prepare_out(args.out, methods, args.overwrite, ("nbdt.html", "nbdt.json", "evaluation.json"))
    model, preprocess, names = models.load("digits")
    paths = models.sample_images()
    captions = [p.stem for p in paths]
    x = torch.stack([preprocess(p) for p in paths])
    start = time.perf_counter()
    result = explain(
        model, x, method=methods, class_names=names, mean=models.MEAN, std=models.STD, show_progress=cli._progress(args)
    )
    tree, lines = demo_tree(model, x, names, captions, out)
    table = demo_evaluation(model, x, result)
    if table is not None:
        (out / "evaluation.json").write_text(json.dumps(table.to_dict(), indent=1))
    report = cli._write(
        result,
        out,
        "torchexplain demo: digits",
        captions,
        evaluation=table,
        tree=tree,
        tree_link="nbdt.html",
        subtitle=f"{len(paths)} shipped digits, each explained for its predicted class by {len(methods)} methods; "
        "the bundled CNN (99% on held-out digits).",
        evaluation_lead="Faithfulness of some of the methods on these digits (as <code>torchexplain evaluate</code> "
        "measures it).",
        tree_lead="The tree is induced from the final layer's class weights; soft inference.",
    )
    if not args.quiet:
        print(cli._table(result, captions))
        if table is not None:
            print("\nfaithfulness (mean ± standard error over the digits; #rank, 1 = best):")
            print(table.to_markdown())
        print("\nneural-backed decision tree (soft inference, hierarchy induced from the final layer):")
        print("\n".join(f"{c}: {line}" for c, line in zip(captions, lines)))
        print(f"explained {len(paths)} digits with {len(methods)} methods in {time.perf_counter() - start:.1f} s")
        print(f"report: {report}")
    return report


def demo_tree(model, x, names, captions, out: Path):
    """The digits' decisions, written as ``nbdt.json`` and ``nbdt.html``; returns
    (TreeDecisions, one seed-format line per digit)."""
    from .nbdt import TreeDecisions
    from .report import tree_page

    hierarchy, lines, decisions = cli._tree_decisions(model, x, names)
    tree = TreeDecisions(hierarchy, list(zip(captions, decisions)))
    tree.to_json(out / "nbdt.json")
    tree_page(
        tree,
        "torchexplain demo: neural-backed decision tree",
        lead="Induced from the final layer's class weights; soft inference.",
    ).write(out / "nbdt.html")
    return tree, lines


#: the demo's short evaluation: these methods (when chosen) and metrics
DEMO_EVAL_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "deeplift",
    "occlusion",
    "grad_cam",
)
DEMO_EVAL_METRICS = ("deletion", "insertion", "sparseness")


def demo_evaluation(model, x, explanation):
    """Score the demo's own attributions (no method runs twice)."""
    from .metrics import evaluate

    chosen = [m for m in DEMO_EVAL_METHODS if m in explanation.methods]
    if not chosen:
        return None
    return evaluate(model, x, methods=chosen, metrics=DEMO_EVAL_METRICS, steps=32, explanation=explanation)
