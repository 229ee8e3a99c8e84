"""``torchexplain tcav IMAGE... --model SPEC --layer NAME --concept DIR --random DIR``:
TCAV scores of folders of concept images against folders of random images, with the
paper's t-test, printed and written as tcav.json and report.html (a bar chart per
layer). ``torchexplain.cli`` adds the subcommand to its parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub, model_flags, common) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tcav",
        help="how much a prediction depends on human concepts (TCAV), with a significance test",
        description="Score how sensitive the model's prediction for IMAGE... is to each concept (a folder of example "
        "images) at each --layer, against random concepts (folders of unrelated images): TCAV (Kim et al. 2018) "
        "with its two-sided t-test. Writes tcav.json and report.html to --out.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="the images whose prediction is explained")
    model_flags(p)
    p.add_argument("--layer", action="append", required=True, metavar="NAME",
                   help="a layer's module name, e.g. layer3 (repeat, or comma-separated)")
    p.add_argument("--concept", action="append", required=True, metavar="DIR",
                   help="a folder of a concept's images; the concept is named after the folder (repeat)")
    p.add_argument("--random", action="append", required=True, metavar="DIR",
                   help="a folder of random images; at least 3 (repeat): the t-test needs repeated runs")
    p.add_argument("--target", default="top1", help="top1 (each image's prediction) | class index | class name")
    p.add_argument("--classifier", default="default", choices=["default", "fastcav"],
                   help="how CAVs are found: default (a linear classifier) or fastcav (the mean difference)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the t-test (default 0.05)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="concept images per batch (default 32)")
    p.add_argument("--cache", metavar="DIR",
                   help="where activations and CAVs are kept and reused (default: OUT/cav)")
    p.add_argument("--out", default="tcav-report", metavar="DIR", help="output directory (default tcav-report)")
    common(p)
    return p


def _folder_batches(folder: str, model_input, batch_size: int):
    """A concept's images as batches of model input, read when iterated."""
    from ..dataset.sources import FolderSource

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"concept folder {folder} does not exist")
    files = FolderSource(path).files

    class Batches:
        def __iter__(self):
            for a in range(0, len(files), batch_size):
                yield model_input.batch(files[a:a + batch_size])

    return Batches(), len(files)


def _concepts(folders: list[str], first_id: int, model_input, batch_size: int, what: str):
    from . import Concept

    concepts, counts = [], []
    for offset, folder in enumerate(folders):
        batches, count = _folder_batches(folder, model_input, batch_size)
        name = Path(folder).resolve().name
        concepts.append(Concept(first_id + offset, f"{what}:{name}" if what == "random" else name, batches))
        counts.append(count)
    return concepts, counts


def run(args, *, model_input, out_dir, target) -> Path:
    """Run ``tcav`` for the parsed ``args``: ``model_input(args)`` gives the model and
    its preprocessing, ``out_dir(path, files, overwrite)`` the checked output
    directory, ``target`` the parsed --target."""
    import torch

    from ..loading import load_image
    from ..report import Page
    from ..report.families import TCAVSection
    from . import TCAV

    layers = [name for value in args.layer for name in (n.strip() for n in value.split(",")) if name]
    if len(args.random) < 3:
        raise ValueError(f"--random: the t-test needs at least 3 folders of random images; got {len(args.random)}")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be a positive number of images")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1); got {args.alpha}")
    out = out_dir(args.out, ["tcav.json", "report.html"], args.overwrite)
    images = [load_image(p) for p in args.images]
    m = model_input(args)
    x = m.batch(images)
    concepts, counts = _concepts(args.concept, 0, m, args.batch_size, "concept")
    randoms, random_counts = _concepts(args.random, len(concepts), m, args.batch_size, "random")
    with torch.no_grad():
        predicted = m.model(x).argmax(1)
    goal = predicted.tolist() if target == "top1" else _class_index(target, m.names)
    tcav = TCAV(m.model, layers, classifier="fastcav" if args.classifier == "fastcav" else None,
                save_path=str(Path(args.cache) if args.cache else out / "cav"))
    result = tcav.significance(x, concepts, randoms, target=goal, alpha=args.alpha)
    scores, table = _scores(result, concepts, counts, args.concept, layers)
    (out / "tcav.json").write_text(json.dumps({
        "model": args.model, "images": [str(Path(p).resolve()) for p in args.images], "target": goal,
        "classifier": args.classifier, "alpha": args.alpha, "random": [str(Path(d).resolve()) for d in args.random],
        "random_images": random_counts, "scores": table}, indent=1))
    page = Page(f"TCAV: {args.model}", f"{len(images)} image(s); {len(concepts)} concept(s) against "
                f"{len(randoms)} random folders at {', '.join(layers)}")
    random_means = {row["layer"]: row["random_mean"] for row in table}
    report = page.add(TCAVSection(scores, random_means)).write(out / "report.html")
    if not args.quiet:
        print(_text(scores))
        print(f"report: {report}")
    return report


def _scores(result: dict, concepts, counts, folders, layers):
    """(TCAVScore rows for the page, plain rows for tcav.json) from ``TCAV.significance``."""
    from ..report.families import TCAVScore

    scores, table = [], []
    for c, count, folder in zip(concepts, counts, folders):
        for layer in layers:
            r = result[str(c.id)][layer]
            spread = float(r["concept_scores"].float().std()) if r["concept_scores"].numel() > 1 else 0.0
            s = TCAVScore(layer, c.name, float(r["concept_mean"]), spread, float(r["p_value"]), r["significant"])
            scores.append(s)
            table.append({"concept": c.name, "folder": str(Path(folder).resolve()), "images": count,
                          "layer": layer, "tcav_score": s.score, "std": spread, "p_value": s.p_value,
                          "significant": s.significant, "random_mean": float(r["random_mean"]),
                          "concept_scores": r["concept_scores"].tolist(), "random_scores": r["random_scores"].tolist()})
    return scores, table


def _text(scores) -> str:
    width = max(len("concept"), *(len(s.concept) for s in scores))
    lines = [f"{'concept':<{width}}  {'layer':<12} {'TCAV':>6} {'p':>9}  significant"]
    lines += [f"{s.concept:<{width}}  {s.layer:<12} {s.score:6.3f} {s.p_value:9.3g}  {'yes' if s.significant else 'no'}"
              for s in scores]
    return "\n".join(lines)


def _class_index(target, names) -> int:
    if isinstance(target, int):
        return target
    if names and target in names:
        return list(names).index(target)
    raise ValueError(f"--target: {target!r} is not top1, a class index or one of the model's class names")
