"""The CVAE's condition constraint (``model.constraint``): which player each term moves, the frozen classifier
that never moves and never enters the bundle, and the configs it refuses."""

from __future__ import annotations

import shutil

import pytest
import torch

from facegen.bundle import load_bundle, write_bundle
from facegen.config import from_dict
from facegen.errors import ConfigError, FacegenError
from facegen.models.condition_constraint import changed_conditions, classification_constraint
from facegen.pretrained import build_for_training
from facegen.quality.judge import check_independent
from facegen.training.loop import make_optimizers
from tests.models.test_models import fixed_batch
from tests.models.test_perceptual import write_classifier_bundle
from tests.conftest import one_thread
from tests.tiny import tiny_config


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory) -> str:
    """A tiny classifier over all 40 attributes (the CVAE's Male and Smiling among them)."""
    return write_classifier_bundle(str(tmp_path_factory.mktemp("reader") / "bundle"))


def constrained(classifier: str, classifier_weight: float = 10.0, adversary_weight: float = 1.0, **model):
    raw = tiny_config("cvae").to_dict()
    raw["model"].update(constraint={"classifier": classifier, "classifier_weight": classifier_weight,
                                    "adversary_weight": adversary_weight}, **model)
    cfg = from_dict(raw)
    torch.manual_seed(0)
    return cfg, build_for_training(cfg.model)


def grads(module: torch.nn.Module) -> dict[str, bool]:
    """Which parameters got a non-zero gradient."""
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in module.named_parameters()}


def test_each_player_moves_its_own_parameters_and_the_classifier_never_moves(classifier_bundle):
    cfg, model = constrained(classifier_bundle)
    assert model.players == ("main", "adversary")
    reader = model.reader.model
    frozen = {n: p.detach().clone() for n, p in reader.named_parameters()}
    optimizers = make_optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    for player in model.players:
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        model(fixed_batch(), player=player).loss.backward()
        optimizers[player].step()
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert moved == {names[id(p)] for p in model.parameters_for(player)}
        assert all(p.grad is None for p in reader.parameters())  # frozen: no gradient is even stored
    assert {n.split(".")[0] for n in model.state_dict()} == {"encoder", "to_posterior", "decoder", "adversary"}
    assert all(torch.equal(p, frozen[n]) for n, p in reader.named_parameters())
    assert not reader.training  # eval mode: dropout off


def test_a_patch_critic_on_the_edits_is_a_third_player_that_sees_them(classifier_bundle):
    cfg, model = constrained(classifier_bundle, adversarial={"weight": 0.5, "channels": 8, "edits": True})
    assert model.players == ("main", "adversary", "critic")
    batch = fixed_batch()
    out = model(batch)
    assert out.metrics["adv_g_edited"].ndim == 0
    assert model.adversarial._fakes.shape[0] == 2 * batch["image"].shape[0]  # reconstructions and edits
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.adversarial.parameters())
    assert all(p.grad is None for p in model.reader.model.parameters())
    model.zero_grad(set_to_none=True)
    model(batch, player="critic").loss.backward()
    critic = {id(p) for p in model.adversarial.parameters()}
    assert all(p.grad is None for p in model.parameters() if id(p) not in critic)
    assert any(p.grad is not None and p.grad.any() for p in model.adversarial.parameters())


def test_classification_term_reaches_decoder_and_encoder_only(classifier_bundle):
    _, model = constrained(classifier_bundle, adversary_weight=0.0)
    assert model.players == ("main",) and model.adversary is None
    batch = fixed_batch()
    cond = model.condition_of(batch)
    mu, _ = model.posterior(batch["image"], cond)
    target = changed_conditions(cond)
    bce, agree = classification_constraint(model.reader, model.decoder(torch.cat([mu, target], 1)), target)
    assert bce.shape == (8,) and 0 <= float(agree) <= 1
    bce.sum().backward()
    assert all(grads(model.decoder).values()) and any(grads(model.encoder).values())
    assert all(p.grad is None for p in model.reader.model.parameters())


