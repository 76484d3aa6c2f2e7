from __future__ import annotations

import math

import pytest
import torch

from facegen.latent.directions import fit_directions
from facegen.latent.edit import Slot, edit, latent_slots, residual_decoder, residual_images
from facegen.models import build_model
from facegen.models.cvae import CVAE, CVAEConfig
from tests.latent.toy import NAMES, make_space
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def setup():
    space = make_space(n=1000)
    directions = fit_directions(space.codes, space.labels, NAMES, method="mean_diff")
    return space, directions, space.model.decode(space.codes[:32])


@pytest.mark.parametrize("method", ["mean_diff", "conditional"])
def test_edit_moves_the_target_score_in_the_asked_direction(setup, method):
    space, directions, images = setup
    for strength in (2.0, -2.0):
        result = edit(space.model, images, {"Eyeglasses": strength}, method=method, directions=directions,
                      scorer=space.scorer)
        assert result.images.shape == images.shape and result.scores_after.shape == (32, 3)
        change = (result.scores_after - result.scores_before).mean(0)
        assert math.copysign(1, strength) * change[2] > 0.2, (strength, change)
        assert change[:2].abs().max() < 0.05  # independent attributes stay put
    # the reconstructions are exact for this model, so "before" scores are the inputs' scores
    assert torch.allclose(result.reconstructions, images, atol=1e-5)


def test_strength_is_in_standard_deviations(setup):
    space, directions, images = setup
    result = edit(space.model, images, {"Smiling": 1.5}, directions=directions)
    moved = (result.codes - space.model.encode(images)) @ directions.vector("Smiling")
    assert torch.allclose(moved, torch.full((32,), 1.5 * float(directions.scales[0])), atol=1e-4)


def test_bad_requests_are_clear_value_errors(setup):
    space, directions, images = setup
    with pytest.raises(ValueError, match=r"unknown attribute 'Smilling' \(known: Smiling, Male, Eyeglasses\)"):
        edit(space.model, images, {"Smilling": 1.0}, directions=directions)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="'Smiling': strength must be finite"):
            edit(space.model, images, {"Smiling": bad}, directions=directions)
    with pytest.raises(ValueError, match=r"'Smiling': \|strength\| must be <= 10"):
        edit(space.model, images, {"Smiling": 10.5}, directions=directions)
    with pytest.raises(ValueError, match="keep=.* only applies to method='conditional'"):
        edit(space.model, images, {"Smiling": 1.0}, keep=["Male"], directions=directions)
    with pytest.raises(ValueError, match="fitted with 'mean_diff'; pass method='mean_diff' or 'conditional'"):
        edit(space.model, images, {"Smiling": 1.0}, method="boundary", directions=directions)
    with pytest.raises(ValueError, match="unknown edit method 'pca'"):
        edit(space.model, images, {"Smiling": 1.0}, method="pca", directions=directions)
    with pytest.raises(ValueError, match="directions=fit_directions"):
        edit(space.model, images, {"Smiling": 1.0})


def test_a_cvae_edits_through_its_named_condition():
    torch.manual_seed(0)
    cvae = build_model(tiny_config("cvae").model).eval()  # condition_attributes: Male, Smiling
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    cond = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    slots = latent_slots(cvae)
    assert set(slots) == {"Male", "Smiling"} and slots["Smiling"].start == 9  # after the 8 z entries and Male
    result = edit(cvae, images, {"Smiling": 1.0}, cond=cond)
    assert torch.equal(result.codes[:, 9], torch.ones(4)) and torch.equal(result.codes[:, 8], cond[:, 0])
    with torch.no_grad():
        assert torch.allclose(result.images, cvae.decode(result.codes))
    digits = CVAE(CVAEConfig(resolution=32, latent_dim=8, base_channels=8, max_channels=32, condition="label"))
    assert latent_slots(digits) == {"condition": Slot("condition", 8, 10, "class")}
    result = edit(digits.eval(), images, {"condition": 3}, cond=torch.eye(10)[:4])
    assert torch.equal(result.codes[:, 8:], torch.eye(10)[[3, 3, 3, 3]])


def test_an_infogan_edits_through_its_codes():
    torch.manual_seed(0)
    gan = build_model(tiny_config("infogan").model).eval()  # code0: 4 classes, 2 continuous, 8 noise
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    assert set(latent_slots(gan)) == {"code0", "continuous/0", "continuous/1"}
    result = edit(gan, images, {"code0": 2, "continuous/1": 0.5})
    assert torch.equal(result.codes[:, :4], torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand(3, 4))
    assert torch.equal(result.codes[:, 5], torch.full((3,), 0.5))
    for bad in (4, 1.5):
        with pytest.raises(ValueError, match=r"'code0': a class index in 0\.\.3"):
            edit(gan, images, {"code0": bad})


def test_a_residual_edit_keeps_the_originals_own_pixels_where_the_decode_does_not_change():
    torch.manual_seed(0)
    originals = torch.rand(3, 3, 8, 8) * 2 - 1  # (N, C, H, W) in [-1, 1]
    recon = originals * 0.5  # a blurry decoder's reconstruction
    decoded = recon.clone()
    decoded[..., :2, :2] += 0.4  # the edit changes one corner of the decode
    out = residual_images(originals, recon, decoded)
    assert torch.equal(out[..., 2:, :], originals[..., 2:, :]) and torch.equal(out[..., :2, 2:], originals[..., :2, 2:])
    assert torch.allclose(out[..., :2, :2], (originals[..., :2, :2] + 0.4).clamp(-1, 1))
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(residual_images(originals, recon, recon), originals)  # no edit: the photo itself


def test_a_residual_decoder_is_the_decoder_composed_in_pixels_and_keeps_gradients():
    weight = torch.randn(4, 3 * 4 * 4)
    decode = lambda z: torch.tanh(z @ weight).reshape(-1, 3, 4, 4)  # noqa: E731
    z = torch.randn(2, 4)
    originals, recon = torch.rand(2, 3, 4, 4) * 2 - 1, decode(z)
    moved = (z + 0.1).requires_grad_(True)
    composed = residual_decoder(decode, originals, recon)(moved)
    assert torch.allclose(composed, residual_images(originals, recon, decode(moved)))
    (grad,) = torch.autograd.grad(composed.sum(), [moved])
    assert grad.abs().sum() > 0
