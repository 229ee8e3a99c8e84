"""Pictures of an LLM attribution (:class:`~torchexplain.attr.LLMAttributionResult`).

* :func:`token_attr_html`: a self-contained HTML table (inline CSS, no script): the
  prompt's tokens coloured by their attribution to the whole target, then one row per
  target token; every cell's exact value is its hover text. Several results (a dict
  ``{method: result}``) give one table per method.
* :func:`plot_token_attr`: a matplotlib heat map, target tokens (rows) by prompt tokens
  (columns); :func:`plot_seq_attr`: a bar chart of the attributions to the whole target.
  Both return ``(fig, ax)`` as Captum's do, or None after ``plt.show()`` with ``show=True``.

Colours are Captum's: green raises the target's log-probability, red lowers it, white
is neither; every scale is symmetric about 0 and reaches full colour at the largest
magnitude shown. Everything reads :class:`TokenAttribution` (plain lists, built from a
result, a dict or any object with the result's fields), so the HTML report uses the same
tables without torch; matplotlib is imported only by the plots.
"""

from __future__ import annotations

import html
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .text import word_color

__all__ = ["LLM_CSS", "TokenAttribution", "attribution_tables", "named_attributions", "plot_seq_attr",
           "plot_token_attr", "token_attr_html", "visible_token"]

#: whitespace shown as a visible mark (in the HTML in a muted colour)
_MARKS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}
#: above this many prompt tokens the token rows' cells carry no number (hover still does)
MAX_NUMBERED_COLUMNS = 40
#: the heat map writes its values in the cells up to this many cells
MAX_ANNOTATED_CELLS = 400

LLM_CSS = """
.tx-llm{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2328}
.tx-llm .tx-title{font-weight:600;font-size:15px;margin:0 0 6px}
.tx-llm-wrap{overflow-x:auto;margin:0 0 14px}
table.tx-llm-table{border-collapse:separate;border-spacing:2px;font-variant-numeric:tabular-nums}
table.tx-llm-table caption{text-align:left;font-weight:600;padding:2px 0 4px}
table.tx-llm-table th{font-weight:normal;text-align:right;color:#59636e;padding:1px 8px 1px 0;white-space:nowrap;
 font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
table.tx-llm-table th.rowname{font-family:inherit;font-style:italic}
table.tx-llm-table td{padding:1px 4px;text-align:center;white-space:pre;border-radius:3px;
 border:1px solid #eaeef2;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
table.tx-llm-table tr.seq td{font-size:13.5px}
table.tx-llm-table tr.tok td{font-size:11px;min-width:2.4em}
.tx-llm .ws{color:#8c959f}
.tx-llm-legend{font-size:12px;color:#59636e;margin-top:4px}
.tx-llm-legend .swatch{display:inline-block;width:90px;height:10px;vertical-align:middle;border:1px solid #d8dee4;
 margin:0 4px}
"""


def visible_token(token: str) -> str:
    """``token`` with its whitespace and control characters made visible: space ␣,
    newline ↵, tab ⇥, carriage return ␍, other invisible characters as ``\\xNN`` /
    ``\\uNNNN``; the empty token is ∅."""
    return "".join(text for text, _ in _pieces(str(token))) if token != "" else "\u2205"


