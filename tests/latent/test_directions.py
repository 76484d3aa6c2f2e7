from __future__ import annotations

import pytest
import torch

from facegen.latent.directions import Directions, fit_directions
from facegen.latent.edit import edit
from tests.latent.toy import NAMES, make_space


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("method", ["mean_diff", "boundary"])
def test_every_method_finds_the_true_directions(method):
    space = make_space()
    directions = fit_directions(space.codes, space.labels, NAMES, method=method)
    for k, name in enumerate(NAMES):
        truth = space.true_directions[k]
        assert cosine(directions.vector(name), truth) > 0.95, (method, name)
        others = [n for n in NAMES if n != name]
        assert cosine(directions.conditional(name, keep=others), truth) > 0.95, (method, name, "conditional")
    # scale = std of the codes along the direction, so strength 1 is one standard deviation
    projections = space.codes @ directions.vectors.T
    assert torch.allclose(directions.scales, projections.std(0), rtol=1e-3)


def test_correlated_attributes_leak_into_the_mean_difference_but_not_the_boundary():
    space = make_space(correlation=0.6)
    mean_diff = fit_directions(space.codes, space.labels, NAMES, method="mean_diff")
    boundary = fit_directions(space.codes, space.labels, NAMES, method="boundary")
    truth = space.true_directions[0]
    assert cosine(boundary.vector("Smiling"), truth) > 0.95
    assert cosine(mean_diff.vector("Smiling"), truth) < cosine(boundary.vector("Smiling"), truth) - 0.05


def test_conditional_editing_leaves_the_kept_attributes_projection_unchanged():
    space = make_space(correlation=0.6)
    directions = fit_directions(space.codes, space.labels, NAMES, method="mean_diff")
    unit = directions.conditional("Smiling", keep=["Male"])
    assert abs(float(unit @ directions.vector("Male"))) < 1e-5 and abs(float(unit.norm()) - 1) < 1e-5
    images = space.model.decode(space.codes[:64])
    male = directions.vector("Male")
    plain = edit(space.model, images, {"Smiling": 2.0}, directions=directions, scorer=space.scorer)
    kept = edit(space.model, images, {"Smiling": 2.0}, keep=["Male"], method="conditional", directions=directions,
                scorer=space.scorer)
    before = (plain.reconstructions.flatten(1) @ space.model.weight.T) @ male
    assert torch.allclose(kept.codes @ male, before, atol=1e-4)  # the kept projection does not move
    assert not torch.allclose(plain.codes @ male, before, atol=1e-2)  # ...while the plain smile vector moves it
    smiling_gain = (kept.scores_after - kept.scores_before)[:, 0].mean()
    male_drift = (kept.scores_after - kept.scores_before)[:, 1].abs().mean()
    plain_male_drift = (plain.scores_after - plain.scores_before)[:, 1].abs().mean()
    assert smiling_gain > 0.2 and male_drift < plain_male_drift


def test_conditional_rejects_impossible_requests():
    space = make_space()
    directions = fit_directions(space.codes, space.labels, NAMES)
    with pytest.raises(ValueError, match="both edited and kept"):
        directions.conditional("Smiling", keep=["Smiling"])
    with pytest.raises(ValueError, match="unknown attribute 'Beard'.*known: Smiling, Male, Eyeglasses"):
        directions.conditional("Smiling", keep=["Beard"])
    collinear = Directions(names=("a", "b"), vectors=torch.eye(3)[[0, 0]], scales=torch.ones(2), cov=torch.eye(3),
                           method="mean_diff")
    with pytest.raises(ValueError, match="span of the kept"):
        collinear.conditional("a", keep=["b"])


def test_fit_directions_validates_its_inputs():
    space = make_space(n=200)
    with pytest.raises(ValueError, match="unknown direction method 'pca'"):
        fit_directions(space.codes, space.labels, NAMES, method="pca")
    labels = space.labels.clone()
    labels[:, 2] = 1
    with pytest.raises(ValueError, match="'Eyeglasses': all labels are 1"):
        fit_directions(space.codes, labels, NAMES)
    with pytest.raises(ValueError, match="labels have 3 columns but 2 names"):
        fit_directions(space.codes, space.labels, NAMES[:2])
    with pytest.raises(ValueError, match="0/1"):
        fit_directions(space.codes, space.labels * 2, NAMES)


def test_directions_round_trip_through_extras():
    space = make_space(n=300)
    directions = fit_directions(space.codes, space.labels, NAMES, method="boundary")
    extras = directions.to_extras("directions/boundary")
    assert all(isinstance(v, torch.Tensor) for v in extras.values())
    back = Directions.from_extras(extras, "directions/boundary")
    assert back.names == NAMES and back.method == "boundary"
    assert torch.equal(back.vectors, directions.vectors) and torch.equal(back.cov, directions.cov)
    with pytest.raises(ValueError, match="no directions under 'directions/mean_diff'"):
        Directions.from_extras(extras, "directions/mean_diff")
