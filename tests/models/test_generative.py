"""Generative families beyond the generic registry tests: who updates what, k_t, conditions, code accuracy.

GAN losses do not fall on their own (each player undoes the other's progress), so their learning check is
what a GAN can honestly show on a fixed batch: the discriminator learns the real images and the codes
become recoverable from generated images.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.models import MODELS, build_model
from facegen.models.base import LatentPart
from facegen.models.code_accuracy import categorical_code_accuracy
from facegen.models.gan_augment import jitter
from facegen.models.losses import paired_assignment_information
from facegen.training.loop import make_optimizers
from tests.conftest import free_port
from tests.models.test_models import fixed_batch
from tests.tiny import TINY_MODEL, tiny_config

MULTI_PLAYER = sorted(f for f in MODELS if len(MODELS[f].players) > 1) + [  # options from tests/tiny.py
    "cvae+adversary", "infogan+info_in_steps", "infogan+real_info", "infogan+diff_augment+ema",
    "began+diff_augment+ema"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (and contention on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(family: str, **model_keys):
    torch.manual_seed(0)
    return build_model(from_dict({"model": {"family": family, **TINY_MODEL[family], **model_keys}}).model)


def step(model, optimizers, batch, player: str) -> dict[str, float]:
    """One player's step exactly as ``training/loop.py`` does it."""
    model.zero_grad(set_to_none=True)
    out = model(batch, player=player)
    out.loss.backward()
    optimizers[player].step()
    return {k: float(v) for k, v in out.metrics.items()}


@pytest.mark.parametrize("family", MULTI_PLAYER)
def test_a_player_step_moves_exactly_that_players_parameters(family):
    torch.manual_seed(0)
    cfg = tiny_config(family)
    model = build_model(cfg.model)
    optimizers = make_optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}  # not a running average
    covered = set()
    for player in model.players:
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        step(model, optimizers, fixed_batch(), player)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        own = {names[id(p)] for p in model.parameters_for(player)}
        assert moved == own, f"{player}: moved but not its own {sorted(moved - own)[:3]}, " \
                             f"own but still {sorted(own - moved)[:3]}"
        covered |= own
    assert covered == set(names.values())  # no parameter is left untrained


def test_infogan_players_own_the_specified_modules():
    model = tiny("infogan")

    def prefixes(player):
        return {n.split(".")[0] for n, p in model.named_parameters()
                if any(p is q for q in model.parameters_for(player))}

    assert prefixes("generator") == {"generator"}
    assert prefixes("discriminator") == {"trunk", "real_fake"}
    assert prefixes("info") == {"generator", "trunk", "codes"}


def test_infogan_info_in_steps_has_no_info_player_and_d_steps_the_code_heads():
    model = tiny("infogan", info_in_steps=True)
    assert model.players == ("generator", "discriminator")
    out = model(fixed_batch(), player="generator")
    assert {"g_loss", "cat_ce", "code_acc"} <= set(out.metrics)  # G's own loss carries the info term
    model(fixed_batch(), player="discriminator").loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.codes.parameters())
    with pytest.raises(ConfigError, match="info_in_steps"):
        tiny("began", info_in_steps=True)


def test_info_augment_moves_each_image_and_lets_the_gradient_through():
    images = fixed_batch()["image"].requires_grad_()
    assert jitter(images, 0.0) is images  # off: untouched
    torch.manual_seed(0)
    moved = jitter(images, 0.15)
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    moved.sum().backward()  # the generator learns through the resampling
    assert images.grad is not None and images.grad.abs().sum() > 0
    model = tiny("infogan", info_augment=0.15)
    assert torch.isfinite(model(fixed_batch(), player="info").loss)
    with pytest.raises(ConfigError, match="info_augment"):
        tiny("infogan", info_augment=0.5)


@pytest.mark.parametrize("player, weights", [
    ("discriminator", {}),  # the real/fake head
    ("info", {"lambda_categorical": 1.0, "lambda_continuous": 0.0, "lambda_noise": 0.0}),  # code head: logits
    ("info", {"lambda_categorical": 0.0, "lambda_continuous": 1.0, "lambda_noise": 0.0}),  # code head: mean/std
    ("info", {"lambda_categorical": 0.0, "lambda_continuous": 0.0, "lambda_noise": 1.0}),  # noise head
])
def test_infogan_trunk_learns_from_every_head(player, weights):
    model = tiny("infogan", **weights)
    model(fixed_batch(), player=player).loss.backward()
    for name, p in model.trunk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"trunk.{name} got no gradient from {player}"