def test_adversary_terms_split_between_adversary_and_encoder(classifier_bundle):
    _, model = constrained(classifier_bundle, classifier_weight=0.0)
    assert model.reader is None
    batch = fixed_batch()
    model(batch, player="adversary").loss.backward()  # the adversary learns on detached codes
    assert all(grads(model.adversary).values())
    assert not any(grads(model.encoder).values()) and not any(grads(model.decoder).values())

    model.zero_grad(set_to_none=True)
    mu, _ = model.posterior(batch["image"], model.condition_of(batch))
    model.adversary.confusion_loss(mu).sum().backward()  # the encoder's term: the adversary's weights detached
    assert all(p.grad is None for p in model.adversary.parameters())
    assert any(grads(model.encoder).values()) and any(grads(model.to_posterior).values())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_the_adversary_learns_to_read_the_leaked_condition():
    # The encoder sees the condition as image planes, so an untrained posterior mean already carries it.
    cfg = tiny_config("cvae+adversary")
    torch.manual_seed(0)
    model = build_for_training(cfg.model)
    optimizer = make_optimizers(model, cfg)["adversary"]
    batch, losses = fixed_batch(), []
    for _ in range(40):
        optimizer.zero_grad()
        out = model(batch, player="adversary")
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0] and float(out.metrics["z_leak_acc"]) == 1.0


def test_the_bundle_loads_without_the_classifier_and_the_judge_may_not_be_it(classifier_bundle, tmp_path):
    reader_copy = shutil.copytree(classifier_bundle, str(tmp_path / "reader"))
    cfg, model = constrained(reader_copy)
    model.eval()
    path = write_bundle(str(tmp_path / "cvae"), config=cfg.to_dict(), weights=model.state_dict(), meta={})
    shutil.rmtree(reader_copy)
    loaded = load_bundle(path)
    images, cond = fixed_batch()["image"], model.condition_of(fixed_batch())
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(images, cond), model.encode(images, cond))
    with pytest.raises(FacegenError, match="model.constraint.classifier"):
        check_independent(reader_copy, [(path, loaded)])
    check_independent(classifier_bundle, [(path, loaded)])  # another classifier is a fair judge
    with pytest.raises(ValueError, match="classifier is not loaded"):  # training needs build_for_training
        loaded.model(fixed_batch())
    with torch.no_grad():  # evaluation (facegen report) scores the ELBO alone, without the reader's terms
        scored, full = loaded.model.validation_step(fixed_batch()), model.validation_step(fixed_batch())
    assert "edit_acc" in full and "edit_acc" not in scored and torch.isfinite(scored["loss"])
    assert scored["recon_mse_mean_z"] == pytest.approx(float(full["recon_mse_mean_z"]))


def test_bad_constraint_configs_fail_with_one_line(classifier_bundle, tmp_path):
    with pytest.raises(ConfigError, match="constraint.classifier: required"):
        constrained("", classifier_weight=1.0)
    with pytest.raises(ConfigError, match="only for condition: attrs"):
        constrained(classifier_bundle, condition="label")
    with pytest.raises(ConfigError, match="must be >= 0"):
        constrained(classifier_bundle, adversary_weight=-1.0)
    raw = tiny_config("classifier").to_dict()
    raw["model"]["attributes"] = ["Male"]  # the CVAE also conditions on Smiling
    narrow = write_bundle(str(tmp_path / "narrow"), config=raw,
                          weights=build_for_training(from_dict(raw).model).state_dict(), meta={})
    with pytest.raises(ConfigError, match="does not predict Smiling"):
        constrained(narrow)


def test_shuffled_targets_are_other_faces_conditions():
    torch.manual_seed(0)
    cond = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    target = changed_conditions(cond, "shuffled")
    # Every target is a condition some face has, each used once: only combinations that occur
    assert sorted(map(tuple, target.tolist())) == sorted(map(tuple, cond.tolist()))
    random = changed_conditions(torch.zeros(4096, 3), "random")
    assert abs(float(random.mean()) - 0.5) < 0.05


def test_unknown_targets_are_a_config_error():
    from facegen.models.condition_constraint import ConstraintConfig

    with pytest.raises(ConfigError, match="model.constraint.targets"):
        ConstraintConfig(targets="any")
