"""Self-contained HTML reports, composed from sections.

>>> page = report.explanation_page(result, evaluation=table, tree=decisions, captions=names)
>>> page.write("report.html")

A :class:`Page` holds sections (:class:`PredictionsSection`, :class:`AttributionGrid`,
:class:`MethodsSection`, :class:`EvaluationSection`, :class:`TreeSection`,
:class:`TextAttributionSection` (prompt attributions of a language model), or any
:class:`Section`), each bringing its own HTML, CSS and script; the page inlines them
all and loads nothing from the network. Sections read data objects only
(:class:`~torchexplain.Explanation`, :class:`~torchexplain.metrics.EvaluationTable`,
:class:`~torchexplain.nbdt.TreeDecisions`); none imports matplotlib.
"""

from __future__ import annotations

from .evaluation import EvaluationSection, evaluation_html
from .grid import AttributionGrid
from .page import HTMLSection, Page, Section, SideBySide
from .sections import CompletenessSection, MethodsSection, PredictionsSection
from .text import TextAttributionSection, text_page
from .tree import TreeSection

__all__ = [
    "AttributionGrid",
    "CompletenessSection",
    "EvaluationSection",
    "HTMLSection",
    "MethodsSection",
    "Page",
    "PredictionsSection",
    "Section",
    "SideBySide",
    "TextAttributionSection",
    "TreeSection",
    "evaluation_html",
    "evaluation_page",
    "explanation_page",
    "text_page",
    "tree_page",
]


def explanation_page(explanation, *, evaluation=None, tree=None, captions=None, title: str = "torchexplain report",
                     subtitle: str = "", evaluation_lead: str = "", tree_lead: str = "", tree_link: str = "") -> Page:
    """The report of one :class:`~torchexplain.Explanation`: the attribution grid; how
    well each method's attributions add up beside the evaluation ranking
    (``evaluation``, an ``EvaluationTable``); the predictions beside what each method
    computes and its time; the decision tree (``tree``, a ``TreeDecisions``).
    ``captions``: one label per input example."""
    page = Page(title, subtitle)
    page.add(AttributionGrid(explanation, captions=captions))
    evaluated = EvaluationSection(evaluation, evaluation_lead) if evaluation is not None else None
    page.add(SideBySide(CompletenessSection(explanation), evaluated))
    page.add(SideBySide(PredictionsSection(explanation, captions), MethodsSection(explanation)))
    if tree is not None:
        page.add(TreeSection(tree, tree_lead, link=tree_link))
    return page


def evaluation_page(table, title: str = "torchexplain evaluation", subtitle: str = "", lead: str = "") -> Page:
    """A page with one evaluation table."""
    return Page(title, subtitle).add(EvaluationSection(table, lead))


def tree_page(tree, title: str = "Neural-backed decision tree", subtitle: str = "", lead: str = "") -> Page:
    """A page with each input's decisions and its tree (outlines open)."""
    return Page(title, subtitle).add(TreeSection(tree, lead, open_trees=True))