# metric -> the largest ratio of its last-10-step mean to its first-5-step mean (thresholds hold with margin
# over several seeds; the tests use seed 0).
LEARNS = {
    "infogan": {"d_loss": 0.6, "cat_ce": 0.6, "noise_mse": 0.6},  # D separates; codes and noise recoverable
    "infogan+info_in_steps": {"d_loss": 0.6, "cat_ce": 0.6, "noise_mse": 0.6},
    "began": {"loss_real": 0.5, "cat_ce": 0.75},  # D reconstructs real images; the category is recoverable
}


@pytest.mark.parametrize("family", sorted(LEARNS))
def test_gan_discriminator_and_codes_learn_a_fixed_batch(family):
    torch.manual_seed(0)
    cfg = tiny_config(family, train={"lr": 2e-3, "betas": [0.5, 0.999]})
    model = build_model(cfg.model)
    optimizers = make_optimizers(model, cfg)
    batch, history = fixed_batch(), []
    for _ in range(60):
        row = {}
        for player in model.players:
            row.update(step(model, optimizers, batch, player))
        history.append(row)
    for key, ratio in LEARNS[family].items():
        first, last = np.mean([h[key] for h in history[:5]]), np.mean([h[key] for h in history[-10:]])
        assert last < ratio * first, f"{family} {key}: {first:.4g} -> {last:.4g}"
    assert np.mean([h["code_acc"] for h in history[-10:]]) > 0.6  # chance is 1/4


def test_began_k_follows_the_equilibrium_rule_and_stays_in_range():
    real = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # hard to reconstruct
    moves = {}
    for gamma in (1.0, 0.05):
        model = tiny("began", gamma=gamma, k_init=0.5, lambda_k=0.1)
        m = model({"image": real}, player="discriminator").metrics
        expected = 0.5 + 0.1 * (gamma * m["loss_real"] - m["loss_fake"])
        assert float(m["k"]) == 0.5  # the step used k_t; k_t+1 is in the buffer
        assert float(model.k) == pytest.approx(float(expected), abs=1e-6)
        assert float(m["M"]) == pytest.approx(float(m["loss_real"] + (gamma * m["loss_real"] - m["loss_fake"]).abs()))
        moves[gamma] = float(model.k) - 0.5
    assert moves[1.0] > 0 > moves[0.05]  # fakes too easy for D -> push them harder, and the other way round

    for gamma in (1.0, 0.05):  # a huge lambda_k slams k against its bounds, never past them
        model = tiny("began", gamma=gamma, k_init=0.5, lambda_k=100.0)
        for _ in range(3):
            model({"image": real}, player="discriminator")
            assert 0.0 <= float(model.k) <= 1.0
        assert float(model.k) == (1.0 if gamma == 1.0 else 0.0)
        model.eval()
        model.validation_step({"image": real})
        assert float(model.k) == (1.0 if gamma == 1.0 else 0.0)  # validation never moves k
        assert "k" in model.state_dict()  # checkpointed and bundled with the weights


