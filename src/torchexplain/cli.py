"""The ``torchexplain`` command: ``demo``, ``explain``, ``nbdt``, ``evaluate``, ``explain-dataset``,
``report``, ``serve``, ``tcav`` and ``influence``.

Exit status: 0 on success, 2 on usage errors, 1 on runtime failures; errors are one
line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

EXIT_RUNTIME, EXIT_USAGE = 1, 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="torchexplain", description="Explain PyTorch models' predictions.")
    p.add_argument("--version", action="version", version=f"torchexplain {__version__}")
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
    tree.add_argument(
        "--tree", metavar="JSON", help="a hierarchy JSON file (default: induced from the final linear layer)"
    )
    tree.add_argument("--hard", action="store_true", help="hard (greedy) inference instead of soft")
    tree.add_argument("--html", metavar="FILE", help="write the tree with each image's decisions to this HTML file")
    tree.add_argument("--save-tree", metavar="JSON", help="write the hierarchy used to this JSON file")
    tree.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    ev = sub.add_parser("evaluate", help="score and rank explanation methods on images with faithfulness metrics")
    _model_options(ev)
    ev.add_argument("--methods", default=",".join(_default_methods()), help="comma-separated method names, or 'all'")
    ev.add_argument(
        "--metrics",
        default=",".join(_default_metrics()),
        help="comma-separated metric names: " + ", ".join(_metric_names()),
    )
    ev.add_argument("--target", default="top1", help="top1 | class index | class name")
    ev.add_argument("--steps", type=int, default=50,
                    help="steps of the deletion and insertion curves (steps + 1 points; default 50)")
    ev.add_argument("--out", default="torchexplain-eval", help="output directory (default: torchexplain-eval)")
    _common(ev)
    _dataset_parser(sub)
    _family_parsers(sub)
    _report_parser(sub)
    _serve_parser(sub)
    return p


def _serve_parser(sub) -> None:
    sv = sub.add_parser("serve", help="a local web app to explore a model's explanations",
                        description="Serve the app on --host:--port (127.0.0.1:8765); without --model, the bundled "
                        "digits model with its sample images.")
    sv.add_argument("--model", action="extend", nargs="+", metavar="SPEC",
                    help="models to serve (several, or the flag repeated; default: digits)")
    sv.add_argument("--weights", metavar="FILE", help="state dict of the first --model")
    sv.add_argument("--labels", metavar="FILE", help="class names of the first --model, one per line")
    sv.add_argument("--runs", action="extend", nargs="+", metavar="DIR",
                    help="output folders of explain or explain-dataset to browse")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sv.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    sv.add_argument("--max-upload-mb", type=float, default=20, metavar="MB", help="upload size limit (default 20)")


def _serve(args) -> None:
    from .app import serve

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535; got {args.port}")
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be more than 0; got {args.max_upload_mb}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available")
    serve(args.model or ["digits"], weights=args.weights, labels=_labels(args.labels) if args.labels else None,
          runs=args.runs, host=args.host, port=args.port, device=args.device,
          max_upload=int(args.max_upload_mb * 1024 * 1024), notify=lambda line: print(line, flush=True))


def _report_parser(sub) -> None:
    rep = sub.add_parser("report", help="write summary.html of an explain-dataset output directory")
    rep.add_argument("dir", metavar="DIR", help="the output directory of explain-dataset")
    rep.add_argument("--metrics", help="also measure these metrics (e.g. deletion,insertion) on a sample of the images")
    rep.add_argument("--sample", type=int, default=16, help="images in the metrics' stratified sample (default 16)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    rep.add_argument("--quiet", action="store_true", help="print nothing but errors")


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
    _model_flags(p)


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="digits | torchvision:NAME | a TorchScript file | package.module:factory",
    )
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
    from .dataset.output import writable_dir

    out = writable_dir(path)
    clash = [f for f in files if (out / f).exists()]
    if clash and not overwrite:
        raise RuntimeError(f"{out / clash[0]} already exists; pass --overwrite to replace it")
    return out


def _prepare_out(path: str, methods: list[str], overwrite: bool, extra: tuple[str, ...] = ()) -> Path:
    """Check the output directory before any work: creatable, writable, and holding
    none of the files to be written unless ``--overwrite``."""
    names = ["report.html", "explanation.json", "tensors.safetensors", "tensors.pt", *extra]
    names += [f"{m}.npy" for m in methods]
    return _out_dir(path, names, overwrite)


def _progress(args) -> bool:
    """Progress bars only for a person watching: not with --quiet, and not when
    stderr is a file or a pipe (in a log they run into the tables)."""
    return not args.quiet and sys.stderr.isatty()


def _write(explanation, out: Path, title: str, captions: list[str], **page) -> Path:
    """Save the explanation's data and its report page; returns the page's path."""
    from .report import explanation_page

    explanation.save(out, overwrite=True)
    return explanation_page(explanation, captions=captions, title=title, **page).write(out / "report.html")


def _table(explanation, labels: list[str]) -> str:
    """Predictions, one line per explained row, then each method's time."""
    width = max(len(label) for label in labels)
    lines = [f"{'input':<{width}}  prediction  probability  explained"]
    for s in explanation.rows():
        lines.append(
            f"{labels[s['example']]:<{width}}  {s['prediction']:<10}  {s['probability']:>11.1%}  {s['target']}"
        )
    lines.append("")
    lines.append(f"{'method':<22}  seconds")
    lines += [f"{m:<22}  {t:7.3f}" for m, t in explanation.timings.items()]
    return "\n".join(lines)


