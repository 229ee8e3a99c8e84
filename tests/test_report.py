"""The HTML report, read as data: the grid's colours decoded from its pictures, the
column scales, centred RISE maps, the sections a page is made of, and the evaluation
table's forms (no browser here; see test_demo_report.py for one)."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from torchexplain import Explanation, report
from torchexplain.metrics import EvaluationTable, MetricResult
from torchexplain.report import tiles


def explanation(attributions: dict[str, torch.Tensor], n: int = 2) -> Explanation:
    inputs = torch.linspace(0, 1, n * 16).reshape(n, 1, 4, 4)
    e = Explanation(inputs, torch.arange(n), torch.zeros(n, dtype=torch.long), torch.tensor([[2.0, 0.0]] * n),
                    class_names=["yes", "no"])
    for name, a in attributions.items():
        e.add(name, a, None, 0.5, {})
    return e


def sprites(page: str, view: str = "signed") -> list[tuple[np.ndarray, np.ndarray]]:
    """Each column's sprite as (palette indices, palette), in column order."""
    found = re.findall(r"\.s\d+c(\d+)>i\." + view + r"\{background-image:url\(data:image/png;base64,([^)]+)\)", page)
    out = []
    for _, data in sorted(found, key=lambda item: int(item[0])):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.mode == "P"
        out.append((np.array(image), np.array(image.getpalette()[: 3 * 256]).reshape(-1, 3)))
    return out


def test_signed_colours_are_centred_at_zero_with_one_scale_per_column():
    a = torch.zeros(2, 1, 4, 4)
    a[0, 0, 0, 0], a[0, 0, 3, 3], a[1, 0, 1, 1] = 2.0, -2.0, 1.0
    e = explanation({"m": a, "twice": 2 * a})
    grid = report.AttributionGrid(e, outlier_perc=0)  # no saturation: the scale is max |value|
    page = report.Page("t").add(grid).html()
    assert re.findall(r'data-vmin="([^"]+)" data-vmax="([^"]+)"', page)[::2] == [("-2", "2"), ("-4", "4")]
    (indices, colours), (twice, _) = sprites(page)
    assert indices.shape == (8, 4)  # the two rows' maps stacked
    middle = (tiles.SIGNED_LEVELS - 1) // 2
    assert indices[0, 0] == tiles.SIGNED_LEVELS - 1 and indices[3, 3] == 0 and indices[4 + 1, 1] == middle + middle // 2
    assert (indices == middle).sum() == 32 - 3  # every zero is the middle entry
    assert tuple(colours[middle]) == (247, 247, 247)  # near-white
    assert tuple(colours[0]) == (0x21, 0x66, 0xAC) and tuple(colours[-1 % tiles.SIGNED_LEVELS]) == (0xB2, 0x18, 0x2B)
    np.testing.assert_array_equal(twice, indices)  # its own scale: the same picture
    (absolute, _), _ = sprites(page, "abs")
    assert absolute[0, 0] == absolute[3, 3] == tiles.ABSOLUTE_LEVELS - 1 and absolute[1, 1] == 0
    assert '<span class="lo">\u22122</span><span class="mid">0</span><span class="hi">2</span>' in page


def test_column_scale_is_captums_outlier_rule_over_the_whole_column():
    maps = np.array([[[1.0, 1.0, 1.0, 97.0]], [[0.0, 0.0, 0.0, 0.0]]])  # total 100: the top 2% saturate
    assert tiles.column_scale(maps, 2) == 97.0
    assert tiles.column_scale(maps, 5) == 97.0
    assert tiles.column_scale(maps, 98) == 1.0  # 2% of the total is reached within the ones
    assert tiles.column_scale(np.zeros((2, 1, 3)), 2) == 1.0


