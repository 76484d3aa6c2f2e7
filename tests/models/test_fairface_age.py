"""The FairFace ordinal age head (``age_loss: ordinal``) and the ``acc_within1/age`` metric, by known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from facegen.bundle import load_bundle, write_bundle
from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.metrics import MetricMeans
from facegen.models.backbones import BackboneConfig
from facegen.models.fairface import (
    FairFaceClassifier,
    FairFaceConfig,
    confusion_matrices,
    ordinal_loss,
    ordinal_proba,
    ordinal_rank,
    within_one_accuracy,
)

TINY_CNN = BackboneConfig(base_channels=8, max_channels=32)
K = 9  # age bins


def tiny(age_loss: str = "ce") -> FairFaceClassifier:
    torch.manual_seed(0)
    return FairFaceClassifier(FairFaceConfig(resolution=32, backbone=TINY_CNN, age_loss=age_loss))


def fairface_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, "attrs": torch.zeros(n, 0)}
    for head, classes in (("race", 7), ("age", K), ("gender", 2)):
        labels = torch.randint(0, classes, (n,), generator=g)
        labels[torch.rand(n, generator=g) < 0.3] = -1
        batch[head] = labels
    return batch


def perfect_logits(labels: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
    """CORN logits that say P(y > k | y > k-1) = 1 for k < y and 0 from k = y on (tasks k > y are unused)."""
    levels = torch.arange(K - 1)
    return torch.where(labels.unsqueeze(1) > levels, margin, -margin)


def test_perfect_logits_decode_to_the_exact_class():
    labels = torch.arange(K)
    logits = perfect_logits(labels)
    proba = ordinal_proba(logits)
    assert torch.equal(proba.argmax(1), labels) and torch.equal(ordinal_rank(logits), labels)
    torch.testing.assert_close(proba, torch.eye(K), atol=1e-6, rtol=0)
    assert ordinal_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert ordinal_loss(-logits, labels).item() > 10  # every used task wrong by the margin


def test_class_probabilities_by_hand_sum_to_one():
    # Conditionals 0.9, 0.6, 0.45, 0.1 (K = 5): P(y > k) = 0.9, 0.54, 0.243, 0.0243, so
    # P(y = k) = 0.1, 0.36, 0.297, 0.2187, 0.0243: argmax 1 (the mode), CORN's rank 2 (the median).
    logits = torch.logit(torch.tensor([[0.9, 0.6, 0.45, 0.1]], dtype=torch.float64))
    expected = torch.tensor([[0.1, 0.36, 0.297, 0.2187, 0.0243]], dtype=torch.float64)
    torch.testing.assert_close(ordinal_proba(logits), expected)
    assert ordinal_proba(logits).argmax(1).tolist() == [1] and ordinal_rank(logits).tolist() == [2]
    random = torch.randn(64, K - 1, generator=torch.Generator().manual_seed(0)) * 5
    proba = ordinal_proba(random)
    assert proba.shape == (64, K) and (proba >= 0).all()
    torch.testing.assert_close(proba.sum(1), torch.ones(64))


def test_ordinal_loss_by_hand_uses_only_the_conditional_tasks_and_ignores_missing_labels():
    # Zero logits: each used task costs ln 2; label 0 uses task 0, label 4 tasks 0-4, label 8 all 8, -1 none.
    labels = torch.tensor([0, 4, -1, 8])
    assert ordinal_loss(torch.zeros(4, K - 1), labels).item() == pytest.approx((1 + 5 + 8) * math.log(2))
    logits = torch.tensor([[2.0, -1.0], [2.0, -1.0]])
    # Label 1: task 0 target 1, task 1 target 0. Label 0: task 0 target 0 only.
    expected = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))
    assert ordinal_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(expected)


def test_ordinal_model_trains_end_to_end_and_gradients_reach_trunk_and_head():
    model = tiny("ordinal").train()
    batch = fairface_batch(16, seed=1)
    logits = model.logits(batch["image"])
    assert logits["age"].shape == (16, K - 1) and logits["race"].shape == (16, 7)
    keep = batch["age"] >= 0
    expected_age = ordinal_loss(logits["age"], batch["age"]) / keep.sum()
    out = model(batch)
    assert out.metrics["loss/age"].item() == pytest.approx(expected_age.item(), rel=1e-5)
    out.loss.backward()
    head = model.heads["age"]
    for name, param in [("age weight", head.linear.weight), ("age biases", head.linear.bias),
                        ("trunk", next(model.trunk.parameters()))]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert head.linear.bias.grad.shape == (K - 1,)
    for head_name in ("race", "age", "gender"):  # nothing labelled: a zero loss that still backpropagates
        batch[head_name] = torch.full((16,), -1)
    empty = model(batch)
    assert empty.loss.item() == 0.0
    empty.loss.backward()


def test_ordinal_validation_matrix_is_argmax_of_predict_proba():
    model = tiny("ordinal").eval()
    batches = [fairface_batch(n, seed=n) for n in (9, 14)]
    means = MetricMeans()
    for batch in batches:
        means.add(model.validation_step(batch), batch["image"].shape[0])
    summary = model.summarize_metrics(means.reduce())
    labels = torch.cat([b["age"] for b in batches]).numpy()
    proba = torch.cat([model.predict_proba(b["image"])["age"] for b in batches])
    assert proba.shape == (23, K)
    torch.testing.assert_close(proba.sum(1), torch.ones(23))
    keep, predicted = labels >= 0, proba.argmax(1).numpy()
    counts = skm.confusion_matrix(labels[keep], predicted[keep], labels=range(K))
    np.testing.assert_allclose(confusion_matrices(summary)["age"] * len(labels), counts, atol=1e-9)
    assert summary["acc/age"] == pytest.approx(skm.accuracy_score(labels[keep], predicted[keep]))
    within = np.abs(labels[keep] - predicted[keep]) <= 1
    assert summary["acc_within1/age"] == pytest.approx(within.mean())


def test_ce_path_keeps_its_state_dict_and_old_bundles_load(tmp_path):
    ce, ordinal = tiny("ce"), tiny("ordinal")
    assert list(ce.state_dict()) == list(tiny_default().state_dict())  # age_loss absent = ce, same keys
    assert ce.state_dict()["heads.age.weight"].shape == (K, 32 * 16)
    assert ce.state_dict()["heads.age.bias"].shape == (K,)
    assert "heads.age.linear.weight" not in ce.state_dict()
    own = {k for k in ordinal.state_dict() if k.startswith("heads.age.")}
    assert own == {"heads.age.linear.weight", "heads.age.linear.bias"}
    # A bundle written before age_loss existed: its config has no such key; it loads as ce, unchanged.
    config = {"model": {"family": "fairface", "resolution": 32,
                        "backbone": {"base_channels": 8, "max_channels": 32}}}
    write_bundle(str(tmp_path / "old"), config=config, weights=ce.state_dict(), meta={})
    loaded = load_bundle(str(tmp_path / "old")).model.eval()
    assert loaded.config.age_loss == "ce" and not loaded.ordinal
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.predict_proba(images)["age"], ce.eval().predict_proba(images)["age"])
    with pytest.raises(RuntimeError):  # an ordinal model does not silently take ce weights
        ordinal.load_state_dict(ce.state_dict())


def tiny_default() -> FairFaceClassifier:
    torch.manual_seed(0)
    return FairFaceClassifier(FairFaceConfig(resolution=32, backbone=TINY_CNN))


def test_age_loss_config_is_checked_and_round_trips():
    cfg = from_dict({"model": {"family": "fairface", "age_loss": "ordinal"}})
    assert cfg.model.age_loss == "ordinal" and from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"model.age_loss: must be one of \('ce', 'ordinal'\), got 'coral'"):
        FairFaceConfig(age_loss="coral")


def test_within_one_accuracy_from_a_hand_made_confusion_matrix():
    # Counts, rows true, columns predicted (K = 4): exact 1 + 2 + 3 + 4 = 10, off by one 2 + 1 + 1 + 1 = 5,
    # off by two or more 1 + 2 + 1 = 4; total 19.
    matrix = np.array([[1, 2, 1, 0],
                       [1, 2, 0, 2],
                       [0, 0, 3, 1],
                       [1, 0, 1, 4]], dtype=float)
    assert within_one_accuracy(matrix) == pytest.approx(15 / 19)
    assert within_one_accuracy(np.zeros((3, 3))) == 0.0
    # Through summarize_metrics: a 9x9 age matrix of rates (the cells sum to the labelled fraction 0.8).
    age = np.zeros((K, K))
    age[0, 0], age[3, 4], age[5, 4], age[8, 6], age[2, 2] = 0.3, 0.2, 0.1, 0.15, 0.05
    means = {f"cm/age/{i}/{j}": float(age[i, j]) for i in range(K) for j in range(K)}
    means.update({f"cm/gender/{i}/{j}": 0.25 for i in range(2) for j in range(2)})
    summary = tiny().summarize_metrics(means)
    assert summary["acc_within1/age"] == pytest.approx(0.65 / 0.8)  # all but the (8, 6) cell
    assert summary["acc/age"] == pytest.approx(0.35 / 0.8)
    assert not any(k.startswith("acc_within1/") and k != "acc_within1/age" for k in summary)
