"""``torchexplain explain-text --model SPEC --prompt TEXT --method NAMES``: which prompt
tokens made a language model produce a text (Captum's LLM attribution), by one or more
methods, printed as a table and written as text.json and report.html.

Without ``--target`` the model generates the target first (greedy,
``--max-new-tokens``), once, and every method explains that same text.
``torchexplain.cli`` adds the subcommand to its parser.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

__all__ = ["ALL", "METHODS", "add_parser", "build_method", "method_names", "run"]


class TextMethod(NamedTuple):
    """A method of ``--method``: the attribution class (in :mod:`torchexplain.attr`),
    whether it is a layer gradient method on the input embeddings
    (LLMGradientAttribution) or a perturbation method (LLMAttribution), and whether
    it samples (``--n-samples``, seeded by ``--seed``)."""

    cls: str
    gradient: bool
    sampled: bool


METHODS = {
    "feature-ablation": TextMethod("FeatureAblation", False, False),
    "shapley-sampling": TextMethod("ShapleyValueSampling", False, True),
    "shapley": TextMethod("ShapleyValues", False, False),
    "kernel-shap": TextMethod("KernelShap", False, True),
    "lime": TextMethod("Lime", False, True),
    "integrated-gradients": TextMethod("LayerIntegratedGradients", True, False),
    "gradient-x-activation": TextMethod("LayerGradientXActivation", True, False),
    "lrp": TextMethod("LayerLRP", True, False),
}

#: what ``--method all`` runs
ALL = tuple(METHODS)

FILES = ["text.json", "report.html"]


def add_parser(sub, common) -> argparse.ArgumentParser:
    """The ``explain-text`` subcommand; ``common`` adds --quiet and --overwrite."""
    p = sub.add_parser(
        "explain-text",
        help="which prompt tokens made a language model produce a text (LLM attribution)",
        description="Attribute a target text (given with --target, or generated greedily from the prompt) to the "
        "tokens of --prompt with each --method, as Captum's LLMAttribution (perturbation methods) and "
        "LLMGradientAttribution (gradient methods on the input embeddings) do. Prints each method's top tokens and "
        "writes text.json and report.html to --out.",
    )
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="gpt2-tiny | llama-tiny (random weights, offline) | a local Hugging Face model directory")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt whose tokens are explained")
    p.add_argument("--target", metavar="TEXT", help="the text to explain (default: what the model generates)")
    p.add_argument("--method", action="append", required=True, metavar="NAMES",
                   help="comma-separated (or repeated) method names: " + ", ".join(METHODS) + "; or all")
    p.add_argument("--max-new-tokens", type=int, default=10, metavar="N",
                   help="tokens to generate without --target (default 10)")
    p.add_argument("--n-samples", type=int, metavar="N",
                   help="samples of shapley-sampling, kernel-shap and lime (default: each method's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling methods (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default="torchexplain-text", metavar="DIR",
                   help="output directory (default torchexplain-text)")
    common(p)
    return p


def method_names(values: list[str]) -> list[str]:
    """The ``--method`` values (comma-separated, repeated, ``all``; ``_`` for ``-``)
    as known names, in order, once each; a ValueError naming the flag otherwise."""
    names = [n.strip().lower().replace("_", "-") for value in values for n in value.split(",") if n.strip()]
    if "all" in names:
        return list(dict.fromkeys([*ALL, *(n for n in names if n in METHODS)]))
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"--method: unknown method {unknown[0]!r}" if unknown else "--method: no method given")
    return list(dict.fromkeys(names))


def build_method(name: str, model, tokenizer):
    """The LLM attribution object of method ``name`` on ``model``."""
    from . import attr
    from .attr.llm import LLMAttribution, LLMGradientAttribution

    spec = METHODS[name]
    cls = getattr(attr, spec.cls)
    if spec.gradient:
        return LLMGradientAttribution(cls(model, model.get_input_embeddings()), tokenizer)
    return LLMAttribution(cls(model), tokenizer)


def method_kwargs(name: str, n_samples: int | None, seed: int) -> dict:
    """The keyword arguments ``explain-text`` gives method ``name``'s ``attribute``."""
    if not METHODS[name].sampled:
        return {}
    return {"seed": seed, **({"n_samples": n_samples} if n_samples is not None else {})}


