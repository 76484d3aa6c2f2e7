"""The classifier families: metric math against scikit-learn, backbones, freezing, local weights, learning."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from facegen.config import from_dict
from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.pretrained import build_for_training
from facegen.models.backbones import BackboneConfig, build_backbone
from facegen.models.classifier import AttributeClassifier, ClassifierConfig, binary_scores
from facegen.models.fairface import FairFaceClassifier, FairFaceConfig, confusion_matrices
from facegen.metrics import MetricMeans

TINY_CNN = BackboneConfig(base_channels=8, max_channels=32)
ATTRS = ("Smiling", "Male", "Bald")


def tiny_classifier(**kw) -> AttributeClassifier:
    """Built as training builds it: a backbone's ``weights`` file is read by facegen.pretrained."""
    return build_for_training(ClassifierConfig(resolution=32, backbone=kw.pop("backbone", TINY_CNN), **kw))


def attrs_batch(columns: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """A batch of random images whose (N, 40) attrs hold ``columns`` (by name) and 0 elsewhere."""
    attrs = torch.zeros(n, 40)
    for name, values in columns.items():
        attrs[:, CELEBA_ATTRIBUTES.index(name)] = values.float()
    return {"image": torch.rand(n, 3, 32, 32) * 2 - 1, "attrs": attrs}


def test_binary_scores_by_hand():
    s = binary_scores(tp=0.3, fp=0.1, fn=0.2, tn=0.4)
    assert s == pytest.approx({"acc": 0.7, "precision": 0.75, "recall": 0.6, "f1": 0.6 / 0.9,
                               "balanced_acc": (0.6 + 0.8) / 2})
    # No positives anywhere: precision/recall/F1 are 0 (sklearn's zero_division=0), balanced acc = TNR.
    assert binary_scores(0, 0, 0, 1) == {"acc": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "balanced_acc": 1.0}


def test_classifier_epoch_metrics_match_sklearn_over_uneven_batches():
    torch.manual_seed(0)
    model = tiny_classifier(attributes=ATTRS).eval()
    means, truth, preds = MetricMeans(), [], []
    for n in (7, 12):  # uneven batches: rates must be combined by weight, as the loop does
        g = torch.Generator().manual_seed(n)
        cols = {"Smiling": torch.randint(0, 2, (n,), generator=g), "Male": torch.ones(n), "Bald": torch.zeros(n)}
        batch = attrs_batch(cols, n)
        rates = model.validation_step(batch)
        for name in ATTRS:
            assert sum(rates[f"{k}/{name}"] for k in ("tp", "fp", "fn", "tn")).item() == pytest.approx(1.0)
        means.add(rates, n)
        truth.append(model.targets(batch).numpy())
        preds.append((model.predict_proba(batch["image"]) > 0.5).numpy())
    summary = model.summarize_metrics(means.reduce())
    y, p = np.concatenate(truth), np.concatenate(preds)
    for i, name in enumerate(model.attribute_names):
        assert summary[f"acc/{name}"] == pytest.approx(skm.accuracy_score(y[:, i], p[:, i]))
        assert summary[f"precision/{name}"] == pytest.approx(skm.precision_score(y[:, i], p[:, i], zero_division=0))
        assert summary[f"recall/{name}"] == pytest.approx(skm.recall_score(y[:, i], p[:, i], zero_division=0))
        assert summary[f"f1/{name}"] == pytest.approx(skm.f1_score(y[:, i], p[:, i], zero_division=0))
        with warnings.catch_warnings():  # sklearn warns that Male / Bald have a single true class
            warnings.simplefilter("ignore")
            balanced = skm.balanced_accuracy_score(y[:, i], p[:, i])
        assert summary[f"balanced_acc/{name}"] == pytest.approx(balanced)
    assert summary["mean_f1"] == pytest.approx(np.mean([summary[f"f1/{a}"] for a in ATTRS]))
    assert "loss" in summary and not any(k.startswith("tp/") for k in summary)


def fairface_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, "attrs": torch.zeros(n, 0)}
    for head, classes in (("race", 7), ("age", 9), ("gender", 2)):
        labels = torch.randint(0, classes, (n,), generator=g)
        labels[torch.rand(n, generator=g) < 0.3] = -1  # missing labels
        batch[head] = labels
    return batch


