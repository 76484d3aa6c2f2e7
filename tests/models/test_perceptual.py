"""The perceptual reconstruction loss: its distance, its hidden frozen network, and where that network comes from."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from facegen.bundle import load_bundle, write_bundle
from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.models.perceptual import PerceptualConfig, PerceptualLoss
from facegen.pretrained import Loader, build_for_training
from tests.tiny import tiny_config


def write_classifier_bundle(dest: str, resolution: int = 32, backbone: dict | None = None) -> str:
    """An untrained tiny classifier saved as a bundle at ``dest`` (enough: the tests need its trunk's shape)."""
    torch.manual_seed(1)
    raw = tiny_config("classifier").to_dict()
    raw["model"]["resolution"] = resolution
    if backbone is not None:
        raw["model"]["backbone"] = backbone
    model = build_model(from_dict(raw).model)
    return write_bundle(dest, config=raw, weights=model.state_dict(), meta={})


def smooth_images(n: int = 8, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, R, R) in [-1, 1]: random 4x4-pixel colour cells with hard edges, which blur visibly changes."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, resolution // 4, resolution // 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=resolution, mode="nearest")


def box_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a centred ``size`` x ``size`` window (odd size: no shift)."""
    kernel = torch.ones(3, 1, size, size) / size**2
    return F.conv2d(F.pad(images, [size // 2] * 4, mode="replicate"), kernel, groups=3)


def loaded_loss(config: PerceptualConfig, resolution: int = 32) -> PerceptualLoss:
    """A perceptual loss with its feature network loaded, as ``build_for_training`` loads it."""
    loss = PerceptualLoss(config, resolution)
    loss.set_trunk(Loader().feature_trunk(config, resolution))
    return loss


def family_config(family: str, **model):
    """A tiny config of ``family`` with extra ``model`` keys (dicts for sections)."""
    raw = tiny_config(family).to_dict()
    raw["model"].update(model)
    return from_dict(raw)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads per op run
    20-40x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory) -> str:
    return write_classifier_bundle(str(tmp_path_factory.mktemp("clf") / "bundle"))


def test_distance_is_zero_for_identical_images_and_grows_with_blur_and_noise(classifier_bundle):
    loss = loaded_loss(PerceptualConfig(source="bundle", path=classifier_bundle))
    x = smooth_images()
    assert loss.distance(x, x).abs().max().item() < 1e-6
    blurred = [loss.distance(box_blur(x, k), x).mean().item() for k in (3, 5, 7, 11)]
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    noisy = [loss.distance((x + s * noise).clamp(-1, 1), x).mean().item() for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(blurred, blurred[1:])), blurred
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy
    assert 0 < blurred[0] and max(blurred + noisy) <= 4  # each layer term is in [0, 4]


def test_the_pixel_term_is_mixed_in_by_its_weight(classifier_bundle):
    x, y = smooth_images(), box_blur(smooth_images(), 3)
    perceptual_only = loaded_loss(PerceptualConfig(path=classifier_bundle, weight=1.0, pixel_weight=0.0))
    mixed = loaded_loss(PerceptualConfig(path=classifier_bundle, weight=1.0, pixel_weight=2.0))
    pixel = ((y - x) / 2).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(mixed(y, x), perceptual_only(y, x) + 2.0 * pixel)


@pytest.mark.parametrize("family", ["ae", "vae", "cvae"])
def test_gradients_reach_the_decoder_but_the_feature_net_stays_outside_the_model(family, classifier_bundle):
    torch.manual_seed(0)
    model = build_for_training(family_config(family, recon_loss="perceptual",
                                             perceptual={"path": classifier_bundle}).model)
    keys_before = set(model.state_dict())
    batch = {"image": smooth_images(), "attrs": torch.zeros(8, 40)}
    model(batch).loss.backward()
    trunk = model.perceptual.feature_trunk(torch.device("cpu"))  # loaded by build_for_training
    feature_params = {id(p) for p in trunk.parameters()}
    assert feature_params and not feature_params & {id(p) for p in model.parameters()}
    assert set(model.state_dict()) == keys_before
    assert not any(m is trunk for m in model.modules())
    assert all(not p.requires_grad and p.grad is None for p in trunk.parameters())
    assert not trunk.training
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None for g in decoder_grads) and any(g.abs().sum() > 0 for g in decoder_grads)


def test_the_perceptual_loss_trains_a_vae(classifier_bundle):
    torch.manual_seed(0)
    model = build_for_training(family_config("vae", recon_loss="perceptual", perceptual={"path": classifier_bundle}).model)
    optimizer = torch.optim.Adam(model.parameters_for("main"), lr=2e-3)
    batch = {"image": smooth_images()}
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


def test_a_bundle_loads_for_inference_without_the_feature_net(classifier_bundle, tmp_path):
    """Only training reads the network: a trained model's bundle rebuilds even after its file is gone."""
    feature_bundle = write_classifier_bundle(str(tmp_path / "features"))
    cfg = family_config("vae", recon_loss="perceptual", perceptual={"path": feature_bundle})
    model = build_for_training(cfg.model).eval()
    write_bundle(str(tmp_path / "vae"), config=cfg.to_dict(), weights=model.state_dict(), meta={})
    for name in os.listdir(feature_bundle):
        os.remove(os.path.join(feature_bundle, name))
    loaded = load_bundle(str(tmp_path / "vae")).model
    images = smooth_images()
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), model.encode(images))
    with pytest.raises(ValueError, match="feature network is not loaded"):  # training needs build_for_training
        loaded({"image": images})
    with torch.no_grad():  # evaluation (facegen report) scores the pixel term alone
        metrics = loaded.validation_step({"image": images})
        assert torch.isfinite(metrics["loss"]) and metrics["loss"] < model.validation_step({"image": images})["loss"]
    with pytest.raises(ConfigError, match="model.perceptual.path"):  # ... which needs the file
        build_for_training(cfg.model)