def _demo(args) -> Path:
    from .demo import run

    return run(args)


def _labels(path: str) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise RuntimeError(f"cannot read labels file {path}: {err.strerror}") from None


def _note(message: str) -> None:
    """A warning the user must see (e.g. random weights): one line on stderr, even with --quiet."""
    print(f"torchexplain: note: {message}", file=sys.stderr)


class ModelInput(NamedTuple):
    """What the model options give: the model, its class names, the transform from a
    Pillow image to the model's input tensor, the normalisation it applies, and the
    device."""

    model: object
    names: list
    transform: object
    mean: object
    std: object
    device: str

    def batch(self, images):
        """Pillow images (or paths of image files), transformed and stacked into one
        batch on the model's device."""
        import torch

        from .loading import load_image

        pictures = [load_image(im) if isinstance(im, (str, Path)) else im for im in images]
        return torch.stack([self.transform(im) for im in pictures]).to(self.device)


def _model_input(args) -> ModelInput:
    """The model and its preprocessing, from the options of ``_model_flags``."""
    import torch

    from .loading import image_transform, load_model

    if (args.mean is None) != (args.std is None):
        raise UsageError("--mean and --std go together")
    if args.size is not None and args.size < 1:
        raise UsageError("--size must be a positive number of pixels")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    model, names, (size, mean, std, mode) = load_model(args.model, args.weights, args.device, notify=_note)
    if args.labels:
        names = _labels(args.labels)
    mean, std = (args.mean, args.std) if args.mean is not None else (mean, std)
    return ModelInput(model, names, image_transform(args.size or size, mean, std, mode), mean, std, args.device)


def _model_and_images(args):
    """The model, its class names, the normalised image batch and (mean, std), from
    the options shared by ``explain`` and ``nbdt``."""
    from .loading import load_image

    images = [load_image(p) for p in args.images]  # a missing image is reported before the model loads
    m = _model_input(args)
    return m.model, m.names, m.batch(images), (m.mean, m.std)


