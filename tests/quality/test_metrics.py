"""Known-answer tests for facegen.quality: every metric against a value worked out by hand or in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegen.quality import (
    attribute_agreement,
    attribute_tv,
    attribute_tv_per_attribute,
    balanced_accuracy,
    code_class_accuracy,
    counterfactual_fidelity,
    drift_of_others,
    drift_per_attribute,
    flip_rate,
    meets_editing_target,
    frechet_distance,
    mean_and_spread,
    psnr,
    psnr_per_image,
    sharpness,
    ssim,
    ssim_per_image,
    within_one_bin_accuracy,
)


def _images(n=4, side=24, seed=0) -> torch.Tensor:
    """Smooth-ish faces stand-in in [-0.5, 0.5], so offsets and noise stay inside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, side // 4, side // 4, generator=g) - 0.5
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


# --- images -------------------------------------------------------------------------------------------------

def test_identical_images_give_infinite_psnr_and_unit_ssim():
    a = _images()
    assert psnr(a, a.clone()) == math.inf
    assert torch.isinf(psnr_per_image(a, a)).all()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(ssim_per_image(a, a), torch.ones(4, dtype=torch.float64))


def test_sharpness_is_one_for_copies_below_one_for_blur_and_zero_for_flat_images():
    a = _images(side=32)
    assert sharpness(a, a.clone()) == pytest.approx(1.0, abs=1e-12)
    assert sharpness(a + 0.1, a) == pytest.approx(1.0, abs=1e-6)  # a brightness shift is not detail
    blurred = torch.nn.functional.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)
    assert 0 < sharpness(blurred, a) < 0.9
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert 0 < sharpness(torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1), noise) < 0.1
    assert sharpness(torch.zeros_like(a), a) == 0.0
    # a checkerboard of +-d has Laplacian +-8d inside the border: energy 64 d^2 on the [0, 1] scale
    d = 0.1
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1.0  # +-1
    checker = (board * 2 * d).expand(1, 3, 32, 32)  # +-d on the [0, 1] scale (the scale halves [-1, 1])
    assert sharpness(checker, a[:1]) * float(_laplacian_energy(a[:1])) == pytest.approx(64 * d * d, rel=1e-6)
    assert math.isnan(sharpness(a, torch.zeros_like(a)))


def _laplacian_energy(images: torch.Tensor) -> torch.Tensor:
    unit = (images.double() + 1) / 2
    lap = (unit[..., :-2, 1:-1] + unit[..., 2:, 1:-1] + unit[..., 1:-1, :-2] + unit[..., 1:-1, 2:]
           - 4 * unit[..., 1:-1, 1:-1])
    return lap.pow(2).mean()


def test_psnr_of_a_constant_offset_matches_the_closed_form():
    a = _images().double()  # float64 so the offset itself is not rounded
    # An offset of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert psnr(a, a + 0.2) == pytest.approx(20.0, abs=1e-9)
    assert torch.allclose(psnr_per_image(a, a + 0.2), torch.full((4,), 20.0, dtype=torch.float64))
    # Offsets delta_i per image: pooled PSNR = -10 log10(mean((delta_i / 2)^2)).
    deltas = torch.tensor([0.0, 0.1, 0.2, 0.4])
    b = a + deltas[:, None, None, None]
    expected = -10 * math.log10(float(((deltas / 2) ** 2).double().mean()))
    assert psnr(a, b) == pytest.approx(expected, abs=1e-6)  # finite although the first pair is identical
    assert math.isinf(psnr_per_image(a, b)[0]) and math.isfinite(psnr_per_image(a, b)[1])


def test_more_noise_lowers_psnr_and_ssim_monotonically():
    a = _images(side=32)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    levels = [0.01, 0.03, 0.1, 0.3]
    psnrs = [psnr(a, a + s * noise) for s in levels]
    ssims = [ssim(a, a + s * noise) for s in levels]
    assert all(x > y for x, y in zip(psnrs, psnrs[1:]))
    assert all(x > y for x, y in zip(ssims, ssims[1:]))
    assert 0 < ssims[-1] < ssims[0] < 1


