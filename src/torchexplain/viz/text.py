"""Word attributions as an HTML table, with or without a notebook.

``VisualizationDataRecord`` has Captum's fields in Captum's order.
``visualize_text`` always returns the HTML string; inside a running notebook
kernel it also displays it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Union

import numpy as np

from .arrays import check_finite, to_numpy

# Background colours: positive words green, negative words red, opacity = |attribution|.
_POSITIVE_RGB = (22, 163, 74)
_NEGATIVE_RGB = (220, 38, 38)
_HEADERS = ("True Label", "Predicted Label", "Attribution Label", "Attribution Score", "Word Importance")


@dataclass
class VisualizationDataRecord:
    """One explained text example (Captum's fields and positional order)."""

    word_attributions: Any
    pred_prob: float
    pred_class: Any
    true_class: Any
    attr_class: Any
    attr_score: float
    raw_input_ids: Sequence[str]
    convergence_score: Optional[float] = None


def word_color(value: float) -> str:
    """CSS colour for one attribution in [-1, 1] (clipped): green > 0, red < 0."""
    value = float(np.clip(value, -1.0, 1.0))
    red, green, blue = _POSITIVE_RGB if value > 0 else _NEGATIVE_RGB
    return f"rgba({red}, {green}, {blue}, {abs(value):.3f})"


def _attributions(record: VisualizationDataRecord, index: int, normalize: bool) -> np.ndarray:
    values = to_numpy(record.word_attributions, f"records[{index}].word_attributions")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"records[{index}].word_attributions must be one value per word (1-D); "
            f"got shape {tuple(values.shape)}"
        )
    check_finite(values, f"records[{index}].word_attributions")
    words = len(record.raw_input_ids)
    if words > values.size:
        raise ValueError(
            f"records[{index}].raw_input_ids has {words} words but word_attributions has "
            f"only {values.size} values"
        )
    values = values[:words]
    if normalize and values.size:
        largest = float(np.abs(values).max())
        if largest > 0:
            values = values / largest
    return values


def _number(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (int, float)):
        value = to_numpy(value, name).reshape(-1)[0]
    return f"{float(value):.2f}"


def _cell(text: str) -> str:
    return f'<td style="padding-right: 2em"><b>{html.escape(text)}</b></td>'


def _words_cell(words: Sequence[Any], values: np.ndarray) -> str:
    marks = []
    for word, value in zip(words, values):
        marks.append(
            f'<mark class="word" style="background-color: {word_color(value)}; '
            f'line-height: 1.75; padding: 0 2px" title="{value:.3f}">'
            f"{html.escape(str(word))}</mark>"
        )
    return "<td>" + " ".join(marks) + "</td>"


def _legend() -> str:
    swatches = []
    for value, label in ((-1.0, "Negative"), (0.0, "Neutral"), (1.0, "Positive")):
        swatches.append(
            '<span style="display: inline-block; width: 10px; height: 10px; '
            f'border: 1px solid; background-color: {word_color(value)}"></span> {label}'
        )
    return (
        '<div class="legend" style="border-top: 1px solid; margin-top: 5px; padding-top: 5px">'
        "<b>Legend: </b>" + " &nbsp; ".join(swatches) + "</div>"
    )


def _display_in_notebook(markup: str) -> bool:
    """Displays ``markup`` when a notebook kernel is running; True when it did."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    display(HTML(markup))
    return True


def visualize_text(
    records: Union[VisualizationDataRecord, Iterable[VisualizationDataRecord]],
    legend: bool = True,
    normalize: bool = True,
) -> str:
    """An HTML table with one row per record; returns the HTML string.

    Columns: true label, predicted label (probability), attribution label,
    attribution score, and the words coloured green (positive) or red (negative)
    with opacity |attribution|. ``normalize`` divides each record's attributions by
    their largest magnitude (Captum leaves this to the caller).
    """
    if isinstance(records, VisualizationDataRecord):
        records = [records]
    records = list(records)
    rows: List[str] = []
    for index, record in enumerate(records):
        if not isinstance(record, VisualizationDataRecord):
            raise ValueError(
                f"records[{index}] must be a VisualizationDataRecord; got {type(record).__name__}"
            )
        values = _attributions(record, index, normalize)
        probability = _number(record.pred_prob, f"records[{index}].pred_prob")
        predicted = f"{record.pred_class} ({probability})"
        rows.append(
            "<tr>"
            + _cell(str(record.true_class))
            + _cell(predicted)
            + _cell(str(record.attr_class))
            + _cell(_number(record.attr_score, f"records[{index}].attr_score"))
            + _words_cell(list(record.raw_input_ids), values)
            + "</tr>"
        )
    header = "<tr>" + "".join(f"<th>{name}</th>" for name in _HEADERS) + "</tr>"
    markup = (
        '<table class="torchexplain-text" style="width: 100%">'
        f"<thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"
    )
    if legend:
        markup += _legend()
    _display_in_notebook(markup)
    return markup
