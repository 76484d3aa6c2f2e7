"""Edit evaluation: exact answers on the toy linear space, then real behaviour on a tiny VAE trained here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen.latent.directions import fit_directions
from facegen.analysis.evaluation import EditPlan, direction_plans, evaluate_edits, evaluation_markdown
from facegen.analysis.judges import PixelProbe, balanced_accuracy
from tests.latent.toy import NAMES, make_space


@pytest.fixture(scope="module")
def correlated():
    """Smiling and Male correlated at 0.8, Eyeglasses independent; exact decoder and scorer."""
    space = make_space(n=1500, correlation=0.8, seed=3)
    directions = {m: fit_directions(space.codes, space.labels, NAMES, method=m) for m in ("mean_diff", "boundary")}
    return space, directions


def _evaluate(space, directions, keep, factor=1.5, n=300, **kwargs):
    plans = direction_plans(directions, list(NAMES), factor, keep, space.codes, space.labels, NAMES)
    images = space.model.decode(space.codes[-n:])
    return evaluate_edits(space.model, images, space.labels[-n:], NAMES, plans, {"probe": space.scorer},
                          keep=keep, **kwargs)


def test_edits_flip_the_target_and_count_every_image_once(correlated):
    space, directions = correlated
    groups = {"Male": space.labels[-300:, 1].long().numpy()}
    result = _evaluate(space, directions, {"Smiling": ["Male"]}, groups=groups,
                       group_names={"Male": ("not Male", "Male")})
    assert result["methods"] == ["mean_diff", "boundary", "conditional"]
    for attribute in NAMES:
        for method in result["methods"]:
            cell = result["attributes"][attribute][method]
            assert cell["n_up"] + cell["n_down"] == 300
            judged = cell["judges"]["probe"]
            assert judged["target_gain"] > 0.2 and judged["flip_rate"] > 0.6, (attribute, method, judged)
            assert cell["strength"] > 0 and cell["pixel_mse"] > 0
    # an independent attribute's edit leaves the others alone, whatever the method
    assert result["attributes"]["Eyeglasses"]["mean_diff"]["judges"]["probe"]["drift"] < 0.05
    # the group breakdown pools the primary judge's flippable images over attributes
    for method in result["methods"]:
        pooled = sum(g["n"] for g in result["groups"][method].values())
        assert pooled == sum(result["attributes"][a][method]["judges"]["probe"]["n_flippable"] for a in NAMES)
        assert set(result["groups"][method]) == {"Male=Male", "Male=not Male"}
    text = evaluation_markdown(result)
    assert "| mean_diff |" in text and "| Eyeglasses |" in text and "| Male=not Male |" in text


def test_conditional_editing_holds_the_kept_attribute(correlated):
    space, directions = correlated
    result = _evaluate(space, directions, {"Smiling": ["Male"]})
    drift = {m: result["attributes"]["Smiling"][m]["judges"]["probe"]["keep_drift"] for m in result["methods"]}
    assert drift["mean_diff"] > 0.3, drift  # the smile vector also changes the correlated Male
    # here the boundary normal already separates Smiling from Male; projecting Male out keeps it as small
    assert max(drift["conditional"], drift["boundary"]) < drift["mean_diff"] / 5, drift


def test_slot_plans_and_errors_are_reported_per_cell(correlated):
    space, directions = correlated
    images = space.model.decode(space.codes[:40])
    plans = {"conditional": {"Smiling": EditPlan({"Smiling": 1.0}, {"Smiling": -1.0}, "conditional",
                                                 directions["mean_diff"], keep=("Smiling",))}}
    result = evaluate_edits(space.model, images, space.labels[:40], NAMES, plans, {"probe": space.scorer})
    assert "cannot be both edited and kept" in result["attributes"]["Smiling"]["conditional"]["error"]
    assert "n/a" in evaluation_markdown(result)


def test_pixel_probe_learns_what_the_pixels_show(correlated):
    space, _ = correlated
    images = space.model.decode(space.codes)
    probe = PixelProbe.fit(images[:1000], space.labels[:1000], NAMES, side=8)
    accuracy = balanced_accuracy(probe, images[1000:], space.labels[1000:], NAMES)
    assert set(accuracy) == set(NAMES) and min(accuracy.values()) > 0.9, accuracy


# --- a tiny VAE trained here, judged by a linear probe on its codes ----------------------------------------

ATTRIBUTES = ("Male", "No_Beard", "Wearing_Lipstick", "Smiling", "Eyeglasses")
KEEP = {"Wearing_Lipstick": ["Male"], "No_Beard": ["Male"], "Eyeglasses": ["Male"]}


class CodeProbe:
    """An AttributeScorer reading the model's codes: one L2 logistic regression per attribute, fitted on the
    training codes' ground-truth labels (the same estimator as the ``boundary`` directions)."""

    def __init__(self, model, codes: torch.Tensor, labels: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model, self.mean, self.std = model, codes.mean(0), codes.std(0)
        fits = [LogisticRegression(max_iter=2000).fit(((codes - self.mean) / self.std).numpy(), labels[:, j].numpy())
                for j in range(labels.shape[1])]
        self.weight = torch.tensor(np.stack([f.coef_[0] for f in fits])).float()
        self.bias = torch.tensor([f.intercept_[0] for f in fits]).float()

    attribute_names = ATTRIBUTES

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.model.encode(images) - self.mean) / self.std @ self.weight.T + self.bias)


@pytest.fixture(scope="module")
def trained(tiny_shards):
    from facegen.data.pipeline import read_examples
    from facegen.data.shards import read_manifest
    from facegen.models import build_model
    from tests.tiny import tiny_config

    manifest = read_manifest(tiny_shards)
    columns = [manifest.attribute_names.index(a) for a in ATTRIBUTES]
    train = read_examples(manifest, "train", 128)
    held = [read_examples(manifest, split, 64) for split in ("val", "test")]
    torch.manual_seed(0)
    model = build_model(tiny_config("vae").model)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(250):  # ~8 s on one core: reconstructions good enough that re-encoding tracks edits
        rows = torch.randint(0, train["image"].shape[0], (32,))
        loss = model({k: v[rows] for k, v in train.items()}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    codes, labels = model.encode(train["image"]).detach(), train["attrs"][:, columns]
    images = torch.cat([h["image"] for h in held])
    held_labels = torch.cat([h["attrs"] for h in held])[:, columns]
    return model, codes, labels, images, held_labels, CodeProbe(model, codes, labels)


def test_trained_model_edits_raise_the_score_and_conditional_keeps_attributes(trained):
    model, codes, labels, images, held_labels, probe = trained
    directions = {m: fit_directions(codes, labels, ATTRIBUTES, method=m) for m in ("mean_diff", "boundary")}
    plans = direction_plans(directions, list(KEEP), 1.5, KEEP, codes, labels, ATTRIBUTES)
    result = evaluate_edits(model, images, held_labels, ATTRIBUTES, plans, {"probe": probe}, keep=KEEP)
    for method in result["methods"]:
        assert result["summary"][method]["probe/target_gain"] > 0.02, (method, result["summary"][method])
    for attribute in ("Wearing_Lipstick", "No_Beard"):  # edits of attributes the codes carry well
        for method in result["methods"]:
            assert result["attributes"][attribute][method]["judges"]["probe"]["target_gain"] > 0.03
    kept = {m: result["summary"][m]["probe/keep_drift"] for m in result["methods"]}
    assert kept["conditional"] < 0.5 * min(kept["mean_diff"], kept["boundary"]), kept
