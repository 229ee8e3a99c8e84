"""The ``torchexplain`` command: ``demo``, ``explain``, ``nbdt`` and ``evaluate``.

Exit status: 0 on success, 2 on usage errors, 1 on runtime failures; errors are one
line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_RUNTIME, EXIT_USAGE = 1, 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchexplain", description="Explain PyTorch models' predictions.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain shipped digits with the bundled model and write a report")
    demo.add_argument("--out", default="torchexplain-demo", help="output directory (default: torchexplain-demo)")
    demo.add_argument("--method", default="all", help="comma-separated method names, or 'all' (default)")
    _common(demo)
    ex = sub.add_parser("explain", help="explain images with a model")
    _model_options(ex)
    ex.add_argument("--method", default="integrated_gradients", help="comma-separated method names, or 'all'")
    ex.add_argument("--target", default="top1", help="top1 | topk:K | class index | class name")
    ex.add_argument("--out", default="torchexplain-out", help="output directory (default: torchexplain-out)")
    _common(ex)
    tree = sub.add_parser("nbdt", help="classify images with a neural-backed decision tree and print its decisions")
    _model_options(tree)
    tree.add_argument("--tree", metavar="JSON", help="a hierarchy JSON file (default: induced from the final linear layer)")
    tree.add_argument("--hard", action="store_true", help="hard (greedy) inference instead of soft")
    tree.add_argument("--html", metavar="FILE", help="write the tree with each image's decisions to this HTML file")
    tree.add_argument("--save-tree", metavar="JSON", help="write the hierarchy used to this JSON file")
    tree.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    ev = sub.add_parser("evaluate", help="score and rank explanation methods on images with faithfulness metrics")
    _model_options(ev)
    ev.add_argument("--methods", default=",".join(_default_methods()), help="comma-separated method names, or 'all'")
    ev.add_argument("--metrics", default=",".join(_default_metrics()),
                    help="comma-separated metric names: " + ", ".join(_metric_names()))
    ev.add_argument("--target", default="top1", help="top1 | class index | class name")
    ev.add_argument("--steps", type=int, default=50, help="points of the deletion and insertion curves (default 50)")
    ev.add_argument("--out", default="torchexplain-eval", help="output directory (default: torchexplain-eval)")
    _common(ev)
    return p


def _default_methods() -> tuple[str, ...]:
    from .metrics import DEFAULT_METHODS

    return DEFAULT_METHODS


def _default_metrics() -> tuple[str, ...]:
    from .metrics import DEFAULT_METRICS

    return DEFAULT_METRICS


def _metric_names() -> list[str]:
    from .metrics import METRICS

    return list(METRICS)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="digits | torchvision:NAME | a TorchScript file | package.module:factory")
    p.add_argument("--weights", help="a state-dict file, or a torchvision weights name (downloads, if online)")
    p.add_argument("--labels", help="file with one class name per line")
    p.add_argument("--size", type=int, help="resize images to SIZE x SIZE (default: the model's)")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel normalisation mean")
    p.add_argument("--std", type=float, nargs="+", help="per-channel normalisation std")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--overwrite", action="store_true", help="replace files already in the output directory")


def _methods(text: str) -> list[str]:
    from .methods import available, resolve

    if text.strip().lower() == "all":
        return available()
    names = [n for n in (t.strip() for t in text.split(",")) if n]
    try:
        return [resolve(n).name for n in names]
    except ValueError as err:
        raise UsageError(str(err)) from None


def _target(text: str):
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _out_dir(path: str, files: list[str], overwrite: bool) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RuntimeError(f"cannot create output directory {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise RuntimeError(f"output directory {out} is not writable")
    clash = [f for f in files if (out / f).exists()]
    if clash and not overwrite:
        raise RuntimeError(f"{out / clash[0]} already exists; pass --overwrite to replace it")
    return out


def _prepare_out(path: str, methods: list[str], overwrite: bool) -> Path:
    """Check the output directory before any work: creatable, writable, and holding
    none of the files to be written unless ``--overwrite``."""
    names = ["report.html", "explanation.json", "all_methods.png", "inputs.png", "nbdt.html"]
    names += [f"{m}{ext}" for m in methods for ext in (".png", ".npy")]
    return _out_dir(path, names, overwrite)


def _write(explanation, out: Path, title: str) -> Path:
    explanation.save(out, overwrite=True)
    report = out / "report.html"
    report.write_text(explanation.to_html(title))
    return report


def _table(explanation, labels: list[str]) -> str:
    """Predictions, one line per explained row, then each method's time."""
    width = max(len(label) for label in labels)
    lines = [f"{'input':<{width}}  prediction  probability  explained"]
    for s in explanation.rows():
        lines.append(f"{labels[s['example']]:<{width}}  {s['prediction']:<10}  {s['probability']:>11.1%}  {s['target']}")
    lines.append("")
    lines.append(f"{'method':<22}  seconds")
    lines += [f"{m:<22}  {t:7.3f}" for m, t in explanation.timings.items()]
    return "\n".join(lines)