def _pieces(token: str) -> List[Tuple[str, bool]]:
    """(text, is a mark) pieces of a token's visible form."""
    out: List[Tuple[str, bool]] = []
    for ch in token:
        if ch in _MARKS:
            out.append((_MARKS[ch], True))
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            code = ord(ch)
            out.append((f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}", True))
        else:
            out.append((ch, False))
    return out


def _token_html(token: str) -> str:
    if token == "":
        return '<span class="ws">\u2205</span>'
    return "".join(f'<span class="ws">{html.escape(t)}</span>' if mark else html.escape(t)
                   for t, mark in _pieces(token))


def _floats(value: Any, name: str, dims: int) -> Any:
    """``value`` (a tensor, an array, nested lists) as nested lists of floats."""
    if value is None:
        return None
    if hasattr(value, "detach"):  # a tensor: any device, any dtype
        value = value.detach().float().cpu()
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        if dims == 1:
            return [float(v) for v in value]
        return [[float(v) for v in row] for row in value]
    except (TypeError, ValueError):
        shape = "one number per token" if dims == 1 else "rows of numbers"
        raise ValueError(f"{name} must be {shape} ({dims}-D); got {value!r:.80}") from None


@dataclass
class TokenAttribution:
    """One LLM attribution as plain data: ``input_tokens`` (the prompt's features),
    ``output_tokens`` (the target's tokens), ``seq_attr`` (one float per input token),
    ``token_attr`` (one row per output token, or None), ``output_probs`` (one per
    output token, or None). Lengths are checked; tensors become lists."""

    input_tokens: List[str]
    output_tokens: List[str]
    seq_attr: List[float]
    token_attr: Optional[List[List[float]]] = None
    output_probs: Optional[List[float]] = None

    def __post_init__(self) -> None:
        self.input_tokens = [str(t) for t in self.input_tokens]
        self.output_tokens = [str(t) for t in self.output_tokens]
        self.seq_attr = _floats(self.seq_attr, "seq_attr", 1)
        self.token_attr = _floats(self.token_attr, "token_attr", 2)
        self.output_probs = _floats(self.output_probs, "output_probs", 1)
        n_in, n_out = len(self.input_tokens), len(self.output_tokens)
        if len(self.seq_attr) != n_in:
            raise ValueError(f"seq_attr must have one value per input token ({n_in}); got {len(self.seq_attr)}")
        if self.token_attr is not None:
            shape = (len(self.token_attr), *{len(row) for row in self.token_attr})
            if shape != (n_out, n_in) and not (n_out == 0 and shape == (0,)):
                raise ValueError(f"token_attr must have shape (output tokens, input tokens) = ({n_out}, {n_in}); "
                                 f"got rows of lengths {shape}")
        if self.output_probs is not None and len(self.output_probs) != n_out:
            raise ValueError(f"output_probs must have one value per output token ({n_out}); "
                             f"got {len(self.output_probs)}")

    @classmethod
    def of(cls, result: Any, name: str = "result") -> "TokenAttribution":
        """From an :class:`~torchexplain.attr.LLMAttributionResult`, a dict of its
        fields (e.g. read back from ``text.json``) or any object with them."""
        if isinstance(result, cls):
            return result
        if isinstance(result, Mapping):
            get = result.get
        else:
            def get(key):
                return getattr(result, key, None)
        missing = [k for k in ("input_tokens", "output_tokens", "seq_attr") if get(k) is None]
        if missing:
            raise TypeError(f"{name} must be an LLMAttributionResult (input_tokens, output_tokens, seq_attr and "
                            f"optionally token_attr, output_probs); {type(result).__name__} has no "
                            f"{', '.join(missing)}")
        return cls(list(get("input_tokens")), list(get("output_tokens")), get("seq_attr"), get("token_attr"),
                   get("output_probs"))

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON-ready lists (None stays None)."""
        return {"input_tokens": list(self.input_tokens), "output_tokens": list(self.output_tokens),
                "seq_attr": list(self.seq_attr), "token_attr": self.token_attr, "output_probs": self.output_probs}

    def top(self, k: int = 5) -> List[Tuple[str, float]]:
        """The ``k`` input tokens of largest ``|seq_attr|``, largest first."""
        order = sorted(range(len(self.seq_attr)), key=lambda i: -abs(self.seq_attr[i])
                       if math.isfinite(self.seq_attr[i]) else 0.0)
        return [(self.input_tokens[i], self.seq_attr[i]) for i in order[:k]]


def named_attributions(results: Any) -> List[Tuple[Optional[str], TokenAttribution]]:
    """``[(name, TokenAttribution)]`` from one result (name None), a mapping
    ``{name: result}`` or a sequence of results (named by position)."""
    if isinstance(results, TokenAttribution) or hasattr(results, "seq_attr") or (
            isinstance(results, Mapping) and "seq_attr" in results):
        return [(None, TokenAttribution.of(results))]
    if isinstance(results, Mapping):
        if not results:
            raise ValueError("results: expected a result or a non-empty {name: result} mapping; got an empty one")
        return [(str(k), TokenAttribution.of(v, f"results[{k!r}]")) for k, v in results.items()]
    if isinstance(results, (list, tuple)) and results:
        return [(str(i), TokenAttribution.of(v, f"results[{i}]")) for i, v in enumerate(results)]
    raise TypeError(f"results must be an LLMAttributionResult, a {{name: result}} mapping or a list of results; "
                    f"got {type(results).__name__}")


def _bound(values: Sequence[float]) -> float:
    """The largest finite magnitude (1 when there is none), the scale's full colour."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    largest = max(finite, default=0.0)
    return largest if largest > 0 else 1.0


def _colour(value: float, bound: float) -> str:
    return word_color(value / bound) if math.isfinite(value) else "transparent"


def _short(value: float) -> str:
    return f"{value:.2g}" if value != 0 else "0"


def _cell(value: float, bound: float, content: str) -> str:
    return f'<td style="background-color: {_colour(value, bound)}" title="{value!r}">{content}</td>'


def _legend(seq_bound: float, token_bound: Optional[float]) -> str:
    swatch = (f'<span class="swatch" style="background: linear-gradient(to right, {word_color(-1.0)}, '
              f'#ffffff, {word_color(1.0)})"></span>')
    scales = f"full colour at |value| = {seq_bound:.3g} in the prompt row"
    if token_bound is not None:
        scales += f", {token_bound:.3g} in the target-token rows"
    return (f'<div class="tx-llm-legend">lowers the target\'s log-probability{swatch}raises it '
            f"(white: no effect); {scales}. Hover a cell for its exact value.</div>")


def _table(name: Optional[str], a: TokenAttribution) -> str:
    seq_bound = _bound(a.seq_attr)
    rows = ['<tr class="seq"><th class="rowname" scope="row" title="attribution to the whole target">'
            "whole target</th>" + "".join(_cell(v, seq_bound, _token_html(t))
                                          for t, v in zip(a.input_tokens, a.seq_attr)) + "</tr>"]
    token_bound = None
    if a.token_attr is not None:
        token_bound = _bound([v for row in a.token_attr for v in row])
        numbered = len(a.input_tokens) <= MAX_NUMBERED_COLUMNS
        probs = a.output_probs or [None] * len(a.output_tokens)
        for token, row, p in zip(a.output_tokens, a.token_attr, probs):
            tip = f' title="p = {p!r}"' if p is not None else ""
            cells = "".join(_cell(v, token_bound, _short(v) if numbered else "") for v in row)
            rows.append(f'<tr class="tok"><th scope="row"{tip}>{_token_html(token)}</th>{cells}</tr>')
    caption = f"<caption>{html.escape(name)}</caption>" if name is not None else ""
    method = f' data-method="{html.escape(name)}"' if name is not None else ""
    return (f'<div class="tx-llm-wrap"><table class="tx-llm-table"{method}>{caption}<tbody>{"".join(rows)}'
            f"</tbody></table>{_legend(seq_bound, token_bound)}</div>")


def attribution_tables(named: Sequence[Tuple[Optional[str], TokenAttribution]]) -> str:
    """The HTML fragment of one table per ``(name, TokenAttribution)``; it needs
    :data:`LLM_CSS` inside an element of class ``tx-llm``."""
    return "".join(_table(name, a) for name, a in named)


def token_attr_html(result: Any, title: Optional[str] = None) -> str:
    """Self-contained HTML of an LLM attribution (see the module docstring).

    ``result``: an ``LLMAttributionResult`` (or any object or dict with its fields),
    a mapping ``{method name: result}`` or a list of results: one table each. The
    first row is the prompt's tokens coloured by ``seq_attr``; then one row per target
    token, coloured by its ``token_attr`` row (none when ``token_attr`` is None). The
    two kinds of rows have their own symmetric scales (the legend gives both).
    """
    heading = f'<div class="tx-title">{html.escape(title)}</div>' if title else ""
    return (f'<div class="tx-llm"><style>{LLM_CSS}</style>{heading}'
            f"{attribution_tables(named_attributions(result))}</div>")


# ---------------------------------------------------------------------- matplotlib


def _label(token: str, width: int = 24) -> str:
    text = visible_token(token)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _figure(show: bool, size: Tuple[float, float]):
    from .image import new_figure

    fig = new_figure(show, size)
    fig.set_facecolor("white")
    return fig, fig.subplots()


def _finish(fig, ax, show: bool):
    if show:
        from .image import _show

        _show()
        return None
    return fig, ax


def _top_labels(ax) -> None:
    """Prompt tokens along the top; slanted when any is longer than 2 characters."""
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    labels = ax.get_xticklabels()
    if any(len(label.get_text()) > 2 for label in labels):
        for label in labels:
            label.set(rotation=45, ha="left", rotation_mode="anchor")


def _tick_size(n: int) -> float:
    return 10.0 if n <= 40 else max(4.0, 400.0 / n)


def plot_token_attr(result: Any, show: bool = False):
    """Heat map of ``token_attr``: one row per target token, one column per prompt
    token, a diverging colour map centred at 0 (±max |value|), each cell's value
    written in it when there are at most :data:`MAX_ANNOTATED_CELLS` cells.

    Returns ``(fig, ax)``; with ``show=True`` the figure is made through pyplot, shown,
    and None is returned. Without it the figure is detached from pyplot (nothing is
    kept open; ``fig.savefig`` or display ``fig`` to see it)."""
    import numpy as np

    from .image import default_cmap

    a = TokenAttribution.of(result)
    if a.token_attr is None:
        raise ValueError("token_attr is None: this result has no per-token attributions (Lime and KernelShap only "
                         "explain the whole target); use plot_seq_attr")
    data = np.asarray(a.token_attr, dtype=np.float64).reshape(len(a.output_tokens), len(a.input_tokens))
    n_out, n_in = data.shape
    bound = _bound(data.ravel().tolist())
    fig, ax = _figure(show, (min(max(0.55 * n_in + 2.5, 6.4), 40.0), min(max(0.38 * n_out + 2.0, 4.8), 40.0)))
    ax.grid(False)
    cmap, _, _ = default_cmap("all")
    image = ax.imshow(data, cmap=cmap, vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax)
    bar.ax.set_ylabel("token attribution", rotation=-90, va="bottom")
    ax.set_xticks(range(n_in), labels=[_label(t) for t in a.input_tokens], fontsize=_tick_size(n_in))
    ax.set_yticks(range(n_out), labels=[_label(t) for t in a.output_tokens], fontsize=_tick_size(n_out))
    _top_labels(ax)
    ax.set_ylabel("target tokens")
    if data.size <= MAX_ANNOTATED_CELLS:
        for (i, j), value in np.ndenumerate(data):
            strong = math.isfinite(value) and abs(value) / bound > 0.6
            ax.text(j, i, _short(float(value)), ha="center", va="center", fontsize=8,
                    color="white" if strong else "black")
    return _finish(fig, ax, show)


#: bar colours: Captum's map's ends (green raises the target's log-probability, red lowers it)
POSITIVE_BAR, NEGATIVE_BAR = "#1a9850", "#d73027"


def plot_seq_attr(result: Any, show: bool = False):
    """Bar chart of ``seq_attr`` over the prompt tokens: positive bars green, negative
    red, one bar per token (its height the value). Returns ``(fig, ax)``, or None after
    showing it with ``show=True`` (see :func:`plot_token_attr`)."""
    a = TokenAttribution.of(result)
    n = len(a.input_tokens)
    fig, ax = _figure(show, (min(max(0.45 * n + 1.5, 6.4), 40.0), 4.8))
    colours = [POSITIVE_BAR if v >= 0 else NEGATIVE_BAR for v in a.seq_attr]
    ax.bar(range(n), a.seq_attr, align="center", color=colours)
    ax.axhline(0.0, color="#1f2328", linewidth=0.8)
    ax.set_xticks(range(n), labels=[_label(t) for t in a.input_tokens], fontsize=_tick_size(n))
    _top_labels(ax)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("sequence attribution")
    return _finish(fig, ax, show)
