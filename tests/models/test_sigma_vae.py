"""The calibrated ("optimal sigma", sigma-VAE) decoder: ``decoder_std: 0`` and ``losses.calibrated_gaussian_nll``.

Known answers: the loss is the Gaussian NLL at sigma^2 = the batch's MSE, whose batch mean is D/2 (log MSE + 1)
and whose gradient is that of D/2 log MSE; ``decoder_std > 0`` keeps the fixed-sigma loss exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.models.losses import CALIBRATED_MIN_STD, calibrated_gaussian_nll, gaussian_kl, mse_per_image
from facegen.models.vae import VAEConfig
from tests.models.test_models import fixed_batch
from tests.tiny import TINY_MODEL, tiny_config


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair(n: int = 4, size: int = 8, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1
    x_hat = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x_hat, x


def tiny_vae(**model_keys):
    torch.manual_seed(0)
    return build_model(from_dict({"model": {"family": "vae", **TINY_MODEL["vae"], **model_keys}}).model)


def test_calibrated_nll_is_the_gaussian_nll_at_the_batch_mse():
    x_hat, x = pair()
    nll, sigma = calibrated_gaussian_nll(x_hat, x)
    mse = float(((x_hat - x) / 2).pow(2).mean())  # [0, 1] scale, pooled over the batch
    assert float(sigma) == pytest.approx(math.sqrt(mse), rel=1e-12)
    # Independent known answer: torch's Normal log-density on the [0, 1] scale, minus its D/2 log(2 pi).
    d = x[0].numel()
    density = torch.distributions.Normal((x_hat + 1) / 2, math.sqrt(mse)).log_prob((x + 1) / 2).flatten(1).sum(1)
    assert torch.allclose(nll, -density - d / 2 * math.log(2 * math.pi), rtol=1e-10)
    # ... whose batch mean is D/2 (log MSE + 1).
    assert float(nll.mean()) == pytest.approx(d / 2 * (math.log(mse) + 1), rel=1e-10)


def test_calibrated_nll_gradient_is_that_of_half_d_log_mse():
    x_hat, x = pair()
    x_hat.requires_grad_(True)
    calibrated_gaussian_nll(x_hat, x)[0].mean().backward()
    got = x_hat.grad.clone()
    x_hat.grad = None
    (x[0].numel() / 2 * mse_per_image(x_hat, x).mean().log()).backward()
    assert torch.allclose(got, x_hat.grad, rtol=1e-10)


def test_sigma_is_floored_so_a_perfect_reconstruction_stays_finite():
    x = pair()[1]
    nll, sigma = calibrated_gaussian_nll(x.clone(), x)
    assert float(sigma) == pytest.approx(CALIBRATED_MIN_STD)
    assert torch.allclose(nll, torch.full_like(nll, x[0].numel() / 2 * math.log(CALIBRATED_MIN_STD**2)))


def test_calibrated_vae_loss_reports_sigma_and_gradients_reach_encoder_and_decoder():
    model = tiny_vae(decoder_std=0)
    assert model.config.calibrated and model.recon_scale is None
    batch = fixed_batch()
    torch.manual_seed(1)
    out = model(batch)
    out.loss.backward()
    for name in ("encoder", "to_posterior", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert float(out.metrics["decoder_std"]) == pytest.approx(math.sqrt(float(out.metrics["recon_mse"])), rel=1e-5)
    # loss = D/2 (log MSE + 1) + beta KL, batch means (beta 1 with no warm-up).
    d = 3 * 32 * 32
    expected = d / 2 * (math.log(float(out.metrics["recon_mse"])) + 1) + float(out.metrics["kl"])
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_calibrated_vae_learns_a_fixed_batch():
    model = tiny_vae(decoder_std=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = fixed_batch()
    torch.manual_seed(1)
    mses = []
    for _ in range(40):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        out.loss.backward()
        optimizer.step()
        mses.append(float(out.metrics["recon_mse"]))
    assert sum(mses[-5:]) < 0.5 * sum(mses[:5])


@pytest.mark.parametrize("decoder_std", [0.1, 0.25])
def test_fixed_decoder_std_loss_is_unchanged(decoder_std):
    model = tiny_vae(decoder_std=decoder_std, beta=2.0)
    assert not model.config.calibrated
    assert model.recon_scale == pytest.approx(3 * 32 * 32 / (2 * decoder_std**2))
    batch = fixed_batch()
    torch.manual_seed(1)
    out = model(batch)
    # The same step by hand: same noise, recon_scale * MSE + beta * KL.
    torch.manual_seed(1)
    mu, logvar = model.posterior(batch["image"])
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    x_hat = model.decoder(z)
    expected = (model.recon_scale * mse_per_image(x_hat, batch["image"]) + 2.0 * gaussian_kl(mu, logvar)).mean()
    assert torch.equal(out.loss, expected)
    assert set(out.metrics) == {"loss", "recon_mse", "kl"}


def test_decoder_std_zero_is_the_calibrated_decoder_from_yaml_and_overrides():
    assert tiny_config("vae").model.calibrated is False
    cfg = from_dict({"model": {"family": "vae", **TINY_MODEL["vae"], "decoder_std": 0}})  # YAML's int 0
    assert cfg.model.decoder_std == 0.0 and cfg.model.calibrated


@pytest.mark.parametrize("keys, message", [
    ({"decoder_std": -0.1}, "decoder_std"),
    ({"decoder_std": 0, "recon_loss": "l1"}, "recon_loss"),
    ({"decoder_std": 0, "beta": -1.0}, "beta"),  # the shared checks still run for a calibrated decoder
    ({"decoder_std": 0, "resolution": 48}, "resolution"),
])
def test_config_validation(keys, message):
    with pytest.raises(ConfigError, match=message):
        VAEConfig(**{**TINY_MODEL["vae"], **keys})
