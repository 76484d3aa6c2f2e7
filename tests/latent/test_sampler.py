from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen.bundle import load_bundle, write_bundle
from facegen.latent.directions import Directions, fit_directions
from facegen.latent.mixture import MIN_CODES_PER_MODE, GMMSampler
from facegen.latent.sampler import (
    PCAKDESampler,
    fit_density,
    fit_sampler,
    load_sampler,
    sample_faces,
)
from facegen.models import build_model
from tests.latent.toy import NAMES, LinearFaces, make_space, orthogonal
from tests.tiny import tiny_config


def anisotropic_codes(n: int = 3000, dim: int = 12, seed: int = 0) -> torch.Tensor:
    """Gaussian codes with variances 2^0 .. 2^-11 in a rotated basis, off-centre."""
    g = torch.Generator().manual_seed(seed)
    stds = 2.0 ** (-0.5 * torch.arange(dim, dtype=torch.float32))
    return (torch.randn(n, dim, generator=g) * stds) @ orthogonal(dim, dim, seed + 1) + 3.0


@pytest.mark.parametrize("share", [0.8, 0.9, 0.99])
def test_keeps_the_fewest_components_reaching_the_variance_share(share):
    codes = anisotropic_codes()
    sampler = PCAKDESampler.fit(codes, variance_share=share)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(codes.double().numpy(), rowvar=False)))[::-1]
    cumulative = np.cumsum(eigen) / eigen.sum()
    k = sampler.n_components
    assert sampler.explained >= share and cumulative[k - 1] >= share and (k == 1 or cumulative[k - 2] < share)
    assert abs(sampler.explained - cumulative[k - 1]) < 1e-4
    assert torch.allclose(sampler.components @ sampler.components.T, torch.eye(k), atol=1e-5)


def test_samples_match_the_codes_mean_and_covariance():
    codes = anisotropic_codes()
    sampler = PCAKDESampler.fit(codes, variance_share=0.99)
    samples = sampler.sample(20000, seed=1).double()
    assert samples.shape == (20000, 12)
    scale = codes.std(0).max().item()
    assert (samples.mean(0) - codes.double().mean(0)).abs().max() < 0.05 * scale
    # compare with the codes' covariance inside the kept subspace (the discarded 1% is gone by design)
    kept = sampler.components.double()
    target = kept @ torch.from_numpy(np.cov(codes.double().numpy(), rowvar=False)) @ kept.T
    got = kept @ torch.cov(samples.T) @ kept.T
    assert (got - target).norm() / target.norm() < 0.05
    # without the variance correction the KDE inflates the spread by 1 + h^2
    plain = torch.cov(sampler.sample(20000, seed=1, shrink=False).double().T)
    inflation = torch.trace(kept @ plain @ kept.T) / torch.trace(target)
    assert abs(inflation - (1 + sampler.bandwidth**2)) < 0.05


def test_samples_follow_a_non_gaussian_shape():
    """Two clusters: the KDE keeps the gap between them, which a Gaussian fit would fill."""
    g = torch.Generator().manual_seed(0)
    side = torch.where(torch.rand(4000, generator=g) < 0.5, -3.0, 3.0)
    codes = torch.randn(4000, 6, generator=g) * 0.5
    codes[:, 0] += side
    samples = PCAKDESampler.fit(codes, variance_share=0.95).sample(4000, seed=2)
    # A Gaussian of this variance puts ~25% in the gap; Scott's bandwidth, sized for the overall spread,
    # smooths a little mass into it (the data have none there).
    assert (samples[:, 0].abs() < 1).float().mean() < 0.1
    assert abs((samples[:, 0] > 0).float().mean() - 0.5) < 0.05


def test_bandwidth_choices():
    codes = anisotropic_codes(n=1500)
    scott = PCAKDESampler.fit(codes, variance_share=0.9)
    assert scott.bandwidth == pytest.approx(1500 ** (-1 / (scott.n_components + 4)))
    cv = PCAKDESampler.fit(codes, variance_share=0.9, bandwidth="cv")
    assert 0.25 * scott.bandwidth <= cv.bandwidth <= 1.5 * scott.bandwidth + 1e-9
    assert PCAKDESampler.fit(codes, bandwidth=0.3).bandwidth == 0.3
    for bad in (0.0, -1.0, "silverman"):
        with pytest.raises(ValueError, match="bandwidth must be positive"):
            PCAKDESampler.fit(codes, bandwidth=bad)
    with pytest.raises(ValueError, match="variance_share"):
        PCAKDESampler.fit(codes, variance_share=1.5)
    assert PCAKDESampler.fit(codes, max_points=100).points.shape[0] == 100