def _explain(args) -> Path:
    from .api import explain

    methods = _methods(args.method)
    out = _prepare_out(args.out, methods, args.overwrite)
    model, names, x, (mean, std) = _model_and_images(args)
    result = explain(
        model,
        x,
        method=methods,
        target=_target(args.target),
        class_names=names,
        mean=mean,
        std=std,
        show_progress=_progress(args),
    )
    report = _write(
        result,
        out,
        f"torchexplain: {args.model}",
        [Path(p).name for p in args.images],
        subtitle=f"{len(args.images)} image(s) explained with {len(methods)} method(s).",
    )
    if not args.quiet:
        print(_table(result, [Path(p).name for p in args.images]))
        print(f"report: {report}")
    return report


def _metrics(text: str) -> list[str]:
    names = [n for n in (t.strip() for t in text.split(",")) if n]
    unknown = [n for n in names if n not in _metric_names()]
    if unknown or not names:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(_metric_names())}"
        )
    return names


def _evaluate(args) -> Path:
    from .metrics import evaluate
    from .report import evaluation_page

    methods, metrics = _methods(args.methods), _metrics(args.metrics)
    if args.steps < 1:
        raise UsageError("--steps must be a positive number")
    files = ["evaluation.md", "evaluation.csv", "evaluation.html", "evaluation.json"]
    out = _out_dir(args.out, files, args.overwrite)
    model, names, x, _ = _model_and_images(args)
    table = evaluate(
        model,
        x,
        methods=methods,
        metrics=metrics,
        target=_target(args.target),
        steps=args.steps,
        class_names=names,
        show_progress=_progress(args),
    )
    notes = "".join(f"\nnote: {n}" for n in table.notes)
    (out / "evaluation.md").write_text(table.to_markdown() + "\n" + (notes[1:] + "\n" if notes else ""))
    (out / "evaluation.csv").write_text(table.to_csv())
    (out / "evaluation.json").write_text(json.dumps(table.to_dict(), indent=1))
    page = evaluation_page(
        table, f"torchexplain evaluation: {args.model}", f"{len(args.images)} image(s), {len(methods)} method(s)"
    ).write(out / "evaluation.html")
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
        from .nbdt import TreeDecisions
        from .report import tree_page

        tree = TreeDecisions(hierarchy, [(Path(p).name, d) for p, d in zip(args.images, decisions)], args.hard)
        tree_page(tree, f"Neural-backed decision tree: {args.model}").write(args.html)


def _report(args) -> Path:
    from .report.dataset import write_summary

    metrics = _metrics(args.metrics) if args.metrics is not None else None
    if args.sample < 1:
        raise UsageError("--sample must be a positive number of images")
    page = write_summary(args.dir, metrics, sample=args.sample, seed=args.seed)
    if not args.quiet:
        print(f"summary: {page}")
    return page


def _dataset_parser(sub) -> None:
    from .dataset.cli import add_parser

    add_parser(sub, _model_flags, _common)


def _family_parsers(sub) -> None:
    from .concept.cli import add_parser as tcav_parser
    from .explain_text import add_parser as text_parser
    from .influence.cli import add_parser as influence_parser

    tcav_parser(sub, _model_flags, _common)
    influence_parser(sub, _model_flags, _common)
    text_parser(sub, _common)


def _tcav(args):
    from .concept.cli import run

    return run(args, model_input=_model_input, out_dir=_out_dir, target=_target(args.target))


def _influence(args):
    from .influence.cli import run

    return run(args, model_input=_model_input, out_dir=_out_dir)


def _explain_text(args):
    from .explain_text import run

    return run(args, out_dir=_out_dir, usage_error=UsageError)


def _explain_dataset(args):
    from .dataset.cli import run

    labels = _labels(args.labels) if args.labels else None
    metrics = _metrics(args.metrics) if args.metrics is not None else None
    return run(args, methods=_methods(args.method), target=_target(args.target), labels=labels, metrics=metrics,
               note=_note, progress=_progress(args))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        handlers = {"demo": _demo, "explain": _explain, "nbdt": _nbdt, "evaluate": _evaluate, "report": _report,
                    "explain-dataset": _explain_dataset, "serve": _serve, "tcav": _tcav, "influence": _influence,
                    "explain-text": _explain_text}
        handlers[args.command](args)
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
