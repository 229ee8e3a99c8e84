"""``torchexplain influence IMAGE... --model SPEC --train DIR``: the training images
that most helped (proponents) and most hurt (opponents) the model's prediction for
each image, by TracIn over the given checkpoints, printed and written as
influence.json and report.html. ``torchexplain.cli`` adds the subcommand."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

METHODS = ("tracin", "fast", "randproj")


def add_parser(sub, model_flags, common) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "influence",
        help="the training images that most helped and most hurt each prediction (TracIn)",
        description="For each IMAGE, the --k training images of --train (a folder with one subfolder per class, "
        "named as the model's classes) with the highest and the lowest TracIn influence on the loss of the model's "
        "prediction, summed over --checkpoint files (state dicts, optionally with a 'learning_rate' entry; default: "
        "the model's weights as the only checkpoint). Writes influence.json and report.html to --out.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="the test images")
    model_flags(p)
    p.add_argument("--train", required=True, metavar="DIR", help="training images, one subfolder per class")
    p.add_argument("--checkpoint", action="append", metavar="FILE",
                   help="a checkpoint saved during training (repeat; default: the model's weights)")
    p.add_argument("--method", default="tracin", choices=METHODS,
                   help="tracin: gradients of every parameter (or of --layer); fast: the last linear layer in closed "
                   "form; randproj: fast, randomly projected (default tracin)")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="tracin: only these layers' parameters; fast/randproj: the final linear layer "
                   "(default: the model's last nn.Linear)")
    p.add_argument("--k", type=int, default=3, help="proponents and opponents shown per image (default 3)")
    p.add_argument("--projection-dim", type=int, metavar="D", help="randproj: projected size per checkpoint")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="training images per batch (default 32)")
    p.add_argument("--out", default="influence-report", metavar="DIR",
                   help="output directory (default influence-report)")
    common(p)
    return p


def _training_set(folder: str, model_input):
    """(images tensor, labels tensor, relative paths) of a class-per-subfolder tree."""
    import torch

    from ..dataset.sources import FolderSource

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--train folder {folder} does not exist")
    names = model_input.names
    items = list(FolderSource(root, class_names=names).items())
    unlabelled = [item.id for item in items if item.label is None]
    if unlabelled:
        raise ValueError(f"--train: {unlabelled[0]} is not in a subfolder named as one of the model's classes "
                         f"(e.g. {', '.join(map(str, list(names)[:3]))})")
    x = model_input.batch([item.path for item in items])
    return x, torch.tensor([item.label for item in items], device=x.device), [item.id for item in items]


def _last_linear(model) -> str:
    import torch.nn as nn

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("--layer: the model has no nn.Linear; name its final fully-connected layer")
    return names[-1]


def _method(args, model, dataset, checkpoints):
    import torch.nn as nn

    from . import TracInCP, TracInCPFast, TracInCPFastRandProj

    loss = nn.CrossEntropyLoss(reduction="sum")
    common = dict(checkpoints=checkpoints, loss_fn=loss, batch_size=args.batch_size)
    if args.method == "tracin":
        return TracInCP(model, dataset, layers=args.layer, **common)
    if args.layer and len(args.layer) != 1:
        raise ValueError(f"--layer: {args.method} takes one final linear layer; got {len(args.layer)}")
    layer = args.layer[0] if args.layer else _last_linear(model)
    if args.method == "fast":
        return TracInCPFast(model, layer, dataset, **common)
    return TracInCPFastRandProj(model, layer, dataset, projection_dim=args.projection_dim, **common)


def _pictures(x, mean, std) -> list:
    from ..viz.arrays import to_display_image

    return [to_display_image(image.cpu(), "image", mean, std) for image in x]


def run(args, *, model_input, out_dir) -> Path:
    """Run ``influence`` for the parsed ``args`` (see :func:`torchexplain.concept.cli.run`)."""
    import torch
    from torch.utils.data import TensorDataset

    from ..loading import load_image
    from ..report import Page
    from ..report.families import InfluenceSection

    if args.k < 1:
        raise ValueError(f"--k must be a positive number of training images; got {args.k}")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be a positive number of images")
    out = out_dir(args.out, ["influence.json", "report.html"], args.overwrite)
    images = [load_image(p) for p in args.images]
    m = model_input(args)
    x = m.batch(images)
    train_x, train_y, train_ids = _training_set(args.train, m)
    with torch.no_grad():
        predicted = m.model(x).argmax(1)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = args.checkpoint
        if not checkpoints:  # the model as it is: TracIn at the last checkpoint only
            checkpoints = [str(Path(tmp) / "model.pt")]
            torch.save(m.model.state_dict(), checkpoints[0])
        method = _method(args, m.model, TensorDataset(train_x, train_y), checkpoints)
        k = min(args.k, len(train_ids))
        pro = method.influence((x, predicted), k=k, proponents=True)
        opp = method.influence((x, predicted), k=k, proponents=False)
    label = (lambda i: str(m.names[i])) if m.names else str
    rows = [{"image": str(Path(p).resolve()), "prediction": label(int(c)),
             "proponents": [{"id": train_ids[i], "score": float(s)} for i, s in zip(pi.tolist(), ps)],
             "opponents": [{"id": train_ids[i], "score": float(s)} for i, s in zip(oi.tolist(), os_)]}
            for p, c, pi, ps, oi, os_ in zip(args.images, predicted, pro[0], pro[1], opp[0], opp[1])]
    (out / "influence.json").write_text(json.dumps({
        "model": args.model, "method": args.method, "train": str(Path(args.train).resolve()),
        "checkpoints": [str(Path(c).resolve()) for c in args.checkpoint or []], "rows": rows}, indent=1))
    tests, train = _pictures(x, m.mean, m.std), _pictures(train_x, m.mean, m.std)

    def chosen(indices, scores):
        return [[(train[i], train_ids[i], float(s)) for i, s in zip(row.tolist(), vals)]
                for row, vals in zip(indices, scores)]

    captions = [f"{Path(p).name}: {r['prediction']}" for p, r in zip(args.images, rows)]
    section = InfluenceSection(list(zip(tests, captions)), chosen(*pro), chosen(*opp))
    report = Page(f"Influence: {args.model}", f"{len(images)} image(s) against {len(train_ids)} training images, "
                  f"{args.method}").add(section).write(out / "report.html")
    if not args.quiet:
        for r in rows:
            print(f"{Path(r['image']).name} ({r['prediction']}): proponents "
                  + ", ".join(f"{e['id']} {e['score']:+.3g}" for e in r["proponents"])
                  + "; opponents " + ", ".join(f"{e['id']} {e['score']:+.3g}" for e in r["opponents"]))
        print(f"report: {report}")
    return report