def test_sampler_and_directions_round_trip_through_bundle_extras(tmp_path):
    space = make_space(n=500)
    sampler = PCAKDESampler.fit(space.codes, variance_share=0.9)
    directions = fit_directions(space.codes, space.labels, NAMES)
    cfg = tiny_config("ae")
    write_bundle(str(tmp_path / "bundle"), config=cfg.to_dict(), weights=build_model(cfg.model).state_dict(),
                 meta={}, extras={**sampler.state_dict(), **directions.to_extras()})
    extras = load_bundle(str(tmp_path / "bundle")).extras
    back = PCAKDESampler.from_state_dict(extras)
    assert torch.equal(back.sample(16, seed=3), sampler.sample(16, seed=3))
    assert back.explained == pytest.approx(sampler.explained)
    assert torch.equal(Directions.from_extras(extras).vectors, directions.vectors)
    with pytest.raises(ValueError, match="no PCA\\+KDE sampler under 'other'"):
        PCAKDESampler.from_state_dict(extras, prefix="other")


def test_fit_sampler_encodes_images_and_decodes_new_faces():
    space = make_space(n=600)
    model = LinearFaces(space.codes.shape[1])
    images = model.decode(space.codes)
    sampler = fit_sampler(model, images, batch_size=128, variance_share=0.95)
    assert torch.allclose(sampler.mean, space.codes.mean(0), atol=1e-4)
    faces = sample_faces(model, sampler, 5, seed=0)
    assert faces.shape == (5, 3, 8, 8) and torch.equal(faces, sample_faces(model, sampler, 5, seed=0))


def clustered_codes(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (n, 8) in three tight clusters of shares 0.6 / 0.3 / 0.1 (a categorical factor such as hair
    colour), and each code's cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(3, 8)
    centres[0, 0], centres[1, 0], centres[2, 1] = 4.0, -4.0, 4.0
    which = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=g)
    return centres[which] + 0.3 * torch.randn(n, 8, generator=g), centres


def nearest(codes: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return torch.cdist(codes, centres).argmin(1)


def test_a_mixture_keeps_clusters_and_their_shares_where_the_kde_blends_them():
    codes, centres = clustered_codes()
    mixture = GMMSampler.fit(codes, n_components=3, variance_share=0.99)
    assert mixture.n_modes == 3 and sorted(mixture.weights.tolist()) == pytest.approx([0.1, 0.3, 0.6], abs=0.03)
    samples = mixture.sample(6000, seed=1)
    shares = torch.bincount(nearest(samples, centres), minlength=3).float() / 6000
    assert shares.tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.03)
    # Drawn faces lie in a cluster, as the codes do; the shrunk KDE leaves a share between them.
    def stray(x):
        return (torch.cdist(x, centres).min(1).values > 1.5).float().mean().item()
    kde = PCAKDESampler.fit(codes, variance_share=0.99).sample(6000, seed=1)
    assert stray(samples) < 0.01 < stray(kde)
    assert torch.equal(samples, mixture.sample(6000, seed=1)) and not torch.equal(samples, mixture.sample(6000, 2))


def test_a_mixture_uses_fewer_modes_when_codes_are_few_and_refuses_none():
    codes, _ = clustered_codes(n=5 * MIN_CODES_PER_MODE)
    assert GMMSampler.fit(codes, n_components=20).n_modes == 5
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        GMMSampler.fit(codes, n_components=0)


def test_the_default_density_round_trips_and_bundles_keep_their_kind(tmp_path):
    codes, _ = clustered_codes(n=600)
    for kind, cls in (("gmm", GMMSampler), ("pca_kde", PCAKDESampler)):
        sampler = fit_density(codes, seed=0, kind=kind)
        back = load_sampler({k: v.clone() for k, v in sampler.state_dict().items()})
        assert isinstance(sampler, cls) and isinstance(back, cls)
        assert torch.equal(back.sample(16, seed=3), sampler.sample(16, seed=3))
        assert sampler.describe()
    assert isinstance(fit_density(codes), GMMSampler)
    with pytest.raises(ValueError, match="unknown density kind 'flow'"):
        fit_density(codes, kind="flow")
    with pytest.raises(ValueError, match="no mixture sampler under 'other'"):
        GMMSampler.from_state_dict(fit_density(codes).state_dict(), prefix="other")
