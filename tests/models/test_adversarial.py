"""The patch critic option (``model.adversarial``): which player moves what, the adaptive weight's known answer,
the switch-on epoch, and a critic that learns to tell real patches from decoded ones."""

from __future__ import annotations

import pytest
import torch

from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.models.adversarial import AdversarialConfig, PatchAdversary, PatchCritic
from facegen.models.cvae import CVAEConfig
from tests.models.test_models import fixed_batch
from tests.tiny import tiny_config

OPTIONS = ["ae+adversarial", "vae+adversarial", "cvae+adversarial"]


def grads_of(module: torch.nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


@pytest.mark.parametrize("option", OPTIONS)
def test_each_player_moves_only_its_own_parameters(option):
    torch.manual_seed(0)
    model = build_model(tiny_config(option).model)
    assert model.players[0] == "main" and model.players[-1] == "critic"
    critic = {id(p) for p in model.adversarial.parameters()}
    main = {id(p) for p in model.parameters_for("main")}
    assert critic == {id(p) for p in model.parameters_for("critic")} and not critic & main
    assert model.optimizer_settings("critic", 1e-3, (0.9, 0.999), 0.01).betas == (0.5, 0.9)

    batch = fixed_batch()
    model(batch).loss.backward()  # the generator's term reaches the decoder through the critic ...
    assert all(grads_of(model.decoder))
    model.zero_grad(set_to_none=True)
    model(batch, player="critic").loss.backward()  # ... the critic's hinge loss only the critic
    assert any(grads_of(model.adversarial))
    assert not any(grads_of(model.decoder)) and not any(grads_of(model.encoder))


def test_adaptive_weight_matches_the_gradient_norms():
    torch.manual_seed(0)
    adversary = PatchAdversary(AdversarialConfig(weight=0.5, channels=8))
    x_hat = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    recon = 3.0 * x_hat.pow(2).sum()  # gradient 6 x_hat
    metrics = {}
    term = adversary.generator_term(x_hat, recon, metrics)
    adv_grad = torch.autograd.grad(-adversary.critic(x_hat).mean(), x_hat)[0]
    expected = (6 * x_hat).norm() / (adv_grad.norm() + 1e-4)
    assert torch.allclose(metrics["adv_lambda"], expected.detach(), rtol=1e-5)
    # the term's gradient on the pixels is weight * lambda * d(-mean D)/d x_hat: half the reconstruction's
    assert float(term) == pytest.approx(0.0, abs=1e-3)  # it enters through its gradient; adv_g reports it
    grad = torch.autograd.grad(term, x_hat)[0]
    assert torch.allclose(grad, 0.5 * expected * adv_grad, rtol=1e-4, atol=1e-8)
    pull = grad.norm()
    assert torch.allclose(pull, 0.5 * (6 * x_hat).norm(), rtol=1e-2)  # up to the 1e-4 in the denominator


def test_the_term_waits_for_its_epoch_while_the_critic_trains():
    adversary = PatchAdversary(AdversarialConfig(weight=1.0, start_epoch=2, channels=8))
    x_hat = torch.zeros(2, 3, 32, 32, requires_grad=True)
    for epoch, on in [(0, False), (1, False), (2, True)]:
        adversary.set_epoch(epoch)
        metrics = {}
        term = adversary.generator_term(x_hat, x_hat.sum() + 1, metrics)
        assert ("adv_lambda" in metrics) is on and (term.requires_grad is on)
        loss, critic_metrics = adversary.critic_step(torch.ones(2, 3, 32, 32))  # the decodes were kept
        assert loss.requires_grad and set(critic_metrics) == {"critic_loss", "critic_real", "critic_fake"}
    with pytest.raises(RuntimeError, match="before any main step"):
        adversary.critic_step(torch.ones(2, 3, 32, 32))
    with torch.no_grad():  # validation: no term and nothing kept
        assert adversary.generator_term(x_hat, x_hat.sum(), {}) == 0 and adversary._fakes is None


def test_a_critic_learns_to_tell_sharp_from_blurred():
    torch.manual_seed(0)
    adversary = PatchAdversary(AdversarialConfig(weight=1.0, start_epoch=100, channels=8))  # the critic alone
    optimizer = torch.optim.Adam(adversary.parameters(), lr=2e-3, betas=(0.5, 0.9))
    sharp = torch.rand(8, 1, 32, 32).round().expand(-1, 3, -1, -1) * 2 - 1  # black-and-white speckle
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2)  # the same, blurred
    losses = []
    for _ in range(40):
        adversary.generator_term(blurred, blurred.sum(), {})  # keeps the fakes
        loss, metrics = adversary.critic_step(sharp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[0] == pytest.approx(2.0, abs=0.3)  # hinge at chance: relu(1 - 0) + relu(1 + 0)
    assert losses[-1] < 0.5 and metrics["critic_real"] > metrics["critic_fake"]


def test_critic_output_is_a_grid_of_patch_logits():
    assert PatchCritic(8, layers=2)(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 14, 14)
    assert PatchCritic(8, layers=3)(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"start_epoch": -1}, {"layers": 0}, {"channels": 2}])
def test_bad_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="model.adversarial"):
        AdversarialConfig(**bad)


def test_critic_on_edits_needs_the_constraint_that_decodes_them():
    with pytest.raises(ConfigError, match="model.adversarial.edits"):
        CVAEConfig(adversarial=AdversarialConfig(weight=1.0, edits=True))  # no constraint: no edits decoded
