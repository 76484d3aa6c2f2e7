"""Quality metrics: image fidelity (PSNR, SSIM, sharpness), distribution distance (Fréchet distance between feature
Gaussians, attribute-frequency total variation), judge scores (balanced accuracy, agreement), edit scores
(flip rate, drift of other attributes, counterfactual fidelity), categorical-code and age-bin accuracy, and
mean/spread over seeds.

Pure functions of tensors and arrays: PyTorch, numpy and scipy only; no Ray, no models, no I/O. Images are
(N, 3, H, W) float in [-1, 1]; every image metric is measured on the [0, 1] scale.

The benchmark built on them, ``facegen evaluate`` (:mod:`facegen.quality.benchmark`, with ``judge``,
``sections``, ``edits`` and ``tables``), loads bundles and data; importing this package does not import it.
"""

from facegen.quality.editing import (counterfactual_fidelity, drift_of_others, drift_per_attribute, flip_rate,
                                    meets_editing_target)
from facegen.quality.metrics import (
    Spread,
    attribute_agreement,
    attribute_tv,
    attribute_tv_per_attribute,
    balanced_accuracy,
    code_class_accuracy,
    frechet_distance,
    mean_and_spread,
    psnr,
    psnr_per_image,
    sharpness,
    ssim,
    ssim_per_image,
    within_one_bin_accuracy,
)

__all__ = [
    "Spread", "attribute_agreement", "attribute_tv", "attribute_tv_per_attribute", "balanced_accuracy",
    "code_class_accuracy", "counterfactual_fidelity", "drift_of_others", "drift_per_attribute", "flip_rate",
    "frechet_distance", "mean_and_spread", "meets_editing_target", "psnr", "psnr_per_image", "sharpness", "ssim",
    "ssim_per_image",
    "within_one_bin_accuracy",
]
