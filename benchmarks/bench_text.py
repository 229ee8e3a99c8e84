#!/usr/bin/env python
"""LLM attribution: torchexplain against Captum 0.9 on a tiny random GPT-2 (issue 17).

Model: ``torchexplain.models.text.tiny_gpt2(layers=4, width=256, heads=4, context=128)``
(random weights, seed 0, eval, CPU) with ``ByteTokenizer()``; a prompt of 40 tokens
(``TextTokenInput``, baseline id 0) and a target of 10 tokens given as text, so that
both libraries score the same target. Jobs, each built the same way from
``torchexplain.attr`` and ``captum.attr``:

* fa: ``LLMAttribution(FeatureAblation(model), tok)``;
* svs: ``LLMAttribution(ShapleyValueSampling(model), tok)``, ``n_samples=20``
  (``--quick``: 3), torch's global generator seeded before every call, so that both
  libraries draw the same feature orders;
* lig: ``LLMGradientAttribution(LayerIntegratedGradients(model,
  model.get_input_embeddings()), tok)``, ``n_steps=20``.

The perturbation jobs run four sides: ours and Captum, each with
``use_cached_outputs=True`` (both libraries' default) and ``False``. Captum's cached
path under transformers 5 feeds the whole sequence again at every target token on top
of its growing cache: the positions run past the model's 128 and it raises
(``IndexError``); it is then timed on a copy of the model with a context of
``--captum-context`` positions (default 512; the same weights, the first 128 position
embeddings copied, so the uncached logits are equal), where it runs and gives wrong
values. The headline ratio is ours (default) against Captum's default; the rows
against Captum's uncached path follow. Every side works on its own copy of the model.

Per job: one warm-up call of every side (it also gives the values compared and, with a
forward pre-hook on the GPT-2 body, the forwards and tokens fed), then ``--repeats``
timed rounds (default 5; ``--quick``: 2), the order of the sides reversed every round
(ours, captum, ours, captum, ...). A side whose warm-up took under 0.5 s runs as many
times per round as fill about 0.5 s; the table reports medians and the number of timed
calls. The floor is the passes the method cannot avoid, measured with the model alone
(parameters frozen, best of max(3, repeats) runs, 3 for runs over a second):

* fa: 41 perturbed prompts (the prompt and its 40 one-token ablations), each one
  teacher-forced inference-mode forward of 49 tokens, in even blocks of at most 8, 16,
  32 or all 41 rows, whichever is fastest;
* svs: ``1 + n_samples * 40`` such forwards, blocks of at most 16, 32 or 64 rows;
* lig: the faster of one forward of 20 steps x 49 tokens with ten input-gradient
  backward passes (one per target token) and ten forward+backward passes of 20 x 49
  rows (200 rows, in blocks of 20 or 40).

    python benchmarks/bench_text.py            # 5 rounds (about 11 minutes here)
    python benchmarks/bench_text.py --quick    # 2 rounds, n_samples=3 (under 2 minutes)

The last line is ``worst ratio vs captum: X``, the largest ours/Captum-default ratio.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Optional

import torch
from bench_gradient import busy_warning, cpu_count, cpu_name, fmt, short_error

SEED = 0
LAYERS, WIDTH, HEADS, CONTEXT = 4, 256, 4, 128
PROMPT = "The quick brown fox jumps over the lazy "  # 40 byte tokens
TARGET = "dog sleeps"  # 10 byte tokens
SVS_SAMPLES, QUICK_SVS_SAMPLES = 20, 3
IG_STEPS = 20
GOAL = 0.5  # ours / Captum's default, for every job
SHORT_CALL_S = 0.5
MAX_CALLS_PER_ROUND = 20


# --------------------------------------------------------------------------- machine


def loads() -> Optional[tuple]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def load_text(values: Optional[tuple]) -> str:
    if values is None:
        return "load average unavailable"
    return "load average (1, 5, 15 min) " + ", ".join(f"{v:.2f}" for v in values)


# --------------------------------------------------------------------------- model and counting


def build_models(twin_context: int):
    from torchexplain.models.text import ByteTokenizer, tiny_gpt2

    tok = ByteTokenizer()
    model = tiny_gpt2(layers=LAYERS, width=WIDTH, heads=HEADS, context=CONTEXT, seed=SEED)
    twin = None
    if twin_context > CONTEXT:
        twin = tiny_gpt2(layers=LAYERS, width=WIDTH, heads=HEADS, context=twin_context, seed=SEED)
        mine, theirs = model.state_dict(), twin.state_dict()
        with torch.no_grad():
            for key, value in mine.items():
                if theirs[key].shape == value.shape:
                    theirs[key].copy_(value)
                else:  # the position embeddings: the first CONTEXT rows, the rest as drawn
                    theirs[key][: value.shape[0]].copy_(value)
    return model, twin, tok


class Fed:
    """Counts the forwards of the GPT-2 body and the token positions fed to it (a hook
    on ``model.base_model``: Captum calls ``model.forward`` directly, past the outer
    module's hooks)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = self.tokens = 0
        self.handle = model.base_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is not None:
            self.calls += 1
            self.tokens += x.shape[0] * x.shape[1]

    def close(self) -> str:
        self.handle.remove()
        return f"{self.calls} fwd / {self.tokens} tok"


def stacked(result) -> torch.Tensor:
    """An LLMAttributionResult's attributions as one ``(1 + T, features)`` tensor."""
    seq = result.seq_attr.reshape(1, -1).float()
    if result.token_attr is None:
        return seq
    return torch.cat([seq, result.token_attr.float()])


def largest(result) -> Optional[float]:
    return None if result is None else float(stacked(result).abs().max())


def max_diff(a, b) -> Optional[float]:
    if a is None or b is None:
        return None
    a, b = stacked(a), stacked(b)
    if a.shape != b.shape:
        return float("nan")
    return float((a - b).abs().max())


# --------------------------------------------------------------------------- sides


class Side:
    """One library with one setting, as a zero-argument call on its own model copy.
    ``fallback``: (call, model, why) to switch to when the warm-up raises."""

    def __init__(self, label: str, call: Callable, model: torch.nn.Module, fallback=None) -> None:
        self.label, self.call, self.model, self.fallback = label, call, model, fallback
        self.error: Optional[str] = None
        self.note = ""
        self.result = None
        self.fed = ""
        self.per_round = 1
        self.times: list[float] = []

    def _once(self, keep: bool = False):
        gc.collect()
        start = time.perf_counter()
        result = self.call()
        elapsed = time.perf_counter() - start
        if keep:
            self.result = result
        del result
        return elapsed

    def warm(self) -> None:
        counter = Fed(self.model)
        try:
            elapsed = self._once(keep=True)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            counter.close()
            if self.fallback is None:
                self.error = short_error(exc)
                return
            self.call, self.model, why = self.fallback
            self.fallback = None
            self.note = f"raises {short_error(exc, 60)} at context {CONTEXT}; {why}"
            self.warm()
            return
        self.fed = counter.close()
        if elapsed < SHORT_CALL_S:
            self.per_round = min(MAX_CALLS_PER_ROUND, math.ceil(SHORT_CALL_S / max(elapsed, 1e-3)))

    def round(self) -> None:
        if self.error is not None:
            return
        try:
            for _ in range(self.per_round):
                self.times.append(self._once())
        except Exception as exc:  # noqa: BLE001
            self.error = short_error(exc)

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.times) if self.times and self.error is None else None


