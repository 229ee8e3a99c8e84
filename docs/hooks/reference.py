"""MkDocs hook: the API reference, written from the code at build time.

One page per package lists every name of its ``__all__`` (mkdocstrings renders each
from its docstring), so a new public name is documented the moment it is exported;
the command line's page is its ``--help`` text. ``on_post_page`` renders LaTeX as
MathML (read offline, no script) and drops the Sphinx roles (``:class:``) docstrings
keep for IDEs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re

from mkdocs.structure.files import File

#: (package, one line on what it is for), in the order of the reference's index
PACKAGES = (
    ("torchexplain", "the one-call entry point and the explanation record"),
    ("torchexplain.attr", "attribution methods with Captum's names, arguments and return forms"),
    ("torchexplain.cam", "the class activation map family, as in pytorch-grad-cam"),
    ("torchexplain.shap", "expected gradients and DeepSHAP with shap's interface"),
    ("torchexplain.nbdt", "neural-backed decision trees"),
    ("torchexplain.metrics", "faithfulness metrics and the evaluation of methods"),
    ("torchexplain.viz", "pictures of attributions"),
    ("torchexplain.inspect", "conv filters and feature maps"),
    ("torchexplain.report", "self-contained HTML pages"),
    ("torchexplain.dataset", "explaining whole datasets, locally or on Ray Data"),
    ("torchexplain.concept", "concept-based explanations (TCAV)"),
    ("torchexplain.robust", "adversarial attacks and minimal perturbations"),
    ("torchexplain.influence", "training-data influence (TracIn)"),
    ("torchexplain.models", "the bundled digits model and model specs"),
    ("torchexplain.app", "the local web app (torchexplain serve)"),
)


def page_name(package: str) -> str:
    return "reference/" + (package.split(".", 1)[1] if "." in package else "torchexplain") + ".md"


def package_page(package: str) -> str:
    module = importlib.import_module(package)
    summary = (inspect.getdoc(module) or "").strip()
    lines = [f"# `{package}`", "", summary, ""]
    for name in module.__all__:
        if inspect.ismodule(getattr(module, name)):
            target = f"{package}.{name}"
            if any(target == p for p, _ in PACKAGES):
                lines += [f"## `{name}`", "", f"The package [`{target}`]({page_name(target)[len('reference/'):]}).", ""]
            else:
                lines += [f"::: {target}", "    options:", "      members: false", ""]
            continue
        lines += [f"::: {identifier(package, name)}", ""]
    return "\n".join(lines)


def identifier(package: str, name: str) -> str:
    """Where mkdocstrings finds ``package.name``: the defining module for a class or a
    function (lazily exported names are invisible to static analysis), the package
    for data and for a second name of an object (``PropagationRule = Rule``)."""
    obj = getattr(importlib.import_module(package), name)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__name__ == name:
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{package}.{name}"


def index_page() -> str:
    lines = ["# API reference", "", "Every public name of every package, from its docstring.", "",
             "| package | what it holds |", "| --- | --- |"]
    for package, about in PACKAGES:
        lines.append(f"| [`{package}`]({page_name(package)[len('reference/'):]}) | {about} |")
    lines.append("| [`torchexplain` command](cli.md) | the command line: every subcommand's options |")
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    from torchexplain.cli import _parser

    parser = _parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["# The `torchexplain` command", "", "Each subcommand's `--help`, as the installed command prints it.",
             "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.choices.items():
        lines += [f"## `torchexplain {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):
    pages = {page_name(p): package_page(p) for p, _ in PACKAGES}
    pages["reference/index.md"] = index_page()
    pages["reference/cli.md"] = cli_page()
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj):(<code>)~?")
MATH = re.compile(r'<(span|div) class="arithmatex">\\[\(\[](.*?)\\[\)\]]</\1>', re.S)


def _mathml(match: re.Match) -> str:
    import html

    from latex2mathml.converter import convert

    return convert(html.unescape(match.group(2)).strip(), display="block" if match.group(1) == "div" else "inline")


def on_post_page(output, page, config):
    return MATH.sub(_mathml, ROLE.sub(r"\1", output))
