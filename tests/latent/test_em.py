"""The torch EM of a full-covariance Gaussian mixture lands where scikit-learn's ``GaussianMixture`` does, from
the same k-means start, and the mixture sampler built on it still draws the clusters it was fitted on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen.latent.em import fit_gaussian_mixture
from facegen.latent.mixture import GMMSampler


def _clusters(n: int = 600, d: int = 6, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    mixing = rng.normal(0, 1, (k, d, d)) * 0.5  # each cluster its own covariance
    labels = rng.integers(0, k, n)
    return centres[labels] + np.einsum("nd,nde->ne", rng.normal(0, 1, (n, d)), mixing[labels])


@pytest.mark.parametrize("reg_covar", [1e-6, 1e-3])
def test_the_same_mixture_as_scikit_learn(reg_covar):
    from sklearn.mixture import GaussianMixture

    points = _clusters()
    reference = GaussianMixture(5, covariance_type="full", reg_covar=reg_covar, max_iter=300,
                                random_state=3).fit(points)
    weights, means, scale_tril = fit_gaussian_mixture(points, 5, reg_covar=reg_covar, max_iter=300, seed=3)
    order = np.lexsort(means.T), np.lexsort(reference.means_.T)  # the same components, whatever their order
    np.testing.assert_allclose(weights[order[0]], reference.weights_[order[1]], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(means[order[0]], reference.means_[order[1]], rtol=1e-6, atol=1e-8)
    covariances = scale_tril @ np.swapaxes(scale_tril, 1, 2)
    np.testing.assert_allclose(covariances[order[0]], reference.covariances_[order[1]], rtol=1e-6, atol=1e-8)
    assert np.allclose(np.triu(scale_tril, 1), 0) and (np.diagonal(scale_tril, 0, 1, 2) > 0).all()


def test_a_singular_cluster_is_a_clear_error_without_regularisation():
    points = np.zeros((40, 3))
    points[20:] = 1.0  # two points repeated: zero-variance clusters
    with pytest.raises(ValueError, match="raise reg_covar"):
        fit_gaussian_mixture(points, 2, reg_covar=0.0)


def test_the_sampler_draws_the_fitted_clusters():
    points = _clusters(n=2000, d=5, k=3, seed=1)
    sampler = GMMSampler.fit(torch.as_tensor(points, dtype=torch.float32), n_components=3, variance_share=1.0)
    drawn = sampler.sample(4000, seed=0).double().numpy()
    np.testing.assert_allclose(drawn.mean(0), points.mean(0), atol=0.25)
    np.testing.assert_allclose(np.cov(drawn.T), np.cov(points.T), rtol=0.15, atol=0.5)
