"""The autoencoder whose encoder is a trained classifier's trunk: weights copied in, frozen or fine-tuned, and a
bundle that reloads without the classifier bundle."""

from __future__ import annotations

import shutil

import pytest
import torch

from facegen.bundle import load_bundle, write_bundle
from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.pretrained import build_for_training, export_config
from tests.models.test_perceptual import smooth_images, write_classifier_bundle
from tests.tiny import tiny_config

RESNET18 = {"name": "resnet18", "trainable_layers": 2}  # BatchNorm, and a classifier trained with frozen blocks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine two threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trunk_ae_config(bundle: str = "", resolution: int = 32, **model):
    raw = tiny_config("ae").to_dict()
    raw["model"].update(resolution=resolution, encoder="classifier", encoder_bundle=bundle, **model)
    return from_dict(raw)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running statistics included), copied."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


def train_steps(model, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters_for("main"), lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model({"image": smooth_images(seed=step)}).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("backbone", [None, RESNET18], ids=["small_cnn", "resnet18"])
def test_a_frozen_trunk_does_not_move_while_the_decoder_learns(backbone, tmp_path):
    bundle = write_classifier_bundle(str(tmp_path / "clf"), backbone=backbone)
    classifier_trunk = load_bundle(bundle).model.trunk
    model = build_for_training(trunk_ae_config(bundle, encoder_trainable=False).model)
    assert all(torch.equal(v, classifier_trunk.state_dict()[k]) for k, v in model.encoder.state_dict().items())
    trunk_ids = {id(p) for p in model.encoder.parameters()}
    assert not trunk_ids & {id(p) for p in model.parameters_for("main")}
    trunk, decoder = snapshot(model.encoder), snapshot(model.decoder)
    train_steps(model)
    assert not any(m.training for block in model.encoder.blocks for m in block.modules())  # train() kept eval
    assert changed(trunk, model.encoder) == []  # weights and BatchNorm statistics alike
    assert len(changed(decoder, model.decoder)) > 0


@pytest.mark.parametrize("backbone", [None, RESNET18], ids=["small_cnn", "resnet18"])
def test_a_trainable_trunk_is_fine_tuned(backbone, tmp_path):
    bundle = write_classifier_bundle(str(tmp_path / "clf"), backbone=backbone)
    model = build_for_training(trunk_ae_config(bundle, encoder_trainable=True).model)
    # all of the trunk trains, whatever the classifier's own trainable_layers was
    assert all(p.requires_grad for p in model.encoder.parameters())
    trunk, decoder = snapshot(model.encoder), snapshot(model.decoder)
    train_steps(model)
    weights = [k for k in changed(trunk, model.encoder) if "running" not in k and "num_batches" not in k]
    assert len(weights) == len([p for p in model.encoder.parameters()])
    assert len(changed(decoder, model.decoder)) > 0


def test_the_exported_bundle_reloads_without_the_classifier_bundle(tmp_path):
    """export_checkpoint (the trainer's real exporter, fed a real Ray Checkpoint folder; no Ray cluster)."""
    from ray.train import Checkpoint

    from facegen.data.shards import Manifest
    from facegen.training.checkpoint import TrainingState, save_state
    from facegen.training.trainer import export_checkpoint

    bundle = write_classifier_bundle(str(tmp_path / "clf"), backbone=RESNET18)
    cfg = trunk_ae_config(bundle, encoder_trainable=True, recon_loss="perceptual", perceptual={"path": bundle})
    torch.manual_seed(0)
    model = build_for_training(cfg.model)
    train_steps(model)
    model.eval()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    save_state(TrainingState(model.state_dict(), {}, 1, [], cfg.to_dict(), [0], 1), str(folder))
    manifest = Manifest(root=str(tmp_path), dataset="synthetic", resolution=32, attribute_names=(),
                        label_names={}, splits={}, source="", params={}, fingerprint="")
    export_checkpoint(Checkpoint.from_directory(str(folder)), manifest, str(tmp_path / "ae"))
    shutil.rmtree(bundle)

    loaded = load_bundle(str(tmp_path / "ae"))
    exported = loaded.config.model
    assert exported.encoder_bundle == "" and exported.encoder_backbone.name == "resnet18"
    assert exported.encoder_backbone.trainable_layers == -1 and exported.encoder_trainable
    images = smooth_images()
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(images), model.encode(images))
        z = torch.randn(4, cfg.model.latent_dim)
        assert torch.equal(loaded.model.decode(z), model.decode(z))


def test_a_hand_written_trunk_architecture_builds_without_any_bundle():
    cfg = trunk_ae_config("", encoder_backbone={"name": "small_cnn", "base_channels": 8, "max_channels": 32})
    model = build_model(cfg.model)
    assert model.encode(smooth_images()).shape == (8, cfg.model.latent_dim)
    assert export_config(cfg.model) == cfg.model  # nothing to swap


def test_a_resolution_mismatch_is_one_line(tmp_path):
    bundle = write_classifier_bundle(str(tmp_path / "clf"), resolution=64)
    with pytest.raises(ConfigError) as info:
        build_for_training(trunk_ae_config(bundle, resolution=32).model)
    message = str(info.value)
    assert message.startswith("model.encoder_bundle: ") and "64 px" in message and "\n" not in message


def test_a_bundle_of_another_family_or_none_at_all_is_one_line(tmp_path):
    vae = tiny_config("vae")
    write_bundle(str(tmp_path / "vae"), config=vae.to_dict(), weights=build_model(vae.model).state_dict(), meta={})
    with pytest.raises(ConfigError, match=r"model.encoder_bundle: .*'vae' bundle"):
        build_for_training(trunk_ae_config(str(tmp_path / "vae")).model)
    missing = str(tmp_path / "absent")
    cfg = trunk_ae_config(missing)  # a config naming a bundle not trained yet parses ...
    with pytest.raises(ConfigError, match="model.encoder_bundle: .*absent: not a model bundle"):
        build_for_training(cfg.model)  # ... and only building it for training needs it


@pytest.mark.parametrize("model_keys, message", [
    ({"encoder": "classifier"}, "model.encoder_bundle: encoder classifier needs encoder_bundle"),
    ({"encoder_bundle": "b"}, "only used with model.encoder: classifier"),
    ({"encoder": "vit"}, "model.encoder: must be one of"),
])
def test_bad_encoder_settings_fail_at_config_time(model_keys, message):
    raw = tiny_config("ae").to_dict()
    raw["model"].update(model_keys)
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)