def test_rise_maps_are_shown_centred_and_the_page_says_so():
    torch.manual_seed(0)
    pattern = torch.randn(2, 1, 4, 4)
    pattern -= pattern.mean(dim=(1, 2, 3), keepdim=True)
    e = explanation({"rise": 6.0 + pattern, "pattern": pattern, "offset": 6.0 + pattern})
    page = report.explanation_page(e).html()
    rise, plain, offset = sprites(page)
    np.testing.assert_array_equal(rise[0], plain[0])  # minus each map's mean: the pattern itself
    assert (offset[0] > (tiles.SIGNED_LEVELS - 1) // 2).all()  # not centred: all positive
    assert "<b>rise*</b> (centred): shown minus each map's mean. The means lie between 6 and 6" in page
    assert page.count("<sup title=\"centred") == 1


def test_grid_rows_and_columns_and_the_row_labels():
    e = explanation({"a": torch.randn(3, 1, 4, 4), "b": torch.randn(3, 1, 4, 4)}, n=3)
    e.target = torch.tensor([0, 1, 0])
    page = report.explanation_page(e, captions=["x.png", "y.png", "z.png"]).html()
    grid = page.split('<table class="grid')[1].split("</table>")[0]
    assert re.findall(r'<th class="method" data-method="([^"]+)"', grid) == ["a", "b"]
    rows = re.findall(r'<tr data-row="(\d+)">(.*?)</tr>', grid)
    assert [r for r, _ in rows] == ["0", "1", "2"] and all(body.count("<td>") == 2 for _, body in rows)
    assert "<b>yes</b> &middot; 88.1%" in rows[1][1] and "explains no (11.9%)" in rows[1][1]
    assert "y.png" in rows[1][1] and "explains" not in rows[0][1]


def test_a_page_is_self_contained_and_composed_of_sections():
    e = explanation({"integrated_gradients": torch.randn(2, 1, 4, 4), "lrp": torch.randn(2, 1, 4, 4)})
    e.deltas = {"integrated_gradients": torch.tensor([0.01, -0.02]), "lrp": torch.tensor([0.5, 0.5])}
    table = _table(n=2)
    page = report.explanation_page(e, evaluation=table, title="T <&>").html()
    assert "<title>T &lt;&amp;&gt;</title>" in page and "default-src 'none'" in page
    anchors = re.findall(r'<section id="([^"]+)">', page)
    assert anchors == ["attributions", "completeness", "evaluation", "predictions", "methods"]
    assert re.findall(r'<nav class="toc">(.*?)</nav>', page)[0].count("<a href=") == len(anchors)
    links = re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"url\(([^)]*)\)", page)
    assert links and all(link.startswith(("data:", "#")) for link in links)
    assert "http:" not in page and "https:" not in page and "@import" not in page
    assert page.count("<script") == 0  # the grid and tables need no script (the tree does)
    assert "LRP-epsilon does not conserve relevance" in page and "Riemann sum" in page


def test_completeness_is_shown_relative_to_the_output_gap():
    e = explanation({"integrated_gradients": torch.ones(2, 1, 4, 4)})  # sums: 16 per row
    e.deltas = {"integrated_gradients": torch.tensor([0.16, -0.16])}  # gaps 15.84 and 16.16: 1%
    section = report.CompletenessSection(e)
    assert section.methods == ["integrated_gradients"]
    body = section.body()
    assert 'data-relative="0.01"' in body and ">1%</td>" in body
    assert report.sections.percent(3e-7) == "< 0.01%" and report.sections.percent(0.86) == "86%"


def _table(n: int) -> EvaluationTable:
    values = {("a", "deletion"): [0.2, 0.4][:n], ("b", "deletion"): [0.1, 0.3][:n],
              ("a", "sparseness"): [0.5, 0.7][:n], ("b", "sparseness"): [0.6, 0.2][:n]}
    results = {k: MetricResult(k[1], torch.tensor(v, dtype=torch.float64), k[1] == "sparseness")
               for k, v in values.items()}
    return EvaluationTable(["a", "b"], ["deletion", "sparseness"], results, {"a": 1.0, "b": 2.0})


def test_one_example_has_no_standard_error():
    one = _table(n=1)
    assert math.isnan(one.rows[0]["deletion_stderr"])
    assert "0.2 ± n/a (#2)" in one.to_markdown() and "± 0 " not in one.to_markdown()
    assert "± n/a" in one.to_html()
    assert one.to_csv().splitlines()[1] == "a,1.0,0.2,,2,0.5,,2"
    assert one.to_dict()["rows"][0]["deletion_stderr"] is None
    two = _table(n=2)
    assert two.rows[0]["deletion_stderr"] == pytest.approx(0.1)  # std 0.1414 / sqrt(2)
    assert "0.3 ± 0.1 (#2)" in two.to_markdown()


def test_evaluation_table_round_trips_through_json():
    table = _table(n=2)
    table.notes = ["a note"]
    back = EvaluationTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back.rows == table.rows and back.notes == ["a note"] and back.best("sparseness") == "a"
    assert back.descriptions["deletion"].startswith("AUC")
    assert back.to_markdown() == table.to_markdown()
    html = report.evaluation_html(back)
    assert html.count('class="num best"') == 2 and "AUC of the target" in html
