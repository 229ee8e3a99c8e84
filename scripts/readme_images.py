"""Regenerate the README's pictures from the bundled digits model (what `torchexplain demo` shows)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import torchexplain  # noqa: E402
from torchexplain import models  # noqa: E402
from torchexplain.viz import figure_png  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    torch.manual_seed(0)
    model, preprocess, names = models.load("digits")
    paths = [models.sample_images()[i] for i in (2, 5, 8)]
    x = torch.stack([preprocess(p) for p in paths])
    families = {
        "gradient_methods.png": ["saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "smoothgrad",
                                 "guided_backprop", "deconvolution", "deeplift", "deeplift_shap", "lrp"],
        "perturbation_methods.png": ["occlusion", "feature_ablation", "feature_permutation", "shapley_value_sampling",
                                     "shapley_values", "kernel_shap", "lime", "rise"],
    }
    OUT.mkdir(exist_ok=True)
    for filename, methods in families.items():
        result = torchexplain.explain(model, x, method=methods, class_names=names, mean=models.MEAN, std=models.STD)
        (OUT / filename).write_bytes(figure_png(result.plot()))


if __name__ == "__main__":
    main()