def test_fairface_loss_ignores_missing_labels():
    torch.manual_seed(0)
    model = FairFaceClassifier(FairFaceConfig(resolution=32, backbone=TINY_CNN, age_weight=2.0)).eval()
    batch = fairface_batch(16, seed=1)
    logits = model.logits(batch["image"])
    expected = sum(w * torch.nn.functional.cross_entropy(logits[h][batch[h] >= 0], batch[h][batch[h] >= 0])
                   for h, w in (("race", 1.0), ("age", 2.0), ("gender", 1.0)))
    assert model(batch).loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for head in ("race", "age", "gender"):
        batch[head] = torch.full((16,), -1)
    out = model.train()(batch)  # nothing labelled: a finite zero loss that still backpropagates
    assert out.loss.item() == 0.0
    out.loss.backward()


def test_fairface_confusion_matrices_and_scores_match_sklearn(tmp_path):
    from facegen.reporting.confusion import save_confusion_matrices

    torch.manual_seed(0)
    model = FairFaceClassifier(FairFaceConfig(resolution=32, backbone=TINY_CNN)).eval()
    means, batches = MetricMeans(), [fairface_batch(n, seed=n) for n in (9, 14)]
    for batch in batches:
        means.add(model.validation_step(batch), batch["image"].shape[0])
    summary = model.summarize_metrics(means.reduce())
    matrices = confusion_matrices(summary)
    for head in ("race", "age", "gender"):
        labels = torch.cat([b[head] for b in batches]).numpy()
        preds = torch.cat([model.predict_proba(b["image"])[head].argmax(1) for b in batches]).numpy()
        keep = labels >= 0
        assert matrices[head].sum() == pytest.approx(keep.mean())  # cells sum to the labelled fraction
        counts = skm.confusion_matrix(labels[keep], preds[keep], labels=range(matrices[head].shape[0]))
        np.testing.assert_allclose(matrices[head] * len(labels), counts, atol=1e-9)
        assert summary[f"acc/{head}"] == pytest.approx(skm.accuracy_score(labels[keep], preds[keep]))
    assert summary["mean_accuracy"] == pytest.approx(np.mean([summary[f"acc/{h}"] for h in matrices]))
    paths = save_confusion_matrices({f"val/{k}": v for k, v in summary.items()}, str(tmp_path), prefix="val/")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "confusion_age.png", "confusion_gender.png", "confusion_matrices.json", "confusion_race.png"]
    report = json.loads((tmp_path / "confusion_matrices.json").read_text())
    assert np.allclose(report["race"]["rates"], matrices["race"]) and len(report["age"]["classes"]) == 9


@pytest.mark.parametrize("name, blocks, features", [
    ("small_cnn", 3, 32 * 16), ("resnet18", 5, 512), ("vgg16", 5, 512), ("inception_v3", 12, 2048)])
def test_each_backbone_runs_at_the_minimum_resolution(name, blocks, features):
    config = BackboneConfig(name=name, base_channels=8, max_channels=32)
    trunk, width = build_backbone(config, resolution=32)
    assert (width, len(trunk.blocks)) == (features, blocks)
    with torch.no_grad():  # inception_v3 upsamples 32 -> 75 px inside the trunk
        assert trunk.eval()(torch.rand(2, 3, 32, 32) * 2 - 1).shape == (2, features)


