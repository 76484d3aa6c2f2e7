from __future__ import annotations

import numpy as np
import pytest

from facegen.latent.disentanglement import dci, disentanglement_scores, mig, mig_per_factor, sap

DISCRETE = [True, True, True, False]  # two binary factors, one with 3 classes, one continuous


def factors(n: int = 1500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 3, n),
                     rng.uniform(-1, 1, n)], 1).astype(float)


def aligned_codes(f: np.ndarray, seed: int = 1) -> np.ndarray:
    """One code dimension per factor (plus an unused dimension), small noise."""
    rng = np.random.default_rng(seed)
    standard = (f - f.mean(0)) / f.std(0)
    codes = np.concatenate([standard, 0.3 * rng.standard_normal((len(f), 1))], 1)
    return codes + 0.05 * rng.standard_normal(codes.shape)


def entangled_codes(f: np.ndarray, seed: int = 1) -> np.ndarray:
    """A Hadamard rotation: every code dimension is an equal mix of every factor."""
    rng = np.random.default_rng(seed)
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2
    return (f - f.mean(0)) / f.std(0) @ hadamard + 0.05 * rng.standard_normal((len(f), 4))


def test_axis_aligned_codes_score_near_one():
    f = factors()
    scores = disentanglement_scores(aligned_codes(f), f, DISCRETE)
    assert scores["mig"] >= 0.8
    assert scores["dci_disentanglement"] >= 0.9 and scores["dci_completeness"] >= 0.9
    assert scores["dci_informativeness"] >= 0.95
    assert scores["sap"] >= 0.8


def test_a_mixing_rotation_scores_near_zero_but_stays_informative():
    f = factors()
    scores = disentanglement_scores(entangled_codes(f), f, DISCRETE)
    assert scores["mig"] < 0.1 and scores["sap"] < 0.1
    assert scores["dci_disentanglement"] < 0.2 and scores["dci_completeness"] < 0.2
    assert scores["dci_informativeness"] >= 0.95  # the information is all there, just not one factor per code


def test_gradient_boosted_importances_agree():
    f = factors(n=600)
    good, bad = dci(aligned_codes(f), f, DISCRETE, estimator="gbt"), dci(entangled_codes(f), f, DISCRETE,
                                                                         estimator="gbt")
    assert good.disentanglement >= 0.9 and good.completeness >= 0.9
    assert bad.disentanglement < 0.2 and good.importance.shape == (5, 4)


def test_swapping_code_dimensions_does_not_matter_but_merging_them_does():
    f = factors(n=800)
    codes = aligned_codes(f)
    assert mig(codes[:, ::-1], f, DISCRETE) == pytest.approx(mig(codes, f, DISCRETE))
    merged = codes.copy()
    merged[:, 0] = codes[:, 0] + codes[:, 1]  # one dimension now carries two factors...
    merged[:, 1] = 0.3 * np.random.default_rng(2).standard_normal(len(f))  # ...and another carries none
    assert mig(merged, f, DISCRETE) < mig(codes, f, DISCRETE) - 0.2
    gaps, merged_gaps = mig_per_factor(codes, f, DISCRETE), mig_per_factor(merged, f, DISCRETE)
    assert gaps.shape == (4,) and np.mean(gaps) == pytest.approx(mig(codes, f, DISCRETE))
    assert merged_gaps[:2].max() < gaps[:2].min() - 0.2  # the two factors that now share a dimension
    assert merged_gaps[2:] == pytest.approx(gaps[2:], abs=0.05)  # the others keep theirs
    assert dci(merged, f, DISCRETE).disentanglement < dci(codes, f, DISCRETE).disentanglement - 0.1


def test_inputs_are_validated():
    f = factors(n=100)
    codes = aligned_codes(f)
    with pytest.raises(ValueError, match="share N"):
        mig(codes[:50], f, DISCRETE)
    with pytest.raises(ValueError, match="3 flags for 4 factors"):
        sap(codes, f, DISCRETE[:3])
    with pytest.raises(ValueError, match="constant"):
        mig(codes, np.zeros((100, 2)), True)
    with pytest.raises(ValueError, match="unknown DCI estimator 'forest'"):
        dci(codes, f, DISCRETE, estimator="forest")
    with pytest.raises(ValueError, match="at least 2"):
        dci(codes[:, :1], f, DISCRETE)
