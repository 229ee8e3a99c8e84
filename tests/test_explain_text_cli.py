"""``torchexplain explain-text`` in-process on the random-weight gpt2-tiny: text.json
holds the numbers the LLM attribution API gives on the same prompt and target, the
report shows them, and bad flags are one line naming the flag."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch

from torchexplain.attr import FeatureAblation, LayerIntegratedGradients, ShapleyValueSampling, TextTokenInput
from torchexplain.attr.llm import LLMAttribution, LLMGradientAttribution
from torchexplain.cli import main
from torchexplain.models.text import load_text_model

PROMPT = "hey"


@pytest.fixture(scope="module")
def lm():
    return load_text_model("gpt2-tiny")


class Titles(HTMLParser):
    """The title attributes of each table's cells, by data-method."""

    def __init__(self, markup: str):
        super().__init__()
        self.cells: dict[str, list[float]] = {}
        self._method = None
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("data-method"):
            self._method = attrs["data-method"]
            self.cells[self._method] = []
        elif tag == "td" and self._method and "title" in attrs:
            self.cells[self._method].append(float(attrs["title"]))


def same(saved: dict, result) -> None:
    assert saved["input_tokens"] == result.input_tokens and saved["output_tokens"] == result.output_tokens
    assert saved["seq_attr"] == pytest.approx(result.seq_attr.tolist(), abs=1e-6)
    if result.token_attr is None:
        assert saved["token_attr"] is None
    else:
        torch.testing.assert_close(torch.tensor(saved["token_attr"]), result.token_attr.cpu(), atol=1e-6, rtol=0)


def test_given_target_matches_the_api_and_the_report_shows_it(lm, tmp_path, capsys):
    model, tok = lm
    out = tmp_path / "out"
    code = main(["explain-text", "--model", "gpt2-tiny", "--prompt", PROMPT, "--target", " ok", "--method",
                 "feature-ablation", "--method", "shapley_sampling", "--n-samples", "3", "--seed", "5",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "text.json").read_text())
    assert saved["target"] == " ok" and not saved["generated"] and saved["prompt"] == PROMPT
    assert list(saved["methods"]) == ["feature-ablation", "shapley-sampling"]
    inp = TextTokenInput(PROMPT, tok)
    ablation = LLMAttribution(FeatureAblation(model), tok).attribute(inp, target=" ok")
    sampled = LLMAttribution(ShapleyValueSampling(model), tok).attribute(inp, target=" ok", n_samples=3, seed=5)
    same(saved["methods"]["feature-ablation"], ablation)
    same(saved["methods"]["shapley-sampling"], sampled)
    assert saved["methods"]["feature-ablation"]["input_tokens"] == ["h", "e", "y"]
    page = (out / "report.html").read_text()
    titles = Titles(page).cells
    for name, result in (("feature-ablation", ablation), ("shapley-sampling", sampled)):
        expected = result.seq_attr.tolist() + result.token_attr.reshape(-1).tolist()
        assert titles[name] == pytest.approx(expected, abs=1e-6)
    assert "prompt: <span>hey</span>" in page and "target: <span> ok</span>" in page
    assert page.count("\u2423") >= 1  # the target's space token, made visible
    top = max(zip(ablation.seq_attr.tolist(), "hey"), key=lambda p: abs(p[0]))
    assert "feature-ablation" in printed and f"{top[1]} {top[0]:+.3g}" in printed and "report:" in printed


def test_generated_target_matches_the_api_with_gen_args(lm, tmp_path):
    model, tok = lm
    out = tmp_path / "gen"
    code = main(["explain-text", "--model", "gpt2-tiny", "--prompt", PROMPT, "--method", "integrated-gradients,lime",
                 "--max-new-tokens", "2", "--n-samples", "6", "--out", str(out), "--quiet"])
    assert code == 0
    saved = json.loads((out / "text.json").read_text())
    assert saved["generated"]
    inp = TextTokenInput(PROMPT, tok)
    gen = {"max_new_tokens": 2, "do_sample": False}
    ig = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tok).attribute(
        inp, gen_args=gen)
    assert len(ig.output_tokens) == 2 and saved["target"] == "".join(ig.output_tokens)
    same(saved["methods"]["integrated-gradients"], ig)
    lime = saved["methods"]["lime"]
    assert lime["token_attr"] is None and lime["output_tokens"] == ig.output_tokens and len(lime["seq_attr"]) == 3
    assert lime["seconds"] > 0
    # the same files again only with --overwrite
    args = ["explain-text", "--model", "gpt2-tiny", "--prompt", PROMPT, "--target", "!", "--method", "lime",
            "--n-samples", "4", "--out", str(out), "--quiet"]
    assert main(args) == 1
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((out / "text.json").read_text())["target"] == "!"


def test_lrp_equals_the_api(lm, tmp_path):
    from torchexplain.attr import LayerLRP

    model, tok = lm
    expected = LLMGradientAttribution(LayerLRP(model, model.get_input_embeddings()), tok).attribute(
        TextTokenInput(PROMPT, tok), target="!")
    out = tmp_path / "lrp"
    assert main(["explain-text", "--model", "gpt2-tiny", "--prompt", PROMPT, "--target", "!", "--method", "lrp",
                 "--out", str(out), "--quiet"]) == 0
    same(json.loads((out / "text.json").read_text())["methods"]["lrp"], expected)


def one_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("flags, code, message", [
    (["--model", "gpt2-tiny", "--method", "magic"], 2, "--method: unknown method 'magic'; choose from "
                                                       "feature-ablation, shapley-sampling"),
    (["--model", "gpt2-tiny", "--method", " , "], 2, "--method: no method given"),
    (["--model", "gpt-17", "--method", "lime"], 1, "--model: expected one of ['gpt2-tiny', 'llama-tiny'] or a local "
                                                   "Hugging Face model directory; got 'gpt-17'"),
    (["--model", "gpt2-tiny", "--method", "lime", "--max-new-tokens", "0"], 1, "--max-new-tokens must be a positive"),
    (["--model", "gpt2-tiny", "--method", "lime", "--n-samples", "-1"], 1, "--n-samples must be a positive"),
])
def test_bad_flags_are_one_line_naming_the_flag(tmp_path, capsys, flags, code, message):
    assert main(["explain-text", "--prompt", PROMPT, *flags, "--out", str(tmp_path / "x")]) == code
    line = one_line(capsys)
    assert line.startswith("torchexplain: error: ") and message in line, line
    assert not (tmp_path / "x" / "text.json").exists()


def test_missing_prompt_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["explain-text", "--model", "gpt2-tiny", "--method", "lime"])
    assert stop.value.code == 2 and "--prompt" in capsys.readouterr().err


def test_method_names_are_comma_separated_or_repeated_once_each():
    from torchexplain.explain_text import ALL, METHODS, method_names

    assert method_names(["lime,feature_ablation", "LIME", "kernel-shap"]) == ["lime", "feature-ablation",
                                                                            "kernel-shap"]
    assert method_names(["lime", "all"]) == list(ALL) and set(ALL) <= set(METHODS)
    assert method_names(["all,lrp"]) == list(METHODS) == list(ALL)


def test_a_method_failing_is_one_line_naming_it(tmp_path, capsys):
    args = ["explain-text", "--model", "gpt2-tiny", "--prompt", "x" * 21, "--target", "!", "--method", "shapley",
            "--out", str(tmp_path)]
    assert main(args) == 1
    assert "--method shapley: ShapleyValues enumerates 2**n_features coalitions" in one_line(capsys)