@pytest.mark.parametrize("source, name", [("torchvision", "absent.pth"), ("bundle", "absent_bundle")])
def test_a_missing_file_is_one_line_naming_the_key_and_path(source, name, tmp_path):
    path = str(tmp_path / name)
    cfg = family_config("ae", recon_loss="perceptual", perceptual={"source": source, "arch": "resnet18", "path": path})
    build_model(cfg.model)  # the model itself never reads the file ...
    with pytest.raises(ConfigError) as info:  # ... building it for training does
        build_for_training(cfg.model)
    message = str(info.value)
    assert message.startswith("model.perceptual.path: ") and path in message and "\n" not in message


@pytest.mark.parametrize("model_keys, message", [
    ({"recon_loss": "perceptual"}, "model.perceptual.path: required"),
    ({"recon_loss": "perceptual", "perceptual": {"path": "x", "source": "hub"}}, "model.perceptual.source: must be"),
    ({"recon_loss": "perceptual", "perceptual": {"path": "x", "arch": "vit"}}, "model.perceptual.arch: must be"),
    ({"recon_loss": "perceptual", "perceptual": {"path": "x", "layers": [1, 1]}}, "model.perceptual.layers"),
    ({"recon_loss": "perceptual", "perceptual": {"path": "x", "weight": 0, "pixel_weight": 0}}, "pixel_weight"),
    ({"recon_loss": "perceptual", "perceptual": {"path": "x", "pixel_loss": "perceptual"}}, "pixel_loss"),
])
def test_bad_perceptual_settings_fail_at_config_time(model_keys, message):
    with pytest.raises(ConfigError, match=message) as info:
        family_config("vae", **model_keys)
    assert "\n" not in str(info.value)


def test_a_config_naming_a_bundle_that_does_not_exist_yet_parses_and_builds(tmp_path):
    cfg = family_config("vae", recon_loss="perceptual", perceptual={"path": "not/trained/yet"})
    assert os.path.isabs(cfg.model.perceptual.path)  # Ray workers run elsewhere: resolved where it was loaded
    build_model(cfg.model)


def test_layers_beyond_the_trunk_are_one_line(classifier_bundle):
    with pytest.raises(ConfigError, match=r"model.perceptual.layers: this trunk has 3 blocks"):
        Loader().feature_trunk(PerceptualConfig(path=classifier_bundle, layers=(0, 7)), 32)


def test_torchvision_resnet18_from_a_local_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    path = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # random, as good as any here
    cfg = PerceptualConfig(source="torchvision", arch="resnet18", path=path, layers=(0, 1, 2))
    loss = loaded_loss(cfg)
    x = smooth_images()
    x_hat = box_blur(x, 3).requires_grad_(True)
    assert loss.distance(x, x).abs().max().item() < 1e-6
    d = loss.distance(x_hat, x)
    assert d.shape == (8,) and (d > 0).all()
    d.sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    trunk = loss.feature_trunk(torch.device("cpu"))
    assert trunk.imagenet_normalize and not trunk.training  # ImageNet stats, frozen BatchNorm


def test_a_state_dict_of_another_network_is_one_line(tmp_path):
    path = str(tmp_path / "wrong.pth")
    torch.save({"conv.weight": torch.zeros(2, 3, 3, 3)}, path)
    with pytest.raises(ConfigError, match=r"model.perceptual.path: .*wrong.pth does not fit resnet18"):
        Loader().feature_trunk(PerceptualConfig(source="torchvision", arch="resnet18", path=path), 32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_feature_net_follows_the_images_to_the_gpu(classifier_bundle):
    model = build_for_training(family_config("ae", recon_loss="perceptual", perceptual={"path": classifier_bundle}).model)
    model.to("cuda")
    loss = model({"image": smooth_images().cuda()}).loss
    assert loss.is_cuda and torch.isfinite(loss)
    assert all(p.is_cuda for p in model.perceptual.feature_trunk(torch.device("cuda")).parameters())