def test_ssim_of_constant_images_matches_the_closed_form():
    # No variance anywhere: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), here mu 0.5 and 0.7 on [0, 1].
    a, b = torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 0.4, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.5 * 0.7 + c1) / (0.5**2 + 0.7**2 + c1), rel=1e-9)


def test_ssim_agrees_with_the_training_loss_ssim_at_the_standard_window():
    losses = pytest.importorskip("facegen.models.losses")
    a = _images(side=32).double()
    b = a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(ssim_per_image(a, b), losses.ssim_per_image(b, a, window=11, sigma=1.5), atol=1e-10)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# --- Fréchet distance ---------------------------------------------------------------------------------------

def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(x), x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_shift_is_its_squared_norm():
    rng = np.random.default_rng(1)
    m = np.array([1.5, -1.0, 0.0, 0.5])  # |m|^2 = 3.5
    x = rng.normal(size=(400, 4))
    assert frechet_distance(x, x + m) == pytest.approx(3.5, rel=1e-9)  # same sample shifted: exact
    # Independent samples of N(0, I) and N(m, I): |m|^2 up to sampling error (~0.03 at this N).
    y = rng.normal(size=(20000, 4)) + m
    assert frechet_distance(rng.normal(size=(20000, 4)), y) == pytest.approx(3.5, abs=0.1)


def test_frechet_distance_of_a_scaled_set_matches_the_closed_form():
    # b = c a gives mu_b = c mu_a, S_b = c^2 S_a, (S_a S_b)^(1/2) = c S_a: FD = (1 - c)^2 (|mu_a|^2 + tr S_a).
    x = np.random.default_rng(2).normal(size=(300, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0]) + 0.3
    c = 2.0
    expected = (1 - c) ** 2 * (x.mean(0) @ x.mean(0) + np.trace(np.cov(x, rowvar=False)))
    assert frechet_distance(x, c * x) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_and_handles_singular_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 1.0
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    d = a.mean(0) - b.mean(0)
    reference = d @ d + np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-7)
    few = rng.normal(size=(5, 20))  # N < D: rank-4 covariances
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(frechet_distance(few, rng.normal(size=(7, 20))))
    with pytest.raises(ValueError):
        frechet_distance(a, rng.normal(size=(10, 5)))


# --- attribute frequencies, judge accuracy -----------------------------------------------------------------

def test_attribute_tv_known_answers():
    a = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]])  # frequencies 0.5, 0.5, 0.5
    b = np.array([[0, 1, 1], [1, 0, 0]])  # same frequencies, other rows
    assert attribute_tv(a, b) == 0.0
    assert attribute_tv(np.ones((5, 3)), np.zeros((2, 3))) == 1.0  # complementary
    per = attribute_tv_per_attribute(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), [[0.25, 0.0], [0.25, 0.0]])
    assert np.allclose(per, [0.25, 1.0])  # probabilities: expected frequencies 0.5 vs 0.25, 1 vs 0


def test_balanced_accuracy_per_attribute_with_an_undefined_attribute():
    target = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    pred = np.array([[0.9, 0.8, 0.7], [0.2, 0.1, 0.1], [0.1, 0.6, 0.0], [0.3, 0.0, 0.2], [0.4, 0.9, 0.1]])
    per, mean = balanced_accuracy(pred, target)
    # Column 0: TPR 1/2, TNR 3/3 -> 0.75. Column 1: TPR 2/2, TNR 2/3 -> 5/6. Column 2: no positives -> NaN.
    assert per[:2] == pytest.approx([0.75, 5 / 6])
    assert math.isnan(per[2])
    assert mean == pytest.approx((0.75 + 5 / 6) / 2)
    from sklearn.metrics import balanced_accuracy_score

    for j in range(2):
        assert per[j] == pytest.approx(balanced_accuracy_score(target[:, j], pred[:, j] >= 0.5))
    assert balanced_accuracy(target, target)[1] == 1.0 and balanced_accuracy(1 - target, target)[1] == 0.0
    assert math.isnan(balanced_accuracy(pred[:, 2:], target[:, 2:])[1])


