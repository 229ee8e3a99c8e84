"""What a reader needs to know to read a method's numbers: one line per method on its
convergence delta, and which maps are shown centred."""

from __future__ import annotations

#: what the convergence delta means, per method (shown beside its size)
DELTA_NOTES = {
    "integrated_gradients": "The error of the Riemann sum that approximates the path integral; more n_steps "
                            "make it smaller.",
    "gradient_shap": "A sampling estimate: each draw takes the gradient at one random point on the path to one "
                     "random baseline, so single draws miss by far more; this is the average over the draws, "
                     "against F(x) minus the mean F of the drawn baselines, and it shrinks with n_samples.",
    "deeplift": "DeepLIFT's multipliers add up to F(x) - F(baseline) exactly (summation-to-delta); what is left "
                "is rounding, or a layer without a DeepLIFT rule.",
    "deeplift_shap": "DeepLIFT against each baseline, averaged: exact up to rounding, against F(x) minus the mean "
                     "F of the baselines.",
    "lrp": "LRP-epsilon does not conserve relevance: biases and the epsilon stabiliser absorb part of F(x), so "
           "a large value is expected, not a failure. Measured against F(x): LRP has no baseline.",
}
DEFAULT_DELTA_NOTE = "sum(attributions) - (F(x) - F(baseline)), as Captum defines it for this method."

#: maps shown minus their mean, and why
CENTRED = {
    "rise": "RISE scores each pixel by the model's mean output over the random masks that keep it, so every "
            "pixel carries the same large offset (the mean output over all masks); the map is shown minus its "
            "mean, so the colours say where keeping a pixel raises or lowers the score.",
}


def delta_note(method: str) -> str:
    return DELTA_NOTES.get(method, DEFAULT_DELTA_NOTE)


def description(method: str) -> str:
    """The registry's one-line description of ``method`` ("" when it has none)."""
    try:
        from ..methods import resolve

        return resolve(method).description
    except (ValueError, TypeError, ImportError):
        return ""
