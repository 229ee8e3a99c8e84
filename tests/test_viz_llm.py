"""Pictures of LLM attributions (torchexplain.viz.llm) and their report section: every
number shown is the input's (read back from the HTML's title attributes, the heat
map's image array, the bars' heights), tokens are escaped and their whitespace
visible, the colour follows the sign on a scale symmetric about 0."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from torchexplain.viz.llm import TokenAttribution, plot_seq_attr, plot_token_attr, token_attr_html, visible_token

POSITIVE, NEGATIVE = "22, 163, 74", "220, 38, 38"  # viz.text.word_color's green and red


class Rows(HTMLParser):
    """The tables of a page: per table its data-method and rows; per row its class,
    its header text and its cells as (title, style, text)."""

    def __init__(self, markup: str):
        super().__init__()
        self.tables: list[dict] = []
        self._cell = None
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "tx-llm-table" in (attrs.get("class") or ""):
            self.tables.append({"method": attrs.get("data-method"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append({"class": attrs.get("class"), "head": "", "cells": []})
        elif tag == "th" and self.tables and self.tables[-1]["rows"]:
            self._cell = ["head", attrs]
        elif tag == "td" and self.tables and self.tables[-1]["rows"]:
            self._cell = [(attrs.get("title"), attrs.get("style"), ""), attrs]
            self.tables[-1]["rows"][-1]["cells"].append(self._cell[0])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is None:
            return
        row = self.tables[-1]["rows"][-1]
        if self._cell[0] == "head":
            row["head"] += data
        else:
            title, style, text = row["cells"][-1]
            row["cells"][-1] = (title, style, text + data)


def stand_in(n_in=5, n_out=3, token_attr=True, seed=0, tokens=None):
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or [f"t{i}" for i in range(n_in)]
    return SimpleNamespace(
        input_tokens=tokens, output_tokens=[f"o{i}" for i in range(n_out)],
        seq_attr=torch.randn(len(tokens), generator=g),
        token_attr=torch.randn(n_out, len(tokens), generator=g) if token_attr else None, output_probs=None)


def alpha(style: str) -> float:
    return float(re.search(r"rgba\([^)]*, ([0-9.]+)\)", style).group(1))


def test_titles_hold_the_exact_values_and_rows_follow_the_result():
    r = stand_in()
    table = Rows(token_attr_html(r)).tables
    assert len(table) == 1 and table[0]["method"] is None
    rows = table[0]["rows"]
    assert [row["class"] for row in rows] == ["seq", "tok", "tok", "tok"]
    assert [float(c[0]) for c in rows[0]["cells"]] == r.seq_attr.tolist()
    assert [c[2] for c in rows[0]["cells"]] == r.input_tokens
    for row, expected, token in zip(rows[1:], r.token_attr.tolist(), r.output_tokens):
        assert [float(c[0]) for c in row["cells"]] == expected
        assert row["head"] == token
        assert [float(c[2]) for c in row["cells"]] == pytest.approx(expected, rel=0.06, abs=1e-12)  # 2 digits


def test_colour_follows_the_sign_on_a_scale_symmetric_about_zero():
    r = SimpleNamespace(input_tokens=["a", "b", "c", "d"], output_tokens=["x"],
                        seq_attr=torch.tensor([-2.0, 1.0, 0.0, 0.5]), token_attr=torch.tensor([[0.25, -0.5, 0.0, 0.1]]))
    seq, tok = Rows(token_attr_html(r)).tables[0]["rows"]
    styles = [c[1] for c in seq["cells"]]
    assert NEGATIVE in styles[0] and POSITIVE in styles[1] and POSITIVE in styles[3]
    # the largest magnitude (negative here) is full colour; the rest scale by it
    assert [alpha(s) for s in styles] == [1.0, 0.5, 0.0, 0.25]
    # the token rows have their own scale: max |token_attr| = 0.5
    assert [alpha(c[1]) for c in tok["cells"]] == [0.5, 1.0, 0.0, 0.2]
    assert POSITIVE in tok["cells"][0][1] and NEGATIVE in tok["cells"][1][1]
    all_zero = SimpleNamespace(input_tokens=["a"], output_tokens=[], seq_attr=torch.zeros(1), token_attr=None)
    assert alpha(Rows(token_attr_html(all_zero)).tables[0]["rows"][0]["cells"][0][1]) == 0.0


def test_tokens_are_escaped_and_whitespace_is_visible():
    tokens = ["<b>", "&amp;", ' "q"', "\n", "a\tb\r", "", "\x00"]
    r = stand_in(tokens=tokens, n_out=1)
    r.output_tokens = ["</td><script>"]
    markup = token_attr_html(r, title="<i>title</i>")
    assert "<b>" not in markup and "<script>" not in markup and "<i>" not in markup
    assert "&lt;b&gt;" in markup and "&amp;amp;" in markup and "&lt;/td&gt;&lt;script&gt;" in markup
    seq, tok = Rows(markup).tables[0]["rows"]
    assert [c[2] for c in seq["cells"]] == ["<b>", "&amp;", '\u2423"q"', "\u21b5", "a\u21e5b\u240d", "\u2205",
                                            "\\x00"]
    assert [c[2] for c in seq["cells"]] == [visible_token(t) for t in tokens]
    assert tok["head"] == "</td><script>"


def test_no_token_attr_gives_the_sequence_row_only():
    r = stand_in(token_attr=False)
    rows = Rows(token_attr_html(r)).tables[0]["rows"]
    assert len(rows) == 1 and rows[0]["class"] == "seq"
    assert [float(c[0]) for c in rows[0]["cells"]] == r.seq_attr.tolist()
    assert "target-token rows" not in token_attr_html(r)


def test_several_results_give_one_table_per_method():
    a, b = stand_in(seed=1), stand_in(seed=2, token_attr=False)
    markup = token_attr_html({"feature-ablation": a, "lime": b}, title="Two")
    tables = Rows(markup).tables
    assert [t["method"] for t in tables] == ["feature-ablation", "lime"]
    assert [float(c[0]) for c in tables[1]["rows"][0]["cells"]] == b.seq_attr.tolist()
    assert len(tables[0]["rows"]) == 4 and len(tables[1]["rows"]) == 1
    assert markup.count("<style>") == 1 and "<script" not in markup and "http" not in markup
    assert [t["method"] for t in Rows(token_attr_html([a, b])).tables] == ["0", "1"]


def test_shapes_are_checked():
    r = stand_in()
    with pytest.raises(ValueError, match="seq_attr must have one value per input token"):
        TokenAttribution.of({**vars(r), "seq_attr": [1.0]})
    with pytest.raises(ValueError, match=r"token_attr must have shape \(output tokens, input tokens\) = \(3, 5\)"):
        TokenAttribution.of({**vars(r), "token_attr": torch.zeros(3, 4)})
    with pytest.raises(TypeError, match="no input_tokens"):
        token_attr_html(SimpleNamespace(seq_attr=[1.0]))


def test_heat_map_shows_token_attr_on_a_centred_scale():
    r = stand_in(n_in=6, n_out=4, tokens=["a", " b", "c\n", "d", "e", "f"])
    fig, ax = plot_token_attr(r)
    image = ax.images[0]
    np.testing.assert_array_equal(image.get_array(), r.token_attr.double().numpy())
    bound = r.token_attr.abs().max().item()
    assert image.get_clim() == pytest.approx((-bound, bound))
    assert np.allclose(image.cmap(0.5)[:3], 1.0, atol=0.01)  # white at 0
    assert image.cmap(1.0)[1] > image.cmap(1.0)[0] and image.cmap(0.0)[0] > image.cmap(0.0)[1]  # green +, red -
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "\u2423b", "c\u21b5", "d", "e", "f"]
    assert [t.get_text() for t in ax.get_yticklabels()] == r.output_tokens
    values = [float(t.get_text()) for t in ax.texts]
    assert values == pytest.approx(r.token_attr.reshape(-1).tolist(), rel=0.06)
    with pytest.raises(ValueError, match="token_attr is None"):
        plot_token_attr(stand_in(token_attr=False))


def test_bar_heights_are_seq_attr_in_two_colours():
    r = stand_in(n_in=7, seed=3)
    fig, ax = plot_seq_attr(r)
    bars = ax.patches
    assert [b.get_height() for b in bars] == pytest.approx(r.seq_attr.tolist(), abs=0)
    colours = {v > 0: b.get_facecolor() for b, v in zip(bars, r.seq_attr.tolist())}
    assert len(colours) == 2 and colours[True] != colours[False]
    assert colours[True][1] > colours[True][0] and colours[False][0] > colours[False][1]
    assert [t.get_text() for t in ax.get_xticklabels()] == r.input_tokens


def test_show_draws_through_pyplot_and_returns_none(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    r = stand_in()
    assert plot_token_attr(r, show=True) is None and plot_seq_attr(r, show=True) is None
    assert len(shown) == 2
    plt.close("all")


def test_the_real_result_class_draws_with_these_functions():
    from torchexplain.attr.llm_result import LLMAttributionResult

    r = stand_in()
    result = LLMAttributionResult(input_tokens=r.input_tokens, output_tokens=r.output_tokens, seq_attr=r.seq_attr,
                                  token_attr=r.token_attr, output_probs=torch.tensor([0.5, 0.25, 0.125]))
    markup = result._repr_html_()
    assert markup == token_attr_html(result)
    heads = [row for row in Rows(markup).tables[0]["rows"] if row["class"] == "tok"]
    assert len(heads) == 3 and 'title="p = 0.25"' in markup
    fig, ax = result.plot_token_attr()
    np.testing.assert_array_equal(ax.images[0].get_array(), r.token_attr.double().numpy())
    fig, ax = result.plot_seq_attr()
    assert [b.get_height() for b in ax.patches] == pytest.approx(r.seq_attr.tolist(), abs=0)


def test_report_section_on_a_page_from_plain_data():
    from torchexplain.report import Page, TextAttributionSection, text_page

    plain = {"input_tokens": ["Dogs", " are"], "output_tokens": [" loyal"], "seq_attr": [0.75, -0.25],
             "token_attr": [[0.75, -0.25]], "output_probs": None}
    page = text_page({"feature-ablation": plain, "lime": {**plain, "token_attr": None}}, prompt="Dogs are",
                     target=" loyal", seconds={"feature-ablation": 1.5}).html()
    assert "default-src 'none'" in page and page.count('class="tx-llm-table"') == 2
    tables = Rows(page).tables
    assert [float(c[0]) for c in tables[0]["rows"][1]["cells"]] == [0.75, -0.25]
    assert [c[2] for c in tables[0]["rows"][0]["cells"]] == ["Dogs", "\u2423are"]
    assert "Dogs +0.75" in page and "\u2423are -0.25" in page and "1.500" in page
    assert "prompt: <span>Dogs are</span>" in page
    # next to another section, its CSS is included once
    other = Page("p").add(TextAttributionSection(plain), TextAttributionSection(plain)).html()
    assert other.count(".tx-llm-legend{") == 1 and other.count('class="tx-llm-table"') == 2