def _ddp_k_worker(rank: int, port: int, out: dict) -> None:
    """Two discriminator steps under DDP on rank-specific batches; records k and the local losses."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = tiny("began", gamma=1.0, k_init=0.5, lambda_k=0.1)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)  # as ray.train.torch.prepare_model
    real = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(10 + rank)) * 2 - 1  # per rank
    torch.manual_seed(100 + rank)  # different fakes per rank too, as in the loop
    records = []
    for _ in range(2):  # the second forward starts with DDP's broadcast of rank 0's buffers
        result = ddp({"image": real}, player="discriminator")
        result.loss.backward()
        records.append((float(model.k), float(result.metrics["loss_real"]), float(result.metrics["loss_fake"])))
    out[rank] = records
    dist.destroy_process_group()


def test_began_k_is_identical_on_every_ddp_rank():
    port = free_port()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_k_worker, args=(port, out), nprocs=2)
        ranks = [out[0], out[1]]
    (k_a, real_a, fake_a), (k_b, real_b, fake_b) = ranks[0][0], ranks[1][0]
    assert (real_a, fake_a) != (real_b, fake_b)  # the ranks really saw different batches
    mean_real, mean_fake = (real_a + real_b) / 2, (fake_a + fake_b) / 2
    assert k_a == k_b == pytest.approx(0.5 + 0.1 * (mean_real - mean_fake), abs=1e-6)  # from both ranks' means
    assert ranks[0][1][0] == ranks[1][1][0]  # and still identical after the next step


def test_cvae_decodes_one_z_differently_per_condition():
    # A costly z (beta 50) leaves the brightness to the condition, although the encoder sees it too.
    model = tiny("cvae", condition="label", num_classes=2, decoder_std=1.0, beta=50.0)
    labels = torch.tensor([0, 1] * 4)
    images = (labels.float() * 1.6 - 0.8)[:, None, None, None].expand(8, 3, 32, 32).contiguous()  # dark / bright
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        optimizer.zero_grad()
        model({"image": images, "label": labels}).loss.backward()
        optimizer.step()
    grid = model.decode_all_conditions(torch.randn(3, 8))  # (3 z, 2 conditions, 3, 32, 32)
    assert grid.shape == (3, 2, 3, 32, 32)
    brightness = grid.mean(dim=(2, 3, 4))  # (3, 2)
    assert (brightness[:, 0] < -0.5).all() and (brightness[:, 1] > 0.5).all()
    cond = model.condition_of({"label": torch.tensor([1, -1])})
    assert torch.equal(cond, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))  # missing label: all-zero condition
    z = model.encode(images[:2], cond)
    assert z.shape == (2, 10) and torch.equal(z[:, 8:], cond)
    assert torch.equal(model.decode(z), model.decode(z[:, :8], cond))
    with pytest.raises(ValueError, match="needs the images' condition"):
        model.encode(images[:2])


class _KnownCodes(torch.nn.Module):
    """A stand-in LatentModel whose categorical code for image i is ``codes[i]``."""

    latent_parts = (LatentPart("noise", 2, "gaussian"), LatentPart("code0", 4, "categorical"))

    def __init__(self, codes: list[int]) -> None:
        super().__init__()
        self.codes = torch.tensor(codes)

    def encode(self, images, cond=None):
        index = images[:, 0, 0, 0].long()  # the test writes each image's index into a pixel
        return torch.cat([torch.zeros(len(index), 2), torch.eye(4)[self.codes[index]]], 1)


def test_categorical_code_accuracy_uses_the_best_one_to_one_assignment():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, -1])
    codes = [2, 2, 1, 3, 3, 0, 0, 0, 1, 1, 2, 0]  # 0->2, 1->3, 2->0, 3->1; two misses; the last is unlabelled
    images = torch.arange(12.0)[:, None, None, None].expand(12, 3, 2, 2)
    assert categorical_code_accuracy(_KnownCodes(codes), images, labels) == pytest.approx(9 / 11)
    # Many codes on one class cannot all count: one-to-one, the best is 2 of 4.
    assert categorical_code_accuracy(_KnownCodes([0, 1, 2, 3]), images[:4], torch.zeros(4).long()) == 0.25


def test_validation_confusion_becomes_label_code_accuracy():
    model = tiny("infogan")  # categorical [4]
    permuted = {f"confusion/{i}/{(i + 1) % 4}": 0.25 for i in range(4)}
    means = {"g_loss": 1.0, **{f"confusion/{i}/{j}": 0.0 for i in range(4) for j in range(4)}, **permuted}
    summary = model.summarize_metrics(means)
    assert summary == {"g_loss": 1.0, "label_code_acc": pytest.approx(1.0)}
    batch = {**fixed_batch(), "label": torch.tensor([0, 1, 2, 3] * 2)}
    metrics = model.eval().validation_step(batch)
    assert sum(float(v) for k, v in metrics.items() if k.startswith("confusion/")) == pytest.approx(1.0)


def test_paired_assignment_information_known_answers():
    k, n = 4, 64
    onehot = torch.nn.functional.one_hot(torch.arange(n) % k, k).float()  # balanced, confident
    assert float(paired_assignment_information(onehot, onehot)) == pytest.approx(np.log(k), abs=1e-4)
    shuffled = onehot[torch.randperm(n, generator=torch.Generator().manual_seed(0))]  # views disagree
    assert float(paired_assignment_information(onehot, shuffled)) < 0.2
    one_class = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), k).float()  # confident, unbalanced
    assert float(paired_assignment_information(one_class, one_class)) == pytest.approx(0.0, abs=1e-4)
    uniform = torch.full((n, k), 1 / k)  # balanced, unsure
    assert float(paired_assignment_information(uniform, uniform)) == pytest.approx(0.0, abs=1e-4)


def test_real_info_sorts_real_images_into_groups_and_never_reaches_the_generator_through_them():
    g = torch.Generator().manual_seed(0)
    # Two kinds of real image (dark left half / dark right half): there is one bit to find.
    left = torch.ones(8, 3, 32, 32)
    left[..., :16] = -1
    real = torch.cat([left, left.flip(-1)]) + 0.05 * torch.randn(16, 3, 32, 32, generator=g)
    off = {"lambda_categorical": 0.0, "lambda_continuous": 0.0, "lambda_noise": 0.0}
    model = tiny("infogan", real_info=1.0, **off)  # only the real-image term is left
    model({"image": real}, player="info").loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generator.parameters())
    assert model.codes.code_head[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trunk.parameters())

    optimizer = torch.optim.Adam([*model.trunk.parameters(), *model.codes.parameters()], lr=2e-3)
    history = []
    for _ in range(60):
        optimizer.zero_grad(set_to_none=True)
        out = model({"image": real}, player="info")
        out.loss.backward()
        optimizer.step()
        history.append(float(out.metrics["real_mi"]))
    assert np.mean(history[-10:]) > 0.5 > np.mean(history[:5])  # log 2 = 0.69: the two kinds, apart
    model.eval()
    codes = model.encode(real)[:, :4].argmax(1)
    assert set(codes[:8].tolist()).isdisjoint(codes[8:].tolist())  # the code tells the kinds apart
    with pytest.raises(ConfigError, match="real_info"):
        tiny("infogan", real_info=1.0, info_in_steps=True)


def test_real_overcluster_adds_a_finer_head_outside_the_latent():
    model = tiny("infogan", real_info=1.0, real_overcluster=6)
    assert model.codes.overcluster_head[-1].out_features == 6
    assert model.latent_width() == tiny("infogan", real_info=1.0).latent_width()  # not a code: nothing to decode
    out = model({"image": fixed_batch()["image"]}, player="info")
    out.loss.backward()
    assert {"real_mi", "real_mi_over"} <= set(out.metrics)
    assert model.codes.overcluster_head[0].weight.grad.abs().sum() > 0
    for bad in ({"real_overcluster": 6}, {"real_info": 1.0, "real_overcluster": 1}):
        with pytest.raises(ConfigError, match="real_overcluster"):
            tiny("infogan", **bad)


def test_vae_attribute_dims_carry_their_attributes_as_logits():
    torch.manual_seed(0)
    cfg = tiny_config("vae+attribute_dims", train={"lr": 2e-3})
    model = build_model(cfg.model)
    assert model.attribute_dimensions() == {"Male": 0, "Smiling": 1}
    optimizers = make_optimizers(model, cfg)
    batch = fixed_batch()
    first = step(model, optimizers, batch, "main")
    for _ in range(60):
        last = step(model, optimizers, batch, "main")
    assert last["attribute_bce"] < 0.3 * first["attribute_bce"] and last["attribute_acc"] == 1.0
    model.eval()
    mu = model.encode(batch["image"])
    labels = batch["attrs"][:, [20, 31]]  # Male, Smiling in CelebA order
    assert torch.equal(mu[:, :2] > 0, labels > 0.5)
    for bad in (["Male", "Male"], ["Not_An_Attribute"], ["Male"] * 9):
        with pytest.raises(ConfigError, match="attribute_dims"):
            tiny("vae", attribute_dims=bad)
