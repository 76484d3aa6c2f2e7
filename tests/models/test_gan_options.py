"""GAN options on known answers: the discriminator's augmentation (DiffAugment), the generator's running
average, and continuous codes read with a fixed std."""

from __future__ import annotations

import contextlib

import pytest
import torch

from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.models.gan_augment import diff_augment
from facegen.training.loop import make_optimizers, train_one_epoch
from tests.models.test_generative import tiny
from tests.models.test_models import fixed_batch
from tests.tiny import tiny_config


ALL = ("color", "translation", "cutout")


def test_translation_shifts_each_image_by_at_most_an_eighth_and_fills_with_zeros():
    torch.manual_seed(0)
    moved = diff_augment(torch.ones(16, 3, 64, 64), ("translation",))
    assert torch.equal(moved[:, :, 8:56, 8:56], torch.ones(16, 3, 48, 48))  # shifts of <= 8 px keep the middle
    assert set(moved.unique().tolist()) <= {0.0, 1.0}  # pixels move; none is invented
    assert (moved == 0).any() and len({tuple(m[0].sum(1).tolist()) for m in moved}) > 1  # shifted, not alike


def test_cutout_zeroes_one_square_of_at_most_a_quarter_of_each_image():
    torch.manual_seed(0)
    cut = diff_augment(torch.ones(32, 3, 64, 64), ("cutout",))
    zeroed = (cut[:, 0] == 0).float().mean((1, 2))  # per image
    assert ((zeroed > 0) & (zeroed <= 0.25)).all() and (zeroed == 0.25).any()
    assert torch.equal(cut[:, 0], cut[:, 2])  # the same square in every channel


def test_color_keeps_a_flat_image_flat_and_augments_each_image_independently():
    torch.manual_seed(0)
    flat = torch.full((8, 3, 16, 16), 0.2)
    out = diff_augment(flat, ("color",))
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-6)  # no pattern appears
    assert out[:, 0, 0, 0].unique().numel() == 8  # one brightness per image


def test_diff_augment_is_differentiable_and_off_by_default():
    images = fixed_batch()["image"].requires_grad_()
    assert diff_augment(images, ()) is images
    diff_augment(images, ALL).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["infogan", "began"])
def test_the_discriminator_sees_augmented_images_in_training_only(family):
    model = tiny(family, diff_augment=list(ALL))
    trunk = model.trunk if family == "infogan" else model.d_encoder
    seen = []
    trunk.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    batch = fixed_batch()
    model.train()
    model(batch, player="discriminator")
    assert not torch.allclose(seen[-1][:8], batch["image"])  # reals, augmented
    model.eval()
    model(batch, player="discriminator")
    assert torch.equal(seen[-1][:8], batch["image"])  # validation judges them as they are


def test_generator_average_follows_the_warm_up_rule_and_decodes():
    cfg = tiny_config("infogan+diff_augment+ema")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizers = make_optimizers(model, cfg)
    before = [p.detach().clone() for p in model.generator.parameters()]
    batches = [{"image": fixed_batch()["image"], "corrupt_rows": torch.tensor(0)}]
    train_one_epoch(model, model, optimizers, batches, torch.device("cpu"), contextlib.nullcontext())
    assert int(model.average_steps) == 1  # once per batch, not per player
    for old, new, average in zip(before, model.generator.parameters(), model.generator_average.parameters()):
        # step 1: decay min(0.9, 1 / 10) = 0.1, so the average moves 90% of the way to the new weights
        assert torch.allclose(average, old + 0.9 * (new.detach() - old), atol=1e-6)
    model.eval()
    z = model.prior_codes(4)
    assert torch.allclose(model.decode(z), model.generator_average(z))
    assert not torch.allclose(model.decode(z), model.generator(z))
    assert not any(p.requires_grad for p in model.generator_average.parameters())


def test_fixed_std_reads_continuous_codes_by_half_their_squared_error():
    model = tiny("infogan", fixed_std=True, lambda_categorical=0.0, lambda_noise=0.0, lambda_continuous=1.0)
    features = torch.randn(8, model.trunk.feature_dim)
    _, mean, log_std, _ = model.codes.predict(features)
    assert torch.equal(log_std, torch.zeros_like(log_std))
    latent = model.prior_codes(8)
    code = latent[:, sum(model.config.categorical):sum(model.config.categorical) + model.config.continuous]
    nll = model.codes.loss(features, latent).metrics["cont_nll"]
    assert torch.allclose(nll, 0.5 * (code - mean).pow(2).sum(1).mean())


def test_a_fixed_std_leaves_the_categorical_code_learnable():
    """With a learnt std the continuous codes' NLL gradients (1 / std^2) drown the categorical code: on the
    tiny layout (4 classes, 2 continuous codes) it stays near chance; with a fixed std it is learnt."""
    read = {}
    for fixed in (False, True):
        cfg = tiny_config("infogan")
        torch.manual_seed(0)
        model = build_model(type(cfg.model)(**{**vars(cfg.model), "fixed_std": fixed}))
        optimizers = make_optimizers(model, cfg)
        for _ in range(40):
            model.zero_grad(set_to_none=True)
            out = model(fixed_batch(), player="info")
            out.loss.backward()
            optimizers["info"].step()
        read[fixed] = model(fixed_batch(), player="info").metrics["cat_ce"]
    assert read[True] < 0.5 * read[False], read


def test_bad_gan_options_are_refused_by_name():
    with pytest.raises(ConfigError, match="diff_augment.*blur"):
        tiny("infogan", diff_augment=["color", "blur"])
    with pytest.raises(ConfigError, match="generator_ema"):
        tiny("began", generator_ema=1.0)