def _demo(args) -> Path:
    import torch

    from . import models
    from .api import explain

    methods = _methods(args.method)
    out = _prepare_out(args.out, methods, args.overwrite)
    model, preprocess, names = models.load("digits")
    paths = models.sample_images()
    x = torch.stack([preprocess(p) for p in paths])
    start = time.perf_counter()
    result = explain(model, x, method=methods, class_names=names, mean=models.MEAN, std=models.STD,
                     show_progress=not args.quiet)
    report = _write(result, out, "torchexplain demo: digits")
    hierarchy, lines, decisions = _tree_decisions(model, x, names)
    _add_tree(report, out / "nbdt.html", hierarchy, [(p.stem, d) for p, d in zip(paths, decisions)])
    table = _demo_evaluation(model, x, result)
    if table is not None:
        _add_section(report, "<h2>Which explanation to trust?</h2><p>Faithfulness of each method on these digits "
                     f"(<code>torchexplain evaluate</code>):</p>{table.to_html()}")
    if not args.quiet:
        print(_table(result, [p.stem for p in paths]))
        if table is not None:
            print("\nfaithfulness (mean ± standard error over the digits; #rank, 1 = best):")
            print(table.to_markdown())
        print("\nneural-backed decision tree (soft inference, hierarchy induced from the final layer):")
        print("\n".join(f"{p.stem}: {line}" for p, line in zip(paths, lines)))
        print(f"explained {len(paths)} digits with {len(methods)} methods in {time.perf_counter() - start:.1f} s")
        print(f"report: {report}")
    return report


def _add_tree(report: Path, page: Path, hierarchy, rows) -> None:
    """Write the tree page and link it, with each image's decisions, from the report."""
    import html

    from .nbdt.render import trees_html

    page.write_text(trees_html(hierarchy, rows, "torchexplain demo: neural-backed decision tree"))
    items = "".join(
        f"<li>{html.escape(name)}: " + " &rarr; ".join(f"{html.escape(d['name'])} ({100 * d['prob']:.1f}%)" for d in steps)
        + "</li>" for name, steps in rows
    )
    section = (f'<h2>Neural-backed decision tree</h2><p><a href="{page.name}">The tree</a>, induced from the final '
               f"layer; each digit's decisions (soft inference):</p><ul>{items}</ul>")
    _add_section(report, section)


def _add_section(report: Path, section: str) -> None:
    text = report.read_text()
    report.write_text(text.replace("</body>", section + "</body>") if "</body>" in text else text + section)


#: the demo's short evaluation: these methods (when chosen) and metrics
DEMO_EVAL_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop", "deeplift", "occlusion",
                     "grad_cam")
DEMO_EVAL_METRICS = ("deletion", "insertion", "sparseness")


def _demo_evaluation(model, x, explanation):
    """Score the demo's own attributions (no method runs twice)."""
    from .metrics import evaluate

    chosen = [m for m in DEMO_EVAL_METHODS if m in explanation.methods]
    if not chosen:
        return None
    return evaluate(model, x, methods=chosen, metrics=DEMO_EVAL_METRICS, steps=32, explanation=explanation)


def _labels(path: str) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise RuntimeError(f"cannot read labels file {path}: {err.strerror}") from None


def _note(message: str) -> None:
    """A warning the user must see (e.g. random weights): one line on stderr, even with --quiet."""
    print(f"torchexplain: note: {message}", file=sys.stderr)


