"""Summarizer, ClassSummarizer and the statistics: hand-derived values, torch's own
reductions, Captum on the same updates, and the batched (Chan) folds equal to
one update at a time."""

from __future__ import annotations

import pytest
import torch

from torchexplain.attr import (
    MSE,
    ClassSummarizer,
    CommonStats,
    Count,
    Max,
    Mean,
    Min,
    Stat,
    StdDev,
    Sum,
    Summarizer,
    SummarizerSingleTensor,
    Var,
)
from torchexplain.attr.summarizer import _reorder_stats

ALL = [Mean(), Var(), Var(order=1), StdDev(), StdDev(order=1), Min(), Max(), Sum(), MSE(), Count()]


def test_hand_derived_three_updates():
    s = Summarizer(ALL)
    for row in ([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 2.0, 4.0], [3.0, 3.0, 1.0, 4.0]):
        s.update(torch.tensor(row))
    out = s.summary
    third = 2.0 / 3.0
    torch.testing.assert_close(out["mean"], torch.tensor([2.0, 2.0, 2.0, 4.0]))
    torch.testing.assert_close(out["variance"], torch.tensor([third, third, third, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["sample_variance"], torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["std_dev"], torch.tensor([third, third, third, 0.0], dtype=torch.float64).sqrt())
    torch.testing.assert_close(out["mse"], torch.tensor([2.0, 2.0, 2.0, 0.0]))
    assert out["min"].tolist() == [1.0, 1.0, 1.0, 4.0] and out["max"].tolist() == [3.0, 3.0, 3.0, 4.0]
    assert out["sum"].tolist() == [6.0, 6.0, 6.0, 12.0] and out["count"] == 3
    assert list(out) == [st.name for st in ALL]  # the requested order, dependencies not shown


def test_matches_torch_reductions_and_captum():
    import captum.attr as ca

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(200, 3, 4, generator=g, dtype=torch.float64) * 1e3 + 5e3
    ours = Summarizer(ALL)
    theirs = ca.Summarizer([ca.Mean(), ca.Var(), ca.Var(order=1), ca.StdDev(), ca.StdDev(order=1), ca.Min(),
                            ca.Max(), ca.Sum(), ca.MSE(), ca.Count()])
    for x in xs:
        ours.update(x)
        theirs.update(x)
    got, ref = ours.summary, theirs.summary
    expected = {
        "mean": xs.mean(0), "variance": xs.var(0, unbiased=False), "sample_variance": xs.var(0),
        "std_dev": xs.std(0, unbiased=False), "sample_std_dev": xs.std(0), "min": xs.amin(0), "max": xs.amax(0),
        "sum": xs.sum(0), "mse": ((xs - xs.mean(0)) ** 2).sum(0),
    }
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-10, atol=1e-8)
        torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=1e-9)
        assert got[name].dtype == ref[name].dtype
    assert got["count"] == ref["count"] == 200


def test_integer_updates_give_float64_means():
    s = Summarizer([Mean(), Var(order=1), Sum()])
    for v in (1, 2, 4):
        s.update(torch.tensor([v, 2 * v]))
    out = s.summary
    assert out["mean"].dtype == torch.float64
    torch.testing.assert_close(out["mean"], torch.tensor([7 / 3, 14 / 3], dtype=torch.float64))
    torch.testing.assert_close(out["sample_variance"], torch.tensor([7 / 3, 28 / 3], dtype=torch.float64))
    assert out["sum"].tolist() == [7, 14] and out["sum"].dtype == torch.int64


def test_before_and_after_first_update():
    s = Summarizer([Var(), Mean(), Var(order=1)])
    assert s.summary is None
    s.update(torch.tensor(10.0))
    assert float(s.summary["mean"]) == 10.0
    assert float(s.summary["variance"]) == 0.0 and float(s.summary["sample_variance"]) == 0.0  # n <= order
    s.update(3)  # numbers are accepted
    assert float(s.summary["sample_variance"]) == pytest.approx(24.5)


def test_names_equality_and_dependencies():
    assert (Var(order=1).name, StdDev(order=1).name, StdDev(order=2).name) == (
        "sample_variance", "sample_std_dev", "std_dev(2)"
    )
    assert Mean(name="avg").name == "avg" and Count().name == "count"
    assert Var(order=1) == Var(order=1) and Var() != Var(order=1) and len({Mean(), Mean(), Min()}) == 2
    ordered, shown = _reorder_stats([StdDev(order=1), Min(), Mean()])
    names = [st.name for st in ordered]
    for before, after in [("count", "mean"), ("mean", "mse"), ("mse", "sample_variance"),
                          ("sample_variance", "sample_std_dev")]:
        assert names.index(before) < names.index(after)
    assert [ordered[i].name for i in shown] == ["sample_std_dev", "min", "mean"]
    s = Summarizer([Mean(), Mean(), StdDev()])
    s.update(torch.ones(2))
    assert list(s.summary) == ["mean", "std_dev"]


