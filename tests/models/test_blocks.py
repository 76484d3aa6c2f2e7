"""The conv stacks: residual blocks begin as the identity, and a deeper decoder keeps the 0-block layout."""

from __future__ import annotations

import pytest
import torch

from facegen.config import from_dict
from facegen.errors import ConfigError
from facegen.models import build_model
from facegen.models.blocks import ConvDecoder, ResBlock
from tests.tiny import tiny_config


def test_a_new_residual_block_is_the_identity_and_then_learns():
    block = ResBlock(8)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)
    block(x).pow(2).sum().backward()
    assert block.branch[-1].weight.grad.abs().sum() > 0  # the zero-initialised conv still gets a gradient


def test_res_blocks_add_depth_without_changing_the_plain_decoders_keys():
    plain, deep = ConvDecoder(32, 8, 8, 32), ConvDecoder(32, 8, 8, 32, res_blocks=2)
    assert deep(torch.randn(3, 8)).shape == (3, 3, 32, 32)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in plain.parameters())
    assert set(plain.state_dict()) == set(ConvDecoder(32, 8, 8, 32, res_blocks=0).state_dict())


@pytest.mark.parametrize("family", ["vae", "ae", "cvae"])
def test_the_conv_autoencoders_take_decoder_res_blocks_from_their_config(family):
    raw = tiny_config(family).to_dict()
    raw["model"]["decoder_res_blocks"] = 1
    model = build_model(from_dict(raw).model)
    assert any(isinstance(m, ResBlock) for m in model.decoder.modules())
    batch = {"image": torch.rand(2, 3, 32, 32) * 2 - 1, "attrs": torch.randint(0, 2, (2, 40)).float()}
    model(batch).loss.backward()
    raw["model"]["decoder_res_blocks"] = -1
    with pytest.raises(ConfigError, match="model.decoder_res_blocks: must be >= 0"):
        from_dict(raw)
