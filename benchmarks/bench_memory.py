#!/usr/bin/env python
"""Peak memory of Integrated Gradients with many steps: torchexplain (and Captum).

IntegratedGradients with n_steps=300 on a random-init resnet18, 4x3x224x224 inputs,
CPU: 1200 rows of forward + backward. Each library runs in a child process of its own,
and the child's peak resident set size (ru_maxrss, from os.wait4) is reported in GB
(10^9 bytes). It includes the interpreter, torch and the model, measured alone as
"baseline". torchexplain sizes its chunks from ``torchexplain.config.memory_budget``;
Captum's default ``internal_batch_size=None`` evaluates all 1200 rows at once, which
can take well over 10 GB (tens of GB here), so it only runs with ``--with-captum``.

    python benchmarks/bench_memory.py                  # baseline and ours
    python benchmarks/bench_memory.py --with-captum    # and Captum (needs a big machine)

The last line is ``peak RSS ours: X GB (limit 3 GB)``; ``--check`` also exits 1 when
ours is over the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

N_STEPS = 300
BATCH = 4
IMAGE = (3, 224, 224)
SEED = 0
LIMIT_GB = 3.0


def child(library: str, captum_ibs: int | None, threads: int | None) -> None:
    """Run one library's attribution in this process and print a JSON summary."""
    import torch
    import torchvision

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    gen = torch.Generator().manual_seed(SEED)
    inputs = torch.randn((BATCH,) + IMAGE, generator=gen)
    target = torch.randint(1000, (BATCH,), generator=gen)
    start = time.perf_counter()
    if library == "ours":
        from torchexplain.attr import IntegratedGradients

        attributions = IntegratedGradients(model).attribute(inputs, target=target, n_steps=N_STEPS)
    elif library == "captum":
        from captum.attr import IntegratedGradients

        kwargs = {} if captum_ibs is None else {"internal_batch_size": captum_ibs}
        attributions = IntegratedGradients(model).attribute(inputs, target=target, n_steps=N_STEPS, **kwargs)
    elif library == "baseline":
        with torch.no_grad():
            attributions = model(inputs)
    else:
        raise SystemExit(f"unknown library {library!r}")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "finite": bool(torch.isfinite(attributions).all())}), flush=True)


def run_child(library: str, args: argparse.Namespace) -> dict:
    """Start a child for ``library``; return its summary with ``peak_gb`` (or ``error``)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", library]
    if args.captum_internal_batch_size is not None:
        command += ["--captum-internal-batch-size", str(args.captum_internal_batch_size)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the max over all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    # Linux reports ru_maxrss in KiB, macOS in bytes
    peak_bytes = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    result = {"peak_gb": peak_bytes / 1e9, "wall": wall}
    lines = [line for line in output.splitlines() if line.strip()]
    if proc.returncode != 0:
        reason = lines[-1] if lines else ""
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode} (out of memory?) {reason}".strip()
        result["error"] = f"exit {proc.returncode}: {reason}"[:200]
    else:
        try:
            result.update(json.loads(lines[-1]))
        except (IndexError, ValueError):
            result["error"] = "no summary from the child: " + (lines[-1] if lines else "(no output)")[:160]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--with-captum", action="store_true", help="also run Captum (default internal_batch_size: 1200 rows at once)"
    )
    p.add_argument("--captum-internal-batch-size", type=int, default=None, help="internal_batch_size for Captum")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the children (default: torch's)")
    p.add_argument("--check", action="store_true", help=f"exit 1 when ours peaks over {LIMIT_GB:g} GB")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.captum_internal_batch_size, args.threads)
        return 0

    import torch

    print(
        f"torch {torch.__version__}; IntegratedGradients n_steps={N_STEPS}, resnet18 (random init, eval, CPU), "
        f"inputs {BATCH}x{'x'.join(map(str, IMAGE))} = {N_STEPS * BATCH} rows; one child process per library"
    )
    libraries = ["baseline", "ours"] + (["captum"] if args.with_captum else [])
    results = {}
    for library in libraries:
        r = results[library] = run_child(library, args)
        what = {"baseline": "imports, model, one forward", "ours": "torchexplain", "captum": "captum"}[library]
        if library == "captum":
            ibs = args.captum_internal_batch_size
            what += f" (internal_batch_size={'None, all rows at once' if ibs is None else ibs})"
        timing = f", timed part {r['seconds']:.1f} s" if "seconds" in r else ""
        status = f"  FAILED: {r['error']}" if "error" in r else ""
        print(
            f"{library:8s} peak RSS {r['peak_gb']:6.2f} GB, wall {r['wall']:6.1f} s{timing}  [{what}]{status}",
            flush=True,
        )
    ours = results["ours"]
    print(f"peak RSS ours: {ours['peak_gb']:.2f} GB (limit {LIMIT_GB:g} GB)")
    if "error" in ours:
        return 2
    return 1 if args.check and ours["peak_gb"] > LIMIT_GB else 0


if __name__ == "__main__":
    sys.exit(main())