def _model_and_images(args):
    """The model, its class names, the normalised image batch and (mean, std), from
    the options shared by ``explain`` and ``nbdt``."""
    import torch

    from .loading import image_transform, load_image, load_model

    if (args.mean is None) != (args.std is None):
        raise UsageError("--mean and --std go together")
    if args.size is not None and args.size < 1:
        raise UsageError("--size must be a positive number of pixels")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    images = [load_image(p) for p in args.images]
    model, names, (size, mean, std, mode) = load_model(args.model, args.weights, args.device, notify=_note)
    if args.labels:
        names = _labels(args.labels)
    mean, std = (args.mean, args.std) if args.mean is not None else (mean, std)
    transform = image_transform(args.size or size, mean, std, mode)
    x = torch.stack([transform(im) for im in images]).to(args.device)
    return model, names, x, (mean, std)


def _explain(args) -> Path:
    from .api import explain

    methods = _methods(args.method)
    out = _prepare_out(args.out, methods, args.overwrite)
    model, names, x, (mean, std) = _model_and_images(args)
    result = explain(model, x, method=methods, target=_target(args.target), class_names=names,
                     mean=mean, std=std, show_progress=not args.quiet)
    report = _write(result, out, f"torchexplain: {args.model}")
    if not args.quiet:
        print(_table(result, [Path(p).name for p in args.images]))
        print(f"report: {report}")
    return report


def _metrics(text: str) -> list[str]:
    names = [n for n in (t.strip() for t in text.split(",")) if n]
    unknown = [n for n in names if n not in _metric_names()]
    if unknown or not names:
        raise UsageError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(_metric_names())}")
    return names


def _evaluate(args) -> Path:
    from .metrics import evaluate

    methods, metrics = _methods(args.methods), _metrics(args.metrics)
    if args.steps < 1:
        raise UsageError("--steps must be a positive number")
    out = _out_dir(args.out, ["evaluation.md", "evaluation.csv", "evaluation.html"], args.overwrite)
    model, names, x, _ = _model_and_images(args)
    table = evaluate(model, x, methods=methods, metrics=metrics, target=_target(args.target), steps=args.steps,
                     class_names=names, show_progress=not args.quiet)
    notes = "".join(f"\nnote: {n}" for n in table.notes)
    (out / "evaluation.md").write_text(table.to_markdown() + "\n" + (notes[1:] + "\n" if notes else ""))
    (out / "evaluation.csv").write_text(table.to_csv())
    page = out / "evaluation.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>torchexplain evaluation</title></head>"
                    f"<body style=\"font-family: sans-serif\"><h1>Evaluation: {args.model}</h1>{table.to_html()}</body></html>\n")
    if not args.quiet:
        print(table.to_markdown() + notes)
        print(f"report: {page}")
    return page


def _tree_decisions(model, x, names, tree=None, hard: bool = False):
    """(hierarchy, one seed-format line per image, per-image decisions)."""
    import torch

    from .nbdt import HardNBDT, Hierarchy, SoftNBDT, decision_line, induce_hierarchy

    hierarchy = Hierarchy.from_json(tree, names) if tree else induce_hierarchy(model, names)
    with torch.no_grad():
        probs, decisions = (HardNBDT if hard else SoftNBDT)(model, hierarchy).forward_with_decisions(x)
    lines = [decision_line(hierarchy.class_names, int(p.argmax()), d) for p, d in zip(probs, decisions)]
    return hierarchy, lines, decisions


def _nbdt(args) -> None:
    for path in (args.html, args.save_tree):
        if path and Path(path).exists() and not args.overwrite:
            raise RuntimeError(f"{path} already exists; pass --overwrite to replace it")
    model, names, x, _ = _model_and_images(args)
    if names is None:
        names = [str(i) for i in range(int(model(x[:1]).shape[1]))]
    hierarchy, lines, decisions = _tree_decisions(model, x, names, args.tree, args.hard)
    for line in lines:
        print(line)
    if args.save_tree:
        hierarchy.to_json(args.save_tree)
    if args.html:
        from .nbdt.render import trees_html

        Path(args.html).write_text(trees_html(hierarchy, [(Path(p).name, d) for p, d in zip(args.images, decisions)]))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"demo": _demo, "explain": _explain, "nbdt": _nbdt, "evaluate": _evaluate}[args.command](args)
    except UsageError as err:
        print(f"torchexplain: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, ValueError, TypeError, OSError, KeyError, IndexError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"torchexplain: error: {message}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