def run_sides(sides: list[Side], repeats: int) -> None:
    for side in sides:
        side.warm()
    for r in range(repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            side.round()


# --------------------------------------------------------------------------- floors


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm
    best = math.inf
    tries = max(3, repeats)
    for i in range(tries):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if i >= 2 and best > 1.0:
            break
    return best


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def forward_floor(model, prompts: torch.Tensor, target: torch.Tensor, blocks, repeats: int):
    """Fastest teacher-forced inference-mode scoring of ``prompts`` (N, P) against
    ``target``: (seconds, block size)."""
    model = frozen(model)
    n, p = prompts.shape
    seq = torch.cat([prompts, target[:-1].expand(n, -1)], 1)

    def run(block: int):
        out = []
        with torch.inference_mode():
            for part in torch.tensor_split(seq, math.ceil(n / block)):
                lp = torch.log_softmax(model(part, use_cache=False).logits[:, p - 1:].float(), -1)
                out.append(lp.gather(-1, target.expand(part.shape[0], -1).unsqueeze(-1)).squeeze(-1))
        return out

    sizes = sorted({min(b, n) for b in blocks})
    timings = {b: best_of(lambda b=b: run(b), repeats) for b in sizes}
    block = min(timings, key=timings.get)
    return timings[block], block


def lig_floors(model, prompt: torch.Tensor, target: torch.Tensor, steps: int, repeats: int) -> dict:
    """Seconds of the two ways to do LIG's passes (see the module docstring)."""
    model = frozen(model)
    p, t_len = prompt.shape[1], target.numel()
    ids = torch.cat([prompt, target[:-1].reshape(1, -1)], 1)
    with torch.no_grad():
        embedded = model.get_input_embeddings()(ids)  # (1, L, W)
    alphas = torch.linspace(0, 1, steps).view(steps, 1, 1)

    def one_forward():
        leaf = (alphas * embedded).requires_grad_(True)
        lp = torch.log_softmax(model(inputs_embeds=leaf, use_cache=False).logits[:, p - 1:].float(), -1)
        return [torch.autograd.grad(lp[:, t, target[t]].sum(), leaf, retain_graph=t < t_len - 1)[0]
                for t in range(t_len)]

    def per_token(block: int):
        rows = steps * t_len
        token = torch.arange(rows) // steps
        out = []
        for part in torch.tensor_split(torch.arange(rows), math.ceil(rows / block)):
            leaf = (alphas[part % steps] * embedded).requires_grad_(True)
            lp = torch.log_softmax(model(inputs_embeds=leaf, use_cache=False).logits.float(), -1)
            picked = lp[torch.arange(part.numel()), p - 1 + token[part], target[token[part]]]
            out.append(torch.autograd.grad(picked.sum(), leaf)[0])
        return out

    found = {"1 fwd + 10 bwd": best_of(one_forward, repeats)}
    for block in (steps, 2 * steps):
        found[f"10 fwd+bwd (blocks of {block})"] = best_of(lambda block=block: per_token(block), repeats)
    return found


def fa_prompts(prompt: torch.Tensor) -> torch.Tensor:
    rows = [prompt[0]]
    for i in range(prompt.shape[1]):
        row = prompt[0].clone()
        row[i] = 0
        rows.append(row)
    return torch.stack(rows)


def svs_prompts(prompt: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The baseline prompt, then per feature order the prompt with one more feature present."""
    n = prompt.shape[1]
    gen = torch.Generator().manual_seed(SEED)
    rows = [torch.zeros_like(prompt[0])]
    for _ in range(n_samples):
        present = torch.zeros(n, dtype=torch.bool)
        for i in torch.randperm(n, generator=gen):
            present[i] = True
            rows.append(torch.where(present, prompt[0], torch.zeros_like(prompt[0])))
    return torch.stack(rows)


# --------------------------------------------------------------------------- jobs


def perturbation_job(method: str, kwargs: dict, model, twin, tok, repeats: int) -> dict:
    import captum.attr as ca

    import torchexplain.attr as te

    def side(label, lib, on, cached, fallback_model=None):
        copy_ = copy.deepcopy(on)

        def make(m):
            llm = lib.LLMAttribution(getattr(lib, method)(m), tok)

            def call():
                torch.manual_seed(SEED)
                return llm.attribute(lib.TextTokenInput(PROMPT, tok), target=TARGET, use_cached_outputs=cached,
                                     **kwargs)
            return call

        fallback = None
        if fallback_model is not None:
            twin_copy = copy.deepcopy(fallback_model)
            fallback = (make(twin_copy), twin_copy, f"timed on a copy with context {fallback_model.config.n_positions}")
        return Side(label, make(copy_), copy_, fallback)

    sides = {
        "ours": side("ours", te, model, True),
        "captum": side("captum", ca, model, True, twin),
        "ours_uncached": side("ours uncached", te, model, False),
        "captum_uncached": side("captum uncached", ca, model, False),
    }
    run_sides([sides["ours"], sides["captum"], sides["ours_uncached"], sides["captum_uncached"]], repeats)
    return sides


def lig_job(model, tok, repeats: int) -> dict:
    import captum.attr as ca

    import torchexplain.attr as te

    def side(label, lib):
        m = copy.deepcopy(model)
        llm = lib.LLMGradientAttribution(lib.LayerIntegratedGradients(m, m.get_input_embeddings()), tok)
        return Side(label, lambda: llm.attribute(lib.TextTokenInput(PROMPT, tok), target=TARGET, n_steps=IG_STEPS), m)

    sides = {"ours": side("ours", te), "captum": side("captum", ca)}
    run_sides([sides["ours"], sides["captum"]], repeats)
    return sides


# --------------------------------------------------------------------------- report


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def calls(*sides: Side) -> str:
    return "timed calls " + "/".join(str(len(s.times)) for s in sides)


def table(rows: list[list[str]]) -> None:
    header = ["job", "ours s", "captum s", "ours/captum", "target", "floor s", "ours/floor", "note"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"2 repeats, n_samples={QUICK_SVS_SAMPLES} for Shapley")
    p.add_argument("--repeats", type=int, help="timed rounds per job (default 5; 2 with --quick)")
    p.add_argument("--svs-samples", type=int, help=f"ShapleyValueSampling n_samples (default {SVS_SAMPLES})")
    p.add_argument("--jobs", default="fa,svs,lig", help="comma-separated: fa, svs, lig (default all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--captum-context", type=int, default=512,
                   help="context of the model copy Captum's cached path is timed on when it fails at 128 "
                        "(0: do not time it)")
    p.add_argument("--show-warnings", action="store_true", help="do not silence library warnings")
    args = p.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    svs_samples = args.svs_samples or (QUICK_SVS_SAMPLES if args.quick else SVS_SAMPLES)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if repeats < 1 or svs_samples < 1 or not set(jobs) <= {"fa", "svs", "lig"} or not jobs:
        p.error("--repeats and --svs-samples must be at least 1; --jobs takes fa, svs, lig")
    if not args.show_warnings:
        warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    import captum
    import transformers

    import torchexplain

    start_load = loads()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, captum {captum.__version__}, "
          f"torchexplain {torchexplain.__version__}; {cpu_name()}, {cpu_count()} CPUs, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'quick' if args.quick else 'full'} run: {repeats} round(s) per job, ShapleyValueSampling "
          f"n_samples={svs_samples}, LayerIntegratedGradients n_steps={IG_STEPS}")
    print(f"at start: {load_text(start_load)}")
    warning = busy_warning(start_load and start_load[0], 0.0, cpu_count())
    if warning:
        print(warning)

    model, twin, tok = build_models(args.captum_context)
    prompt = torch.tensor([tok.encode(PROMPT)])
    target = torch.tensor(tok.encode(TARGET, add_special_tokens=False))
    assert prompt.shape[1] == 40 and target.numel() == 10, (prompt.shape, target.shape)
    print(f"model tiny_gpt2(layers={LAYERS}, width={WIDTH}, heads={HEADS}, context={CONTEXT}), "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; prompt {PROMPT!r} "
          f"({prompt.shape[1]} tokens), target {TARGET!r} ({target.numel()} tokens)")
    if twin is not None:
        ids = torch.cat([prompt, target.reshape(1, -1)], 1)
        with torch.no_grad():
            same = float((model(ids).logits - twin(ids).logits).abs().max())
        print(f"context-{args.captum_context} copy for Captum's cached path: max |logits - base logits| on the "
              f"prompt and target = {same:.1e}")
    print(flush=True)

    started = time.perf_counter()
    rows: list[list[str]] = []
    values: list[str] = []
    cache_lines: list[str] = []
    fed_lines: list[str] = []
    headline: list[float] = []
    names = {"fa": ("FeatureAblation", "FeatureAblation", {}),
             "svs": (f"ShapleyValueSampling (n_samples={svs_samples})", "ShapleyValueSampling",
                     {"n_samples": svs_samples})}
    for job in jobs:
        if job in names:
            title, method, kwargs = names[job]
            sides = perturbation_job(method, kwargs, model, twin, tok, repeats)
            if job == "fa":
                prompts, blocks = fa_prompts(prompt), (8, 16, 32, prompt.shape[1] + 1)
            else:
                prompts, blocks = svs_prompts(prompt, svs_samples), (16, 32, 64)
            floor, block = forward_floor(model, prompts, target, blocks, repeats)
            floor_note = f"floor: {prompts.shape[0]} fwd x 49 tok, blocks of {block}"
            ours, cap, cap_u = sides["ours"], sides["captum"], sides["captum_uncached"]
            r = ratio(ours.median, cap.median)
            if r is not None:
                headline.append(r)
            note = "; ".join((f"Captum default: {cap.error or cap.note or 'ran'}", calls(ours, cap), floor_note))
            rows.append([title, fmt(ours.median, ".3f"), fmt(cap.median, ".3f"), fmt(r, ".3f"),
                         f"<= {GOAL} " + ("-" if r is None else "met" if r <= GOAL else "MISSED"),
                         f"{floor:.3f}", fmt(ratio(ours.median, floor), ".2f"), note])
            r_u = ratio(ours.median, cap_u.median)
            rows.append([f"{title} vs Captum uncached", fmt(ours.median, ".3f"), fmt(cap_u.median, ".3f"),
                         fmt(r_u, ".3f"), "", f"{floor:.3f}", fmt(ratio(ours.median, floor), ".2f"),
                         calls(ours, cap_u) + (f"; {cap_u.error}" if cap_u.error else "")])
            values.append(f"{title}: max |ours - Captum uncached| = {fmt(max_diff(ours.result, cap_u.result), '.1e')}, "
                          f"max |ours - Captum default| = {fmt(max_diff(ours.result, cap.result), '.1e')}"
                          f"{' (on the context-' + str(args.captum_context) + ' copy)' if cap.note else ''}"
                          f"{' (' + cap.error + ')' if cap.error else ''}; largest |attribution| "
                          f"{fmt(largest(ours.result), '.3f')}")
            ou = sides["ours_uncached"]
            cache_lines.append(
                f"| {title} | {fmt(ours.median, '.3f')} | {fmt(ou.median, '.3f')} | "
                f"{fmt(ratio(ou.median, ours.median), '.2f')} | {fmt(max_diff(ours.result, ou.result), '.1e')} | "
                f"{ours.fed} | {ou.fed} | {fmt(ratio(ou.median, cap_u.median), '.3f')} |")
            fed_lines.append(f"{title}: ours {ours.fed}, ours uncached {ou.fed}, Captum default {cap.fed or '-'}, "
                             f"Captum uncached {cap_u.fed or '-'}")
        else:
            title = f"LayerIntegratedGradients (n_steps={IG_STEPS})"
            sides = lig_job(model, tok, repeats)
            floors = lig_floors(model, prompt, target, IG_STEPS, repeats)
            way = min(floors, key=floors.get)
            floor = floors[way]
            ours, cap = sides["ours"], sides["captum"]
            r = ratio(ours.median, cap.median)
            if r is not None:
                headline.append(r)
            note = (f"{calls(ours, cap)}; floor: {way}; "
                    + ", ".join(f"{k} {v:.3f} s" for k, v in floors.items())
                    + (f"; Captum: {cap.error}" if cap.error else ""))
            rows.append([title, fmt(ours.median, ".3f"), fmt(cap.median, ".3f"), fmt(r, ".3f"),
                         f"<= {GOAL} " + ("-" if r is None else "met" if r <= GOAL else "MISSED"),
                         f"{floor:.3f}", fmt(ratio(ours.median, floor), ".2f"), note])
            values.append(f"{title}: max |ours - Captum| = {fmt(max_diff(ours.result, cap.result), '.1e')}; largest "
                          f"|attribution| {fmt(largest(ours.result), '.3f')}")
            fed_lines.append(f"{title}: ours {ours.fed}, Captum {cap.fed or '-'}")
        for s in sides.values():
            if s.error:
                values.append(f"{title}: {s.label} failed: {s.error}")
        print(f"[{time.perf_counter() - started:6.1f} s] {title} done; {load_text(loads())}", flush=True)

    print()
    table(rows)
    print()
    print("Values (attributions of the sequence and of every target token; seconds are medians of one call):")
    for line in values:
        print("- " + line)
    if cache_lines:
        print()
        print("Our shared-prefix key-value cache (use_cached_outputs=True, the default, against False):")
        print("| job | cached s | uncached s | speed-up | max abs diff | fed cached | fed uncached "
              "| uncached / Captum uncached |")
        print("|---|---|---|---|---|---|---|---|")
        for line in cache_lines:
            print(line)
    print()
    print("Forwards of the GPT-2 body and token positions fed in one call (warm-up call):")
    for line in fed_lines:
        print("- " + line)
    end_load = loads()
    print()
    print(f"total {time.perf_counter() - started:.1f} s; at start: {load_text(start_load)}; at end: "
          f"{load_text(end_load)}; {torch.get_num_threads()} thread(s) on {cpu_count()} CPUs")
    warning = busy_warning(end_load and end_load[0], float(torch.get_num_threads()), cpu_count())
    if warning:
        print(warning)
    print(f"worst ratio vs captum: {max(headline) if headline else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