def test_attribute_agreement_is_a_ratio_of_accuracies():
    assert attribute_agreement(0.87, 0.87) == 1.0
    assert attribute_agreement(0.72, 0.9) == pytest.approx(0.8)
    # Arrays: NaN-ignoring means first, 0.7 / ((0.8 + 0.5 + 0.9) / 3).
    ratio = attribute_agreement(np.array([0.6, np.nan, 0.8]), np.array([0.8, 0.5, 0.9]))
    assert ratio == pytest.approx(0.7 / ((0.8 + 0.5 + 0.9) / 3))
    assert math.isnan(attribute_agreement(0.5, 0.0))


# --- edits --------------------------------------------------------------------------------------------------

@pytest.fixture
def edit_case():
    """20 faces, 4 attributes; edit attribute 1 to present. The 'counterfactual' has column 1 set to 1."""
    rng = np.random.default_rng(4)
    labels = (rng.random((20, 4)) < 0.5).astype(float)
    labels[:3, 1], labels[3:6, 1] = 1, 0  # both classes present in the target column
    counterfactual = labels.copy()
    counterfactual[:, 1] = 1
    return labels, counterfactual


def _judge(labels):
    """A perfect judge's probabilities (confident but not 0/1)."""
    return 0.1 + 0.8 * labels


def test_a_counterfactual_as_the_edit_flips_everything_with_infinite_fidelity(edit_case):
    labels, counterfactual = edit_case
    assert flip_rate(_judge(counterfactual), labels, target=1, value=1) == 1.0
    assert drift_of_others(_judge(labels), _judge(counterfactual), target=1) == 0.0
    images = _images(n=20, side=16)
    fidelity = counterfactual_fidelity(images, images.clone())
    assert fidelity["psnr"] == math.inf and fidelity["ssim"] == pytest.approx(1.0)
    assert counterfactual_fidelity(images, images + 0.2)["psnr"] == pytest.approx(20.0)


def test_an_edit_that_changes_nothing_flips_nothing(edit_case):
    labels, _ = edit_case
    assert flip_rate(_judge(labels), labels, target=1, value=1) == 0.0
    assert flip_rate(_judge(labels), labels, target=1, value=0) == 0.0  # the other direction too
    assert flip_rate(_judge(1 - labels), labels, target=1, value=0) == 1.0


def test_flip_rate_counts_only_faces_without_the_target_by_ground_truth():
    labels = np.array([[0.0], [0.0], [0.0], [1.0]])
    edited = np.array([[0.9], [0.2], [0.7], [0.1]])  # the last face already had it: not eligible
    assert flip_rate(edited, labels, target=0) == pytest.approx(2 / 3)
    assert math.isnan(flip_rate(edited, np.ones((4, 1)), target=0))


def test_drift_is_the_fraction_of_changed_judgements_over_other_attributes(edit_case):
    labels, counterfactual = edit_case
    edited = counterfactual.copy()
    edited[:3, 2] = 1 - edited[:3, 2]  # 3 of 20 faces change attribute 2
    per = drift_per_attribute(_judge(labels), _judge(edited), target=1)
    assert math.isnan(per[1]) and per[[0, 2, 3]] == pytest.approx([0.0, 3 / 20, 0.0])
    assert drift_of_others(_judge(labels), _judge(edited), target=1) == pytest.approx(3 / 20 / 3)
    assert math.isnan(drift_of_others(labels[:, :1], labels[:, :1], target=0))