def test_tuple_updates_summarize_each_position():
    s = Summarizer(CommonStats())
    a, b = torch.randn(5, 2, 3), torch.randn(5, 7)
    for i in range(5):
        s.update((a[i], b[i]))
    first, second = s.summary
    torch.testing.assert_close(first["mean"], a.mean(0))
    torch.testing.assert_close(second["sample_std_dev"], b.double().std(0), rtol=1e-5, atol=1e-6)
    assert second["max"].shape == (7,)
    with pytest.raises(ValueError, match="form of the first update"):
        s.update(a[0])


class LastSeen(Stat):
    """A user statistic (Captum's pattern): the count-weighted running sum."""

    def init(self):
        self.count = self._get_stat(Count())
        self.value = None

    def update(self, x):
        self.value = x * self.count.get() if self.value is None else self.value + x * self.count.get()

    def get(self):
        return self.value


def test_row_folds_equal_single_updates():
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(9, 4, generator=g, dtype=torch.float64)
    one, block = _reorder_stats(ALL)
    single = SummarizerSingleTensor(_copy(one), block)
    folded = SummarizerSingleTensor(_copy(one), block)
    for r in rows:
        single.update(r)
    folded.update_rows(rows[:1])
    folded.update_rows(rows[1:5])
    folded.update_rows(rows[5:])
    for name, value in single.summary.items():
        got = torch.as_tensor(folded.summary[name])
        torch.testing.assert_close(got, torch.as_tensor(value), rtol=1e-12, atol=1e-12)
    # a user statistic is updated row by row, after Count, as with single updates
    stats, shown = _reorder_stats([LastSeen(), Count()])
    user = SummarizerSingleTensor(stats, shown)
    user.update_rows(torch.tensor([[1.0], [1.0], [1.0]]))
    assert user.summary["lastseen"].item() == 1 + 2 + 3


def _copy(stats):
    import copy

    return copy.deepcopy(stats)


def test_class_summaries_match_grouped_reductions():
    g = torch.Generator().manual_seed(2)
    x, extra = torch.randn(12, 3, generator=g), torch.randn(12, 2, generator=g)
    labels = [0, 1, 0, 2, 1, 0, 2, 2, 1, 0, 0, 1]
    summ = ClassSummarizer(CommonStats())
    summ.update((x[:5], extra[:5]), labels[:5])
    summ.update((x[5:], extra[5:]), torch.tensor(labels[5:]))  # tensor labels become Python ints
    assert sorted(summ.class_summaries) == [0, 1, 2]
    for label, (sx, se) in summ.class_summaries.items():
        rows = torch.tensor([i for i, lab in enumerate(labels) if lab == label])
        torch.testing.assert_close(sx["mean"], x[rows].mean(0))
        torch.testing.assert_close(sx["sample_variance"], x[rows].double().var(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(se["min"], extra[rows].amin(0))
    total_x, total_e = summ.summary
    torch.testing.assert_close(total_x["mean"], x.mean(0))
    torch.testing.assert_close(total_e["max"], extra.amax(0))


def test_class_summarizer_single_label_and_no_label():
    data = torch.randn(6, 2, 3)
    summ = ClassSummarizer(CommonStats())
    summ.update(data, "apple")
    assert list(summ.class_summaries) == ["apple"]
    torch.testing.assert_close(summ.class_summaries["apple"][0]["mean"], data.mean(0))
    torch.testing.assert_close(summ.summary[0]["mean"], data.mean(0))
    whole = ClassSummarizer([Mean()])
    whole.update(data)  # no labels: the whole tensor is one observation
    assert whole.summary["mean"].shape == (6, 2, 3) and whole.class_summaries == {}


def test_bad_arguments():
    with pytest.raises(TypeError, match="list of Stat"):
        Summarizer(Mean())
    with pytest.raises(TypeError, match=r"stats\[1\]"):
        Summarizer([Mean(), "var"])
    with pytest.raises(ValueError, match="one label"):
        ClassSummarizer([Mean()]).update(torch.zeros(4, 2), [0, 1])
    with pytest.raises(TypeError, match="must be a tensor or a number"):
        Summarizer([Mean()]).update("x")