def prompt_input(prompt: str, tokenizer):
    """The prompt as a TextTokenInput; a start token the tokenizer adds is not a feature."""
    from .attr import TextTokenInput

    first = TextTokenInput(prompt, tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = first.to_model_input()[0].tolist()
    if bos is not None and ids and ids[0] == bos and len(ids) > 1:
        return TextTokenInput(prompt, tokenizer, skip_tokens=[bos])
    return first


def generate(model, tokenizer, prompt_ids, max_new_tokens: int):
    """Greedy continuation of ``prompt_ids`` ``(1, L)``: the new token ids ``(T,)``."""
    from .attr.llm import DEFAULT_GEN_ARGS
    from .attr.llm_model import LanguageModel

    return LanguageModel(model, tokenizer).generate(prompt_ids, {**DEFAULT_GEN_ARGS, "max_new_tokens": max_new_tokens})


def _check(args) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be a positive number of tokens; got {args.max_new_tokens}")
    if args.n_samples is not None and args.n_samples < 1:
        raise ValueError(f"--n-samples must be a positive number; got {args.n_samples}")
    if not args.prompt:
        raise ValueError("--prompt is empty: give the text whose tokens are explained")
    if args.target is not None and not args.target:
        raise ValueError("--target is empty: give a text, or leave --target out to generate one")


def _load(spec: str, device: str):
    import torch

    from .models.text import load_text_model

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    try:
        return load_text_model(spec, device)
    except ValueError as err:
        raise ValueError(f"--{err}" if str(err).startswith("model:") else f"--model {spec}: {err}") from None
    except OSError as err:
        raise OSError(f"--model {spec}: cannot load the model: {str(err).splitlines()[0]}") from None


def run(args, *, out_dir, usage_error=ValueError) -> Path:
    """Run ``explain-text`` for the parsed ``args``; ``out_dir(path, files, overwrite)``
    gives the checked output directory; a bad ``--method`` raises ``usage_error``."""
    from .report.text import text_page
    from .viz.llm import TokenAttribution

    try:
        names = method_names(args.method)
    except ValueError as err:
        raise usage_error(f"{err}; choose from {', '.join(METHODS)} (comma-separated) or all") from None
    _check(args)
    out = out_dir(args.out, FILES, args.overwrite)
    model, tokenizer = _load(args.model, args.device)
    inp = prompt_input(args.prompt, tokenizer)
    if args.target is None:
        target = generate(model, tokenizer, inp.to_model_input().to(args.device), args.max_new_tokens)
        if target.numel() == 0:
            raise RuntimeError("the model generated no tokens; give the text to explain with --target")
        target_text = tokenizer.decode(target)
    else:
        target, target_text = args.target, args.target
    results, seconds = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            result = build_method(name, model, tokenizer).attribute(
                inp, target=target, **method_kwargs(name, args.n_samples, args.seed))
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RuntimeError(f"--method {name}: {message}") from err
        seconds[name] = time.perf_counter() - start
        results[name] = TokenAttribution.of(result)
    (out / "text.json").write_text(json.dumps({
        "model": args.model, "prompt": args.prompt, "target": target_text, "generated": args.target is None,
        "methods": {n: {**results[n].to_dict(), "seconds": seconds[n]} for n in names}}, indent=1))
    subtitle = f"{len(inp.values)} prompt tokens; {'generated' if args.target is None else 'given'} target; " \
               f"{len(names)} method(s)"
    report = text_page(results, title=f"explain-text: {args.model}", subtitle=subtitle, prompt=args.prompt,
                       target=target_text, seconds=seconds).write(out / "report.html")
    if not args.quiet:
        print(summary(results, seconds, target_text, args.target is None))
        print(f"report: {report}")
    return report


def summary(results: dict, seconds: dict, target: str, generated: bool, top: int = 5) -> str:
    """The printed table: per method its time and its ``top`` prompt tokens."""
    from .viz.llm import visible_token

    width = max(len("method"), *(len(n) for n in results))
    lines = [f"target ({'generated' if generated else 'given'}): {target!r}", "",
             f"{'method':<{width}}  {'seconds':>7}  top prompt tokens (attribution to the whole target)"]
    for name, a in results.items():
        tops = "  ".join(f"{visible_token(t)} {v:+.3g}" for t, v in a.top(top))
        lines.append(f"{name:<{width}}  {seconds[name]:7.3f}  {tops}")
    return "\n".join(lines)