def test_trainable_layers_freezes_exactly_the_first_blocks():
    torch.manual_seed(0)
    model = tiny_classifier(attributes=ATTRS, backbone=BackboneConfig(name="resnet18", trainable_layers=2))
    body = model.trunk.body
    trainable = {id(p) for p in model.parameters_for("main")}
    expected = {id(p) for m in (body.layer3, body.layer4, model.head) for p in m.parameters()}
    assert trainable == expected == {id(p) for p in model.parameters() if p.requires_grad}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters_for("main"), lr=1e-2, weight_decay=0.1)
    model.train()
    model(attrs_batch({"Smiling": torch.ones(4)}, 4)).loss.backward()
    optimizer.step()
    after = model.state_dict()
    frozen = ("trunk.body.conv1.", "trunk.body.bn1.", "trunk.body.layer1.", "trunk.body.layer2.")
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        if key.startswith(frozen):  # weights and BatchNorm running statistics alike
            assert not changed, key
        elif key.endswith(("weight", "running_mean")) and key.startswith(("trunk.body.layer4.", "head.")):
            assert changed, key
    with pytest.raises(ConfigError, match="trainable_layers: this trunk has 5 blocks, got 6"):
        tiny_classifier(backbone=BackboneConfig(name="resnet18", trainable_layers=6))


def test_local_weights_file_loads_into_the_trunk(tmp_path):
    import torchvision

    torch.manual_seed(1)
    saved = torchvision.models.resnet18(weights=None).state_dict()  # with fc.*: head keys are dropped
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    model = tiny_classifier(backbone=BackboneConfig(name="resnet18", weights=str(path)))
    own = model.trunk.body.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items() if not k.startswith("fc."))

    torch.save({**saved, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"does not fit resnet18: 1 unexpected \(extra.weight\)"):
        tiny_classifier(backbone=BackboneConfig(name="resnet18", weights=str(tmp_path / "extra.pth")))
    missing = tmp_path / "absent.pth"
    with pytest.raises(ConfigError) as info:
        tiny_classifier(backbone=BackboneConfig(name="resnet18", weights=str(missing)))
    assert str(info.value) == f"model.backbone.weights: file not found: {missing}"


def test_nested_backbone_config_keys_are_checked():
    base = {"family": "classifier", "resolution": 32}
    cfg = from_dict({"model": {**base, "backbone": {"name": "resnet18", "trainable_layers": 2}}})
    assert cfg.model.backbone == BackboneConfig(name="resnet18", trainable_layers=2)
    assert from_dict(cfg.to_dict()) == cfg
    for model, message in [({"backbone": {"name": "alexnet"}}, "model.backbone.name: must be one of"),
                           ({"backbone": {"depth": 3}}, "model.backbone.depth: unknown key"),
                           ({"backbone": {"name": "inception_v3", "input_size": 64}}, "input_size: inception_v3 needs"),
                           ({"attributes": ["Smiling", "Happy"]}, "model.attributes: unknown CelebA attribute 'Happy'"),
                           ({"attributes": ["Smiling"], "pos_weight": [1.0, 2.0]}, "model.pos_weight: needs")]:
        with pytest.raises(ConfigError, match=message):
            from_dict({"model": {**base, **model}})


@pytest.mark.parametrize("loss", ["bce", "balanced"])
def test_classifier_learns_a_separable_problem(loss):
    """Smiling = bright left half, Male = bright right half (plus noise): > 95% held-out accuracy."""
    torch.manual_seed(0)
    model = build_model(ClassifierConfig(resolution=32, backbone=TINY_CNN, attributes=("Smiling", "Male"),
                                         loss=loss))

    def batch(n: int) -> dict[str, torch.Tensor]:
        smiling, male = torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))
        images = torch.randn(n, 3, 32, 32) * 0.3
        images[:, :, :, :16] += (smiling.float() - 0.5).view(n, 1, 1, 1)
        images[:, :, :, 16:] += (male.float() - 0.5).view(n, 1, 1, 1)
        return attrs_batch({"Smiling": smiling, "Male": male}, n) | {"image": images.clamp(-1, 1)}

    optimizer = torch.optim.Adam(model.parameters_for("main"), lr=2e-3)
    for _ in range(30):
        optimizer.zero_grad()
        model(batch(32)).loss.backward()
        optimizer.step()
    means = MetricMeans()
    means.add(model.eval().validation_step(batch(200)), 200)
    summary = model.summarize_metrics(means.reduce())
    assert summary["acc/Smiling"] > 0.95 and summary["acc/Male"] > 0.95, summary
