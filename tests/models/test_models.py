"""Every registered family: builds, steps each player, learns a fixed batch, and round-trips as a bundle."""

from __future__ import annotations

import pytest
import torch

from facegen.bundle import load_bundle, write_bundle
from facegen.models import MODELS, LatentModel, build_model
from facegen.models.losses import full_precision
from tests.tiny import TINY_MODEL, TINY_OPTIONS, tiny_config

FAMILIES = sorted(MODELS)
# Adversarial families' losses do not fall by design (each player undoes the other's progress); their
# learning checks are in test_generative.py.
SINGLE_PLAYER = [f for f in FAMILIES if MODELS[f].players == ("main",)]
CONFIGS = FAMILIES + sorted(TINY_OPTIONS)  # every family, and the options that change its players


def condition_for(model, n: int) -> torch.Tensor | None:
    """A valid condition (first class, or only the first attribute, on) for a conditional model, else None."""
    size = sum(part.size for part in getattr(model, "latent_parts", ()) if part.kind == "condition")
    if not size:
        return None
    cond = torch.zeros(n, size)
    cond[:, 0] = 1
    return cond


def test_every_family_has_a_tiny_config():
    assert set(TINY_MODEL) == set(MODELS)


def fixed_batch(resolution: int = 32, n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # Smooth images (upsampled noise) are learnable, unlike white noise.
    coarse = torch.rand(n, 3, resolution // 8, resolution // 8, generator=g) * 2 - 1
    # Random labels of every kind, so each family (generative or classifier) finds the ones it reads.
    return {"image": torch.nn.functional.interpolate(coarse, size=resolution, mode="bilinear"),
            "attrs": torch.randint(0, 2, (n, 40), generator=g).float(),
            "race": torch.randint(0, 7, (n,), generator=g), "age": torch.randint(0, 9, (n,), generator=g),
            "gender": torch.randint(0, 2, (n,), generator=g), "label": torch.full((n,), -1)}


@pytest.mark.parametrize("family", CONFIGS)
def test_step_outputs_and_shapes(family):
    torch.manual_seed(0)
    model = build_model(tiny_config(family).model)
    batch = fixed_batch()
    for player in model.players:
        out = model(batch, player=player)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(v.ndim == 0 and not v.requires_grad for v in out.metrics.values())
    if isinstance(model, LatentModel):
        width = sum(part.size for part in model.latent_parts)
        z = model.encode(batch["image"], condition_for(model, 8))
        assert z.shape == (8, width)
        assert model.decode(z).shape == batch["image"].shape
        assert model.sample(3).shape == (3, 3, 32, 32)


@pytest.mark.parametrize("family", CONFIGS)
def test_every_player_steps_under_cpu_bf16_autocast(family):
    """``train.amp_cpu``: convolutions run in bf16, while losses, weights and gradients stay finite fp32."""
    torch.manual_seed(0)
    model = build_model(tiny_config(family).model)
    dtypes = set()
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    for player in model.players:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(fixed_batch(), player=player)
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss), (player, out.loss)
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads), player
    assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("family", SINGLE_PLAYER)
def test_loss_falls_on_a_tiny_fixed_batch(family, precision):
    torch.manual_seed(0)
    model = build_model(tiny_config(family).model)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = fixed_batch()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"{family}: loss {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("family", CONFIGS)
def test_bundle_round_trip_gives_identical_outputs(family, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(family)
    model = build_model(cfg.model).eval()
    write_bundle(str(tmp_path / "bundle"), config=cfg.to_dict(), weights=model.state_dict(),
                 meta={"attribute_names": ["Smiling"]}, extras={"direction/Smiling": torch.ones(8)})
    loaded = load_bundle(str(tmp_path / "bundle"))
    assert loaded.config == cfg and loaded.attribute_names == ["Smiling"]
    assert torch.equal(loaded.extras["direction/Smiling"], torch.ones(8))
    if not isinstance(model, LatentModel):  # classifiers: the same (eval-mode, deterministic) validation metrics
        expected, got = model.validation_step(fixed_batch()), loaded.model.validation_step(fixed_batch())
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
        return
    images = fixed_batch()["image"]
    with torch.no_grad():
        cond = condition_for(model, images.shape[0])
        assert torch.equal(model.encode(images, cond), loaded.model.encode(images, cond))
        z = torch.randn(4, sum(p.size for p in model.latent_parts))
        assert torch.equal(model.decode(z), loaded.model.decode(z))


def test_loading_something_that_is_not_a_bundle_is_one_line(tmp_path):
    from facegen.errors import FacegenError

    with pytest.raises(FacegenError, match="not a model bundle"):
        load_bundle(str(tmp_path))


def test_full_precision_raises_half_types_and_keeps_the_rest():
    for dtype, expected in [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                            (torch.float32, torch.float32), (torch.float64, torch.float64)]:
        assert full_precision(torch.ones(2, dtype=dtype)).dtype == expected