def test_drift_leaves_out_the_labels_the_true_edit_changes(edit_case):
    labels, counterfactual = edit_case
    counterfactual[:10, 3] = 1 - labels[:10, 3]  # the renderer's rule changes attribute 3 on half the faces
    held = labels == counterfactual
    # An edit that does exactly what the renderer does drifts nothing; counted naively, attribute 3 drifts 50%.
    assert drift_of_others(_judge(labels), _judge(counterfactual), target=1, held=held) == 0.0
    assert drift_of_others(_judge(labels), _judge(counterfactual), target=1) == pytest.approx(0.5 / 3)
    # Attribute 3 is still counted on the faces whose label the edit keeps.
    edited = counterfactual.copy()
    edited[10:15, 3] = 1 - edited[10:15, 3]
    per = drift_per_attribute(_judge(labels), _judge(edited), target=1, held=held)
    assert per[3] == pytest.approx(5 / 10) and per[[0, 2]] == pytest.approx([0.0, 0.0]) and math.isnan(per[1])
    held[:, 2] = False  # an attribute no face holds has no drift figure
    assert math.isnan(drift_per_attribute(_judge(labels), _judge(edited), target=1, held=held)[2])
    with pytest.raises(ValueError, match="held"):
        drift_per_attribute(_judge(labels), _judge(edited), target=1, held=held[:, :2])


def test_the_editing_target_needs_flip_drift_and_fidelity_together():
    row = {"flip_rate": 0.95, "drift": 0.03, "fidelity_psnr": 23.0, "recon_psnr": 24.5}
    assert meets_editing_target(row)
    assert not meets_editing_target({**row, "flip_rate": 0.85})
    assert not meets_editing_target({**row, "drift": 0.06})
    assert not meets_editing_target({**row, "fidelity_psnr": 22.0})  # 2.5 dB below the reconstruction
    assert not meets_editing_target({**row, "drift": None}) and not meets_editing_target({"flip_rate": 1.0})


# --- codes, bins, seeds -------------------------------------------------------------------------------------

def test_permuted_codes_are_fully_accurate():
    labels = np.random.default_rng(5).integers(0, 5, size=200)
    permutation = np.array([3, 0, 4, 1, 2])
    assert code_class_accuracy(permutation[labels] * 7 + 2, labels) == 1.0  # non-contiguous code values
    assert code_class_accuracy(torch.eye(5)[permutation[labels]], torch.from_numpy(labels)) == 1.0  # one-hots


def test_random_codes_score_near_chance():
    rng = np.random.default_rng(6)
    accuracy = code_class_accuracy(rng.integers(0, 10, size=6000), rng.integers(0, 10, size=6000))
    assert 0.09 < accuracy < 0.13


def test_code_accuracy_with_more_or_fewer_codes_than_classes_and_unlabelled_rows():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    split = np.array([0, 0, 0, 3, 1, 1, 1, 1, 2, 2, 2, 2])  # class 0 split over codes 0 and 3
    assert code_class_accuracy(split, labels) == pytest.approx(11 / 12)
    merged = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])  # classes 1 and 2 share a code
    assert code_class_accuracy(merged, labels) == pytest.approx(8 / 12)
    with_unlabelled = np.append(labels, [-1, -1])
    assert code_class_accuracy(np.append(split, [5, 6]), with_unlabelled) == pytest.approx(11 / 12)
    assert math.isnan(code_class_accuracy([0, 1], [-1, -1]))


def test_within_one_bin_accuracy_known_example():
    pred, true = [0, 2, 5, 3, 1, 4], [0, 3, 3, -1, 4, 4]
    # Labelled rows: |0-0|=0, |2-3|=1, |5-3|=2, |1-4|=3, |4-4|=0 -> 3 of 5 within one bin.
    assert within_one_bin_accuracy(pred, true) == pytest.approx(3 / 5)
    assert within_one_bin_accuracy(torch.tensor(true), torch.tensor(true)) == 1.0


def test_mean_and_spread_over_seeds():
    spread = mean_and_spread([1.0, 2.0, 3.0, 4.0])
    assert spread.mean == 2.5 and spread.min == 1.0 and spread.max == 4.0
    assert spread.std == pytest.approx(math.sqrt(5 / 3))  # sample standard deviation (ddof 1)
    mean, std, low, high = mean_and_spread(torch.tensor([0.7]))
    assert (mean, low, high) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7)) and math.isnan(std)
    with pytest.raises(ValueError):
        mean_and_spread([])
