"""Classifier-guided edits on a latent space whose answers are known (tests/latent/toy.py): the probe reads
attribute k as sigmoid(3 * z . Q[k]), so the shortest move that makes it read "present" with probability p is
(logit(p) - 3 z . Q[k]) / 3 along Q[k], and nothing else should move."""

import math

import pytest
import torch

from facegen.latent.guided import Guidance, Guide, code_scale, guided_codes
from facegen.precision import cpu_has_bf16
from tests.latent.toy import SIDE, make_space

GAIN = 3.0


@pytest.fixture(scope="module")
def space():
    return make_space(n=400, dim=8, correlation=0.6)


def _guide(space):
    return Guide(space.scorer, resolution=SIDE)


def test_guided_edit_reaches_the_target_by_the_shortest_move_and_holds_the_others(space):
    codes = space.codes[:64]
    targets = 1 - space.labels[:64, 0]  # every face asks for the smile it does not have
    guidance = Guidance(steps=200, lr=0.05, margin=0.9, noise=0.0, bf16=False)  # plain fp32: the shortest move
    edited = guided_codes(space.model.decode, _guide(space), codes, "Smiling", targets,
                          scale=torch.ones(codes.shape[1]), guidance=guidance)
    before, after = space.scorer.predict_proba(space.model.decode(codes)), space.scorer.predict_proba(
        space.model.decode(edited))
    toward = targets.bool()
    assert (after[toward, 0] >= 0.9 - 1e-4).all() and (after[~toward, 0] <= 0.1 + 1e-4).all()
    assert (after[:, 1:] - before[:, 1:]).abs().max() < 0.02  # Male and Eyeglasses read as before
    # The move is the shortest one: along the true direction, its length what the margin needs (+ one step).
    move = edited - codes  # (N, D)
    sign = targets * 2 - 1
    cosine = torch.nn.functional.cosine_similarity(move, sign[:, None] * space.true_directions[0], dim=1)
    assert cosine.min() > 0.99
    needed = (math.log(9) - sign * GAIN * (codes @ space.true_directions[0])).clamp(min=0) / GAIN
    assert ((move.norm(dim=1) - needed).abs() <= guidance.lr + 1e-4).all()


def test_faces_that_already_read_as_the_target_do_not_move(space):
    codes = space.codes[:64]
    probs = space.scorer.predict_proba(space.model.decode(codes))[:, 0]
    sure = (probs > 0.99) | (probs < 0.01)  # past the default margin (0.98) already
    assert sure.sum() >= 5
    targets = (probs > 0.5).float()  # ask each face for what it already is
    edited = guided_codes(space.model.decode, _guide(space), codes, "Smiling", targets, scale=code_scale(space.codes))
    assert torch.equal(edited[sure], codes[sure])


def test_guidance_changes_no_parameter_and_the_step_count_bounds_the_distance(space):
    codes = space.codes[:16]
    guidance = Guidance(steps=3, lr=0.25)
    scale = code_scale(space.codes)
    with torch.no_grad():  # as the benchmark calls it: guidance builds its own graph to the codes
        edited = guided_codes(space.model.decode, _guide(space), codes, "Male", torch.ones(16), scale=scale,
                              guidance=guidance)
    assert all(p.grad is None for p in space.scorer.parameters())
    assert all(b.grad is None for b in space.model.buffers())
    whitened = ((edited - codes) / scale).norm(dim=1)
    assert (whitened <= guidance.steps * guidance.lr + 1e-4).all()


def test_bad_requests_name_the_problem(space):
    with pytest.raises(ValueError, match="does not read 'Bald'"):
        guided_codes(space.model.decode, _guide(space), space.codes[:2], "Bald", torch.ones(2),
                     scale=torch.ones(8))
    with pytest.raises(ValueError, match="margin"):
        Guidance(margin=0.4)


def test_a_strength_is_the_target_by_its_sign_and_a_bound_on_the_move_by_its_size(space):
    from facegen.latent.guided import guided_edit

    codes, scale = space.codes[:32], code_scale(space.codes)
    guide = _guide(space)
    for strength in (0.5, 1.0, -1.0):
        edited = guided_edit(space.model, guide, codes, {"Smiling": strength}, scale)
        whitened = ((edited - codes) / scale).norm(dim=1)
        assert (whitened <= abs(strength) + 1e-4).all() and whitened.max() > abs(strength) - 0.25 - 1e-4
        before, after = (space.scorer.predict_proba(space.model.decode(c))[:, 0] for c in (codes, edited))
        moved = whitened > 0
        assert ((after - before)[moved] * strength > 0).all()  # toward present when positive, absent when not
    assert torch.equal(guided_edit(space.model, guide, codes, {"Smiling": 0.1}, scale), codes)  # < one step


def test_guided_edits_are_checked_before_any_compute():
    from facegen.latent.guided import check_guided_edits

    check_guided_edits(["Smiling"], {"Smiling": -10.0, "class": 3}, slots=["class"])  # a slot passes as is
    for edits, says in (({"Bald": 1.0}, "does not read 'Bald'"), ({"Smiling": 0.0}, "strength"),
                        ({"Smiling": 10.5}, "strength")):
        with pytest.raises(ValueError, match=says):
            check_guided_edits(["Smiling"], edits)


def test_noise_averaged_guidance_still_reaches_the_target_and_is_repeatable(space):
    codes = space.codes[:64]
    targets = 1 - space.labels[:64, 0]
    guidance = Guidance(steps=200, lr=0.05, margin=0.9, noise=0.2, copies=2)
    edit = lambda: guided_codes(space.model.decode, _guide(space), codes, "Smiling", targets,  # noqa: E731
                                scale=torch.ones(codes.shape[1]), guidance=guidance)
    edited = edit()
    assert torch.equal(edited, edit())  # the noise draws are seeded: the same request, the same face
    after = space.scorer.predict_proba(space.model.decode(edited))[:, 0]
    toward = targets.bool()
    assert (after[toward] >= 0.85).float().mean() >= 0.95 and (after[~toward] <= 0.15).float().mean() >= 0.95
    # Still (nearly) along the true direction: the noise averages out of the steps.
    sign = targets * 2 - 1
    cosine = torch.nn.functional.cosine_similarity(edited - codes, sign[:, None] * space.true_directions[0], dim=1)
    assert cosine[(edited - codes).norm(dim=1) > 0].median() > 0.95
    with pytest.raises(ValueError, match="noise"):
        Guidance(noise=-0.1)


def test_bf16_steps_land_where_fp32_steps_do(space):
    """bf16 autocast (where the CPU has it) only chooses the path: the faces end where fp32 steps take them."""
    codes, targets, scale = space.codes[:64], 1 - space.labels[:64, 0], code_scale(space.codes)
    ends = {bf16: guided_codes(space.model.decode, _guide(space), codes, "Smiling", targets, scale=scale,
                               guidance=Guidance(bf16=bf16)) for bf16 in (False, True)}
    moved = ((ends[False] - codes) / scale).norm(dim=1)
    apart = ((ends[True] - ends[False]) / scale).norm(dim=1)
    assert moved.median() > 0.5 and apart.median() <= 0.1 * moved.median()
    if not cpu_has_bf16():  # no native bf16: the fallback is exactly the fp32 path, not an emulated one
        assert torch.equal(ends[True], ends[False])
    after = space.scorer.predict_proba(space.model.decode(ends[True]))[:, 0]
    assert ((after >= 0.5) == targets.bool()).float().mean() >= 0.95
